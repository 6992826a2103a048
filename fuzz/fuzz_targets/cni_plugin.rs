//! The CNI plugin's reading of an invocation: the CNI_* environment,
//! CNI_ARGS and the network config on stdin (`commands::prepare`, what
//! ADD/DEL/CHECK/GC/STATUS do before asking netd), and
//! `furrow --validate-config` on the same config.
//!
//! Input: `[ctl] CNI_CONTAINERID \0 CNI_NETNS \0 CNI_IFNAME \0 CNI_ARGS \0 stdin`.
//! ctl bits 0-2 pick the command (ADD, DEL, CHECK, GC, STATUS; 5-7 run
//! --validate-config only), bits 3-6 leave out CNI_CONTAINERID, CNI_NETNS,
//! CNI_IFNAME, CNI_ARGS, bit 7 sets FURROW_SOCKET.
//!
//! Invariants: nothing panics; whatever the plugin would send netd, netd's
//! own validation accepts (ADD/CHECK fully, DEL its identifiers) and it
//! survives the JSON round trip unchanged; every refusal is a CNI error
//! document with a code and a message; a result merged with the
//! prevResult renders in the config's version as JSON.

#![no_main]

use std::collections::HashMap;
use std::env::VarError;

use furrow_api::cni::CniResult;
use furrow_cni::commands::{prepare, Request};
use furrow_cni::env::Command;
use furrow_cni::{output, result, validate};
use libfuzzer_sys::fuzz_target;

fn round_trips<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_vec(v).expect("request serialises");
    let back: T = serde_json::from_slice(&json).expect("request decodes");
    assert_eq!(&back, v, "request changed on the wire");
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(5, |b| *b == 0);
    let mut field = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (cid, netns, ifname, args) = (field(), field(), field(), field());
    let stdin = parts.next().unwrap_or_default();

    let cmd = match ctl & 7 {
        0 => Command::Add,
        1 => Command::Del,
        2 => Command::Check,
        3 => Command::Gc,
        4 => Command::Status,
        _ => {
            match validate::run(stdin) {
                Ok(out) => {
                    let v: serde_json::Value = serde_json::from_str(&out).expect("summary is JSON");
                    assert_eq!(v["valid"], true);
                }
                Err(f) => {
                    let e = f.error.to_api_error();
                    assert!(e.code != 0 && !e.msg.is_empty(), "{e:?}");
                }
            }
            return;
        }
    };
    let mut env = HashMap::new();
    env.insert("CNI_COMMAND", cmd.as_str().to_string());
    for (bit, name, value) in [
        (3, "CNI_CONTAINERID", cid),
        (4, "CNI_NETNS", netns),
        (5, "CNI_IFNAME", ifname),
        (6, "CNI_ARGS", args),
    ] {
        if ctl & (1 << bit) == 0 {
            env.insert(name, value);
        }
    }
    if ctl & 0x80 != 0 {
        env.insert("FURROW_SOCKET", "/run/furrow/test.sock".into());
    }
    let lookup = |k: &str| env.get(k).cloned().ok_or(VarError::NotPresent);

    match prepare(cmd, &lookup, Ok(stdin)) {
        Ok(p) => {
            assert!(!p.socket.is_empty());
            match &p.request {
                Request::Add(r) | Request::Check(r) => {
                    if let Err(e) = r.validate() {
                        panic!("the plugin accepts what netd refuses: {e}\n{r:?}");
                    }
                    round_trips(r);
                }
                Request::Del(r) => {
                    if let Err(e) = r.validate_ids() {
                        panic!("the plugin sends a DEL netd refuses: {e}\n{r:?}");
                    }
                    round_trips(r);
                }
                Request::Gc(r) => {
                    if let Err(e) = r.validate() {
                        panic!("the plugin sends a GC netd refuses: {e}\n{r:?}");
                    }
                    round_trips(r);
                }
                Request::Status => {}
            }
            if let Request::Add(_) = p.request {
                // What ADD prints: netd's part merged into the prevResult.
                if let Ok(merged) = result::merge(p.prev_result.clone(), CniResult::default()) {
                    let out = result::render(&merged, p.version);
                    serde_json::from_str::<serde_json::Value>(&out)
                        .expect("the rendered result is JSON");
                }
            }
        }
        Err(e) => {
            let api = e.to_api_error();
            assert!(api.code != 0 && !api.msg.is_empty(), "{api:?}");
            let doc = output::error_json(result::CniVersion::CURRENT, &api);
            serde_json::from_str::<serde_json::Value>(&doc).expect("error document is JSON");
        }
    }
});
