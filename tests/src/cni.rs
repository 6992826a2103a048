//! Runs the `furrow` plugin exactly as a runtime does: environment
//! variables plus the network configuration on stdin, result or error on
//! stdout.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::bins;

#[derive(Debug, Clone)]
pub struct CniOutcome {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CniOutcome {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }

    /// The CNI error code, if the call failed with a spec error document.
    pub fn error_code(&self) -> Option<u64> {
        if self.success() {
            return None;
        }
        self.json().get("code").and_then(|c| c.as_u64())
    }

    pub fn error_msg(&self) -> String {
        self.json()
            .get("msg")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_string()
    }

    /// Panics with everything the plugin said unless it succeeded.
    pub fn expect_ok(self, what: &str) -> Self {
        assert!(
            self.success(),
            "{what}: plugin failed with status {}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs the plugin with exactly these variables (nothing inherited but
/// PATH) and this stdin.
pub fn run(env: &[(&str, &str)], stdin: &[u8]) -> CniOutcome {
    let mut cmd = Command::new(bins::furrow());
    cmd.env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning furrow");
    {
        let mut si = child.stdin.take().expect("stdin");
        let _ = si.write_all(stdin);
    }
    let out = child.wait_with_output().expect("waiting for furrow");
    CniOutcome {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A management-network config as an operator would write it, pointing
/// at a lab netd's socket.
pub fn mgmt_config(socket: &Path, name: &str, cni_version: &str) -> Value {
    json!({
        "cniVersion": cni_version,
        "name": name,
        "type": "furrow",
        "socket": socket.display().to_string(),
    })
}

/// Who an attachment belongs to, as a runtime names it. An empty
/// `netns` leaves CNI_NETNS unset (allowed for DEL).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Option<String>,
}

impl Attachment {
    pub fn new(container_id: &str, netns: &str, ifname: &str) -> Self {
        Attachment {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: ifname.into(),
            args: None,
        }
    }
}

fn env_for<'a>(command: &'a str, a: &'a Attachment) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", a.container_id.as_str()),
        ("CNI_IFNAME", a.ifname.as_str()),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    if !a.netns.is_empty() {
        env.push(("CNI_NETNS", a.netns.as_str()));
    }
    if let Some(args) = &a.args {
        env.push(("CNI_ARGS", args.as_str()));
    }
    env
}

pub fn add(a: &Attachment, config: &Value) -> CniOutcome {
    run(&env_for("ADD", a), config.to_string().as_bytes())
}

pub fn del(a: &Attachment, config: &Value) -> CniOutcome {
    run(&env_for("DEL", a), config.to_string().as_bytes())
}

/// CHECK with the ADD result as prevResult.
pub fn check(a: &Attachment, config: &Value, prev_result: &Value) -> CniOutcome {
    let mut c = config.clone();
    c["prevResult"] = prev_result.clone();
    run(&env_for("CHECK", a), c.to_string().as_bytes())
}
