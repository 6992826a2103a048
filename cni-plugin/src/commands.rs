//! The six commands: validate, build netd's request, call netd, shape the
//! answer.

use std::io::Read;

use furrow_api::client::{Client, ClientError};
use furrow_api::error::code;
use furrow_api::wire::{AddResponse, AttachmentRequest, GcRequest, GcResponse, ReadyResponse};
use serde::de::IgnoredAny;

use crate::args::{self, CniArgs};
use crate::config::{self, ConfigError, NetConf};
use crate::env::{self, Attachment, Command, Lookup};
use crate::output::{debug, Error};
use crate::result::{self, CniVersion};

/// A failed run: the error and the cniVersion to report it in.
#[derive(Debug)]
pub struct Failure {
    pub version: CniVersion,
    pub error: Error,
}

/// Runs one invocation; `Ok(Some(text))` is printed on stdout.
pub fn run(lookup: Lookup, stdin: &mut dyn Read) -> Result<Option<String>, Failure> {
    let fail = |version, error| Failure { version, error };
    let cmd = env::command(lookup).map_err(|e| fail(CniVersion::CURRENT, e.into()))?;
    debug!("{cmd}");
    if cmd == Command::Version {
        // Like libcni's skel, VERSION answers without reading stdin: it
        // only carries the runtime's version, which changes nothing here.
        return Ok(Some(result::version_info()));
    }
    let mut input = Vec::new();
    let read = stdin.read_to_end(&mut input);
    run_command(cmd, lookup, read.map(|_| input.as_slice())).map_err(|e| {
        // Report in the config's version when it has a supported one.
        let version = result::sniff_version(&input).unwrap_or(CniVersion::CURRENT);
        debug!("failed: {e}");
        fail(version, e)
    })
}

fn run_command(
    cmd: Command,
    lookup: Lookup,
    input: std::io::Result<&[u8]>,
) -> Result<Option<String>, Error> {
    let p = prepare(cmd, lookup, input)?;
    let client = Client::new(&p.socket);
    debug!(
        "network {:?}, netd at {}",
        p.network,
        client.path().display()
    );
    match p.request {
        Request::Add(req) => add(&client, req, p.version, p.prev_result).map(Some),
        Request::Del(req) => del(&client, req).map(|_| None),
        Request::Check(req) => check(&client, req).map(|_| None),
        Request::Gc(req) => gc(&client, req).map(|_| None),
        Request::Status => status(&client).map(|_| None),
    }
}

/// What one invocation asks of netd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Add(AttachmentRequest),
    Del(AttachmentRequest),
    Check(AttachmentRequest),
    Gc(GcRequest),
    Status,
}

/// An invocation parsed and validated, before netd is asked: everything
/// the plugin reads from the runtime (CNI_* environment, CNI_ARGS, the
/// config on stdin) ends up here or in an error with its CNI code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub version: CniVersion,
    pub network: String,
    /// netd's socket.
    pub socket: String,
    pub prev_result: Option<furrow_api::cni::CniResult>,
    pub request: Request,
}

/// Parses and validates one invocation of an attachment command, GC or
/// STATUS (not VERSION, which reads nothing) without contacting netd.
pub fn prepare(
    cmd: Command,
    lookup: Lookup,
    input: std::io::Result<&[u8]>,
) -> Result<Prepared, Error> {
    // Environment first: it is what the runtime controls most directly,
    // and its errors (code 4) do not depend on the config.
    let attachment = if cmd.has_attachment() {
        Some(env::attachment(cmd, lookup)?)
    } else {
        None
    };
    let input = input.map_err(Error::Stdin)?;
    let conf = config::parse(input, cmd)?;
    let socket = socket(&conf, lookup);
    let (version, network, prev_result) =
        (conf.version, conf.name.clone(), conf.prev_result.clone());
    let request = match (cmd, attachment) {
        (Command::Add, Some(att)) => {
            Request::Add(attachment_request(att, conf, cni_args(lookup, false)?))
        }
        (Command::Del, Some(att)) => {
            // DEL succeeds whenever it can reach netd: CNI_ARGS problems
            // are skipped.
            let cni_args = match cni_args(lookup, true) {
                Ok(a) => a,
                Err(e) => {
                    debug!("ignoring CNI_ARGS on DEL: {e}");
                    CniArgs::default()
                }
            };
            Request::Del(attachment_request(att, conf, cni_args))
        }
        (Command::Check, Some(att)) => {
            requires(Command::Check, &conf, CniVersion::CHECK)?;
            if conf.prev_result.is_none() {
                return Err(ConfigError::invalid(
                    "prevResult",
                    "missing: CHECK needs the result of the ADD it checks (the runtime passes it as prevResult)",
                )
                .into());
            }
            Request::Check(attachment_request(att, conf, cni_args(lookup, false)?))
        }
        (Command::Gc, _) => {
            requires(Command::Gc, &conf, CniVersion::GC_STATUS)?;
            Request::Gc(GcRequest {
                network_name: conf.name,
                valid_attachments: conf.valid_attachments,
            })
        }
        (Command::Status, _) => {
            requires(Command::Status, &conf, CniVersion::GC_STATUS)?;
            Request::Status
        }
        _ => unreachable!("VERSION is answered before, attachment commands have an attachment"),
    };
    Ok(Prepared {
        version,
        network,
        socket,
        prev_result,
        request,
    })
}

