//! A stand-in for the Kubernetes API server's Lease endpoints
//! (tests/fixtures/lease_api.py: resourceVersions, 409 on a stale
//! replace, as the API server does), on a shared lab's control-plane
//! host, for netd's `--vip-election kubernetes`: no real API server can
//! run on this machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::netd::NetdProcess;
use crate::Lab;

/// The namespace netd is told to keep its Leases in.
pub const NAMESPACE: &str = "furrow-lab";
const API: &str = "198.18.0.250:6443";

pub struct LeaseServer {
    child: Child,
    state: PathBuf,
    pub kubeconfig: PathBuf,
}

impl LeaseServer {
    /// Starts the stand-in on `lab`'s control-plane host, its files in `dir`.
    pub fn start(lab: &Lab, dir: &Path) -> anyhow::Result<LeaseServer> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/lease_api.py");
        let state = dir.join("leases.json");
        let (host, port) = API.split_once(':').expect("host:port");
        let mut child = lab
            .control_plane
            .as_ref()
            .context("a shared lab has a control-plane host")?
            .cmd("python3")
            .arg(&script)
            .args([host, port])
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the Lease API stand-in")?;
        let end = Instant::now() + Duration::from_secs(10);
        while !state.exists() {
            if Instant::now() > end || child.try_wait()?.is_some() {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the Lease API stand-in did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1
kind: Config
clusters: [{{name: lab, cluster: {{server: \"http://{API}\"}}}}]
users: [{{name: netd, user: {{}}}}]
contexts: [{{name: lab, context: {{cluster: lab, user: netd, namespace: {NAMESPACE}}}}}]
current-context: lab
"
            ),
        )?;
        Ok(LeaseServer {
            child,
            state,
            kubeconfig,
        })
    }

    /// Makes `netd` elect its VIPs over this server's Leases.
    pub fn configure(&self, netd: &mut NetdProcess) {
        netd.extra_args.extend(
            [
                "--vip-election",
                "kubernetes",
                "--vip-lease-namespace",
                NAMESPACE,
            ]
            .map(String::from),
        );
        netd.extra_env
            .push(("KUBECONFIG".into(), self.kubeconfig.display().to_string()));
    }

    /// The Lease of VirtualIP `vip`, as the server holds it.
    pub fn lease(&self, vip: &str) -> Option<Value> {
        let all: Value = serde_json::from_str(&std::fs::read_to_string(&self.state).ok()?).ok()?;
        all.get(format!("{NAMESPACE}/furrow-vip-{vip}")).cloned()
    }

    /// Waits until `vip`'s Lease names `want` as holder (None: released or
    /// absent); returns the Lease (Null when absent).
    pub fn wait_holder(
        &self,
        vip: &str,
        want: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let end = Instant::now() + timeout;
        loop {
            let l = self.lease(vip);
            let holder = l
                .as_ref()
                .and_then(|l| l.pointer("/spec/holderIdentity"))
                .and_then(|h| h.as_str());
            if holder == want {
                return Ok(l.unwrap_or(Value::Null));
            }
            if Instant::now() > end {
                bail!("Lease of {vip}: holder {holder:?}, wanted {want:?}: {l:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LeaseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
