//! A netd process running inside a node namespace, with its own instance
//! name, socket, state, config and bpffs directories.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use furrow_api::client::Client;
use furrow_api::wire::ReadyResponse;

use crate::janitor::{BPF_ROOT, STATE_ROOT};
use crate::{bins, names};

pub struct NetdProcess {
    pub instance: String,
    pub node_name: String,
    pub netns: PathBuf,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub bpf_dir: PathBuf,
    pub config_dir: PathBuf,
    pub log_path: PathBuf,
    /// Extra netd flags (e.g. the etcd store of a shared lab).
    pub extra_args: Vec<String>,
    /// Extra environment (e.g. KUBECONFIG).
    pub extra_env: Vec<(String, String)>,
    child: Option<Child>,
    keep: bool,
}

impl NetdProcess {
    /// Prepares an instance for a node namespace (does not start it).
    pub fn new(netns: &Path, node_name: &str) -> anyhow::Result<Self> {
        let instance = names::unique("nd");
        let dir = PathBuf::from(STATE_ROOT).join(&instance);
        let config_dir = dir.join("config");
        std::fs::create_dir_all(&config_dir)?;
        Ok(NetdProcess {
            socket: dir.join("netd.sock"),
            bpf_dir: PathBuf::from(BPF_ROOT).join(&instance),
            log_path: dir.join("netd.log"),
            config_dir,
            dir,
            instance,
            node_name: node_name.to_string(),
            netns: netns.to_path_buf(),
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            child: None,
            keep: false,
        })
    }

    /// Writes a resource file into the config directory (read at start
    /// and on SIGHUP).
    pub fn write_config(&self, file: &str, contents: &str) -> anyhow::Result<()> {
        std::fs::write(self.config_dir.join(file), contents)?;
        Ok(())
    }

    /// Starts netd and waits until it serves CNI requests.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready(Duration::from_secs(30))
    }

    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("netd {} is already running", self.instance);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(bins::netd())
            .args(["--instance", &self.instance])
            .args(["--node-name", &self.node_name])
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--bpf-dir")
            .arg(&self.bpf_dir)
            // Benchmarks lower it (FURROW_NETD_LOG=info): a debug line
            // per DHCP message is a cost of its own.
            .args([
                "--log-format".to_string(),
                "json".to_string(),
                "--log-level".to_string(),
                std::env::var("FURROW_NETD_LOG")
                    .unwrap_or_else(|_| "info,furrow_netd=debug".to_string()),
            ])
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning netd")?;
        self.child = Some(child);
        Ok(())
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket).with_timeout(Duration::from_secs(60))
    }

    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    self.child = None;
                    bail!(
                        "netd exited during start ({status}):\n{}",
                        self.log_tail(40)
                    );
                }
            }
            if let Ok(r) = self.client().get::<ReadyResponse>("/v1/cni/status") {
                if r.ready {
                    return Ok(());
                }
            }
            if start.elapsed() > timeout {
                bail!("netd not ready after {timeout:?}:\n{}", self.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self) -> anyhow::Result<bool> {
        let Some(mut c) = self.child.take() else {
            return Ok(true);
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s.success());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!("netd did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash, as far as netd can tell.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.start()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let l = self.log();
        let v: Vec<&str> = l.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs netctl against this netd.
    pub fn netctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new(bins::netctl())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()?)
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Opens the log for appending notes (the demo prints where it is).
    pub fn log_file(&self) -> anyhow::Result<File> {
        Ok(std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)?)
    }
}

impl Drop for NetdProcess {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "---- netd {} ({}) log tail ----\n{}\n----",
                self.instance,
                self.node_name,
                self.log_tail(60)
            );
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.bpf_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