/// netd's socket: the config's `socket`, else FURROW_SOCKET, else the
/// default path.
fn socket(conf: &NetConf, lookup: Lookup) -> String {
    conf.socket
        .clone()
        .or_else(|| lookup("FURROW_SOCKET").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| furrow_api::DEFAULT_SOCKET.to_string())
}

fn requires(cmd: Command, conf: &NetConf, needs: CniVersion) -> Result<(), Error> {
    if conf.version < needs {
        return Err(Error::CommandVersion {
            command: cmd,
            version: conf.version,
            needs,
        });
    }
    Ok(())
}

/// Builds netd's request. The runtime's MAC/addresses come from the config
/// (runtimeConfig, args.cni) first, then CNI_ARGS.
pub fn attachment_request(att: Attachment, conf: NetConf, cni_args: CniArgs) -> AttachmentRequest {
    AttachmentRequest {
        container_id: att.container_id,
        ifname: att.ifname,
        netns: att.netns,
        network_name: conf.name,
        attachment: conf.attachment,
        pod: cni_args.pod,
        mac: conf.mac.or(cni_args.mac),
        ips: if conf.ips.is_empty() {
            cni_args.ips
        } else {
            conf.ips
        },
        prev_result: conf.prev_result,
    }
}

fn cni_args(lookup: Lookup, lenient: bool) -> Result<CniArgs, Error> {
    match env::cni_args(lookup)? {
        Some(raw) => Ok(args::parse(&raw, lenient)?),
        None => Ok(CniArgs::default()),
    }
}

fn add(
    client: &Client,
    req: AttachmentRequest,
    version: CniVersion,
    prev: Option<furrow_api::cni::CniResult>,
) -> Result<String, Error> {
    let resp: AddResponse = client.post("/v1/cni/add", &req).map_err(Error::Netd)?;
    let merged = result::merge(prev, resp.result)?;
    Ok(result::render(&merged, version))
}

/// DEL succeeds whenever it can reach netd: a bad prevResult is dropped
/// (config parsing is lenient for DEL), and "no such attachment" is
/// success, since DEL must be idempotent.
fn del(client: &Client, req: AttachmentRequest) -> Result<(), Error> {
    match client.post::<_, IgnoredAny>("/v1/cni/del", &req) {
        Ok(_) => Ok(()),
        Err(ClientError::Api(e)) if matches!(e.code, code::UNKNOWN_CONTAINER | code::NOT_FOUND) => {
            debug!(
                "netd does not know the attachment; nothing to delete: {}",
                e.msg
            );
            Ok(())
        }
        Err(e) => Err(Error::Netd(e)),
    }
}

fn check(client: &Client, req: AttachmentRequest) -> Result<(), Error> {
    client
        .post::<_, IgnoredAny>("/v1/cni/check", &req)
        .map_err(Error::Netd)?;
    Ok(())
}

fn gc(client: &Client, req: GcRequest) -> Result<(), Error> {
    let resp: GcResponse = client.post("/v1/cni/gc", &req).map_err(Error::Netd)?;
    for a in &resp.released {
        debug!("GC released {} {}", a.container_id, a.ifname);
    }
    if resp.errors.is_empty() {
        Ok(())
    } else {
        Err(Error::GcIncomplete {
            released: resp.released.len(),
            errors: resp.errors,
        })
    }
}

