//! Network namespaces owned by a guard.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{bail, Context};

#[derive(Debug)]
pub struct Netns {
    pub name: String,
    keep: bool,
}

pub fn sh(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(out)
}

impl Netns {
    /// Creates /run/netns/<name> with its loopback up.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        sh(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_string(),
            keep: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on a namespace someone else owns (not removed on drop).
    pub fn open_existing(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            keep: true,
        }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub fn path_str(&self) -> String {
        self.path().display().to_string()
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = sh(Command::new("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that runs inside this namespace (nsenter, not `ip netns
    /// exec`, which remounts /sys and hides bpffs).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = sh(self.cmd(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn enter<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let file = File::open(self.path())?;
        let h = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        });
        h.join()
            .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))
    }

    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.run("sysctl", &["-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Leaves the namespace in place when the guard drops (the demo).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    pub fn exists(name: &str) -> bool {
        PathBuf::from("/run/netns").join(name).exists()
    }

    pub fn delete(name: &str) {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            Netns::delete(&self.name);
        }
    }
}
