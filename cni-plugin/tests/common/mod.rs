//! Test harness: a fake netd on a unix socket and a runner that invokes
//! the built plugin exactly as a runtime does (environment + stdin).

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{json, Value};

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_furrow");

/// A private directory under the temp dir, named after the pid and a
/// counter so parallel tests and test runs never collide.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "furrow-cni-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Value,
}

type Responses = HashMap<String, (u16, Value)>;

/// A fake netd: records every request and answers canned responses with
/// the API version header. Without a canned response for a route it
/// answers like a healthy netd (ADD builds a result from the request).
pub struct FakeNetd {
    _dir: TempDir,
    pub socket: PathBuf,
    requests: Arc<Mutex<Vec<Recorded>>>,
    responses: Arc<Mutex<Responses>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeNetd {
    pub fn start() -> FakeNetd {
        let dir = TempDir::new();
        let socket = dir.0.join("netd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let responses = Arc::new(Mutex::new(Responses::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, responses, stop) = (requests.clone(), responses.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        serve(conn, &requests, &responses);
                    }
                }
            })
        };
        FakeNetd {
            _dir: dir,
            socket,
            requests,
            responses,
            stop,
            thread: Some(thread),
        }
    }

    pub fn socket_str(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    /// Answers `method route` (e.g. "POST /v1/cni/del") with this status
    /// and body from now on.
    pub fn respond(&self, route: &str, status: u16, body: Value) {
        self.responses
            .lock()
            .unwrap()
            .insert(route.to_string(), (status, body));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The only request received; fails if there were others.
    pub fn only_request(&self) -> Recorded {
        let r = self.requests();
        assert_eq!(
            r.len(),
            1,
            "expected exactly one request to netd, got {r:#?}"
        );
        r.into_iter().next().unwrap()
    }
}

impl Drop for FakeNetd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.socket); // wakes accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: UnixStream, requests: &Mutex<Vec<Recorded>>, responses: &Mutex<Responses>) {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).expect("plugin sent JSON")
    };
    requests.lock().unwrap().push(Recorded {
        method: method.clone(),
        path: path.clone(),
        body: body.clone(),
    });
    let canned = responses
        .lock()
        .unwrap()
        .get(&format!("{method} {path}"))
        .cloned();
    let (status, answer) = canned.unwrap_or_else(|| default_answer(&path, &body));
    let text = answer.to_string();
    let resp = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nx-furrow-api-version: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let mut conn = reader.into_inner();
    let _ = conn.write_all(resp.as_bytes());
}

/// What a healthy netd answers. ADD of a VLAN attachment (no IPAM) gets
/// a layer-2 result, everything else the management network's.
fn default_answer(path: &str, req: &Value) -> (u16, Value) {
    let ifname = req["ifname"].as_str().unwrap_or("eth0");
    let netns = req["netns"].as_str().unwrap_or("");
    match path {
        "/v1/cni/add" if req["attachment"]["kind"] == "vlan" => {
            (200, json!({"result": netd_l2_result(ifname, netns)}))
        }
        "/v1/cni/add" => (200, json!({"result": netd_result(ifname, netns)})),
        "/v1/cni/gc" => (200, json!({"released": []})),
        "/v1/cni/status" => (200, json!({"ready": true})),
        _ => (200, json!({})),
    }
}

/// netd's part of an ADD result: host veth, container interface, one
/// IPv4 and one IPv6 address, routes with 1.1-only fields, DNS.
pub fn netd_result(ifname: &str, netns: &str) -> Value {
    json!({
        "interfaces": [
            {"name": "fw0123456789", "mac": "aa:bb:cc:00:00:01", "mtu": 1450},
            {"name": ifname, "mac": "52:54:00:00:00:02", "mtu": 1450, "sandbox": netns}
        ],
        "ips": [
            {"address": "10.52.0.7/24", "gateway": "10.52.0.1", "interface": 1},
            {"address": "fd52::7/64", "gateway": "fd52::1", "interface": 1}
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.52.0.1", "mtu": 1450},
            {"dst": "::/0", "gw": "fd52::1"}
        ],
        "dns": {"nameservers": ["10.43.0.10"], "search": ["svc.cluster.local"]}
    })
}

/// netd's part of an ADD result for a VLAN attachment without IPAM: the
/// host veth and the container interface, no addresses, routes or DNS.
pub fn netd_l2_result(ifname: &str, netns: &str) -> Value {
    json!({
        "interfaces": [
            {"name": "fw0123456789", "mac": "aa:bb:cc:00:00:01", "mtu": 1500},
            {"name": ifname, "mac": "52:54:00:00:00:02", "mtu": 1500, "sandbox": netns}
        ]
    })
}

#[derive(Debug)]
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.status, 0, "plugin failed: {self:#?}");
        self
    }

    pub fn assert_silent_ok(&self) {
        self.assert_ok();
        assert_eq!(self.stdout, "", "expected no output: {self:#?}");
    }

    /// Checks the failure shape and code; returns the error document.
    pub fn assert_code(&self, code: u64) -> Value {
        assert_eq!(self.status, 1, "expected failure: {self:#?}");
        let v = self.json();
        assert_eq!(v["code"], code, "{self:#?}");
        for k in ["cniVersion", "msg", "details"] {
            assert!(v.get(k).is_some(), "error document lacks {k}: {v}");
        }
        assert!(self.stderr.is_empty(), "stderr must stay quiet: {self:#?}");
        v
    }

    pub fn msg(&self) -> String {
        self.json()["msg"].as_str().unwrap_or("").to_string()
    }
}

/// Runs the plugin with exactly these variables and this stdin.
pub fn run(vars: &[(&str, &str)], stdin: &str) -> Run {
    run_with(vars, Stdio::piped(), Some(stdin))
}

pub fn run_with(vars: &[(&str, &str)], stdin: Stdio, input: Option<&str>) -> Run {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut w) = child.stdin.take() {
        // The plugin may exit without reading (VERSION, env errors).
        let _ = w.write_all(input.unwrap_or("").as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    Run {
        status: out.status.code().expect("exited normally"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The variables of an attachment command.
pub fn attach_env(cmd: &str) -> Vec<(&str, &str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", "3f6940ab5ab43bc5"),
        ("CNI_NETNS", "/var/run/netns/cni-test"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

/// A config for the fake netd, with `extra` merged in (null removes).
pub fn conf(netd_socket: &str, version: &str, extra: Value) -> String {
    let mut c =
        json!({"cniVersion": version, "name": "mgmt-net", "type": "furrow", "socket": netd_socket});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c.to_string()
}

/// A socket path nobody listens on (its directory exists).
pub fn dead_socket(dir: &TempDir) -> String {
    dir.0.join("nobody.sock").to_str().unwrap().to_string()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