/// STATUS: any failure to get a "ready" answer means ADD cannot be served
/// (50), except netd's own "not ready" (51, or its error document if it
/// already carries 50/51).
fn status(client: &Client) -> Result<(), Error> {
    match client.get::<ReadyResponse>("/v1/cni/status") {
        Ok(r) if r.ready => Ok(()),
        Ok(r) => Err(Error::NotReady {
            reason: if r.reason.is_empty() {
                "no reason given".into()
            } else {
                r.reason
            },
        }),
        Err(ClientError::Api(e)) if e.code == code::LIMITED_CONNECTIVITY => Err(Error::NotReady { reason: e.msg }),
        Err(e @ ClientError::Unreachable { .. }) => Err(Error::Unavailable {
            msg: e.to_string(),
            details: "ADD cannot be served until netd runs; start netd (or check the config's \"socket\")".into(),
        }),
        Err(e) => {
            let api = e.to_api_error();
            Err(Error::Unavailable {
                msg: format!("netd cannot serve ADD: {}", api.msg),
                details: api.details,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use furrow_api::cni::AttachmentSpec;
    use std::collections::HashMap;
    use std::env::VarError;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<String, VarError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned().ok_or(VarError::NotPresent)
    }

    fn conf(json: &str, cmd: Command) -> NetConf {
        config::parse(json.as_bytes(), cmd).unwrap()
    }

    fn att() -> Attachment {
        Attachment {
            container_id: "c1".into(),
            netns: Some("/n".into()),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn request_prefers_config_over_cni_args() {
        let c = conf(
            r#"{"cniVersion":"1.0.0","name":"n","capabilities":{"mac":true},"runtimeConfig":{"mac":"52:54:00:00:00:01"}}"#,
            Command::Add,
        );
        let a = args::parse("MAC=52:54:00:00:00:02;IP=10.52.0.9;K8S_POD_NAME=p", false).unwrap();
        let r = attachment_request(att(), c, a);
        assert_eq!(r.mac.unwrap().to_string(), "52:54:00:00:00:01");
        assert_eq!(r.ips, ["10.52.0.9".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(r.pod.name.as_deref(), Some("p"));
        assert_eq!(r.network_name, "n");
        assert!(matches!(r.attachment, AttachmentSpec::Management(_)));
    }

    #[test]
    fn socket_precedence() {
        let with_socket = conf(
            r#"{"cniVersion":"1.0.0","name":"n","socket":"/a.sock"}"#,
            Command::Add,
        );
        let without = conf(r#"{"cniVersion":"1.0.0","name":"n"}"#, Command::Add);
        let l = lookup(&[("FURROW_SOCKET", "/b.sock")]);
        assert_eq!(socket(&with_socket, &l), "/a.sock");
        assert_eq!(socket(&without, &l), "/b.sock");
        assert_eq!(socket(&without, &lookup(&[])), furrow_api::DEFAULT_SOCKET);
    }

    #[test]
    fn version_never_reads_stdin() {
        struct Explode;
        impl Read for Explode {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                panic!("stdin read")
            }
        }
        let out = run(&lookup(&[("CNI_COMMAND", "VERSION")]), &mut Explode)
            .unwrap()
            .unwrap();
        assert!(out.contains("supportedVersions"));
    }

    #[test]
    fn env_errors_come_first_and_use_the_config_version() {
        let l = lookup(&[("CNI_COMMAND", "ADD")]);
        let f = run(
            &l,
            &mut &br#"{"cniVersion":"0.3.1","name":"n","bad":1}"#[..],
        )
        .unwrap_err();
        assert_eq!(f.version, CniVersion::V0_3_1);
        assert_eq!(f.error.to_api_error().code, 4);
    }

    #[test]
    fn check_and_gc_need_new_enough_versions() {
        let base = [
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/n"),
            ("CNI_IFNAME", "eth0"),
            ("FURROW_SOCKET", "/nonexistent/furrow-unit.sock"),
        ];
        for (cmd, ver, code) in [
            ("CHECK", "0.3.1", 1),
            ("CHECK", "0.4.0", 7), // no prevResult
            ("GC", "1.0.0", 1),
            ("STATUS", "1.0.0", 1),
            ("STATUS", "1.1.0", 50), // netd unreachable
        ] {
            let mut vars = base.to_vec();
            vars.push(("CNI_COMMAND", cmd));
            let input =
                format!(r#"{{"cniVersion":"{ver}","name":"n","cni.dev/valid-attachments":[]}}"#);
            let f = run(&lookup(&vars), &mut input.as_bytes()).unwrap_err();
            assert_eq!(
                f.error.to_api_error().code,
                code,
                "{cmd} {ver}: {}",
                f.error
            );
        }
    }
}
