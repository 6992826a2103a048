//! BIRD 2 as the upstream router in tests and benchmarks: a daemon in a
//! namespace with its own config, control socket and log under
//! /tmp/furrow-lab, killed (even if the test process dies) and removed on
//! drop.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{janitor, names, Netns};

/// Upper bound for BIRD coming up.
const T: Duration = Duration::from_secs(15);

/// Polls `f` every 10 ms until it holds; returns how long that took.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if f() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A veth pair between two namespaces, with addresses (IPv6 ones without
/// duplicate address detection, so they are usable at once).
pub fn link(a: &Netns, a_if: &str, a_addrs: &[&str], b: &Netns, b_if: &str, b_addrs: &[&str]) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])
    .unwrap();
    for (ns, ifname, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        for addr in addrs {
            let mut args = vec!["addr", "add", addr, "dev", ifname];
            if addr.contains(':') {
                args.push("nodad");
            }
            ns.ip(&args).unwrap();
        }
        ns.ip(&["link", "set", ifname, "up"]).unwrap();
    }
}

/// A BIRD 2 daemon in a namespace, killed and cleaned up on drop.
pub struct Bird {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Bird {
    pub fn start(ns: &Netns, conf: &str) -> Bird {
        let bin = ["/usr/sbin/bird", "/usr/bin/bird"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("BIRD 2 is not installed (bash scripts/deps.sh installs bird2)");
        let dir = PathBuf::from(janitor::STATE_ROOT).join(names::unique("bird"));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("bird.ctl");
        let conf_path = dir.join("bird.conf");
        std::fs::write(
            &conf_path,
            conf.replace("@DIR@", &dir.display().to_string()),
        )
        .unwrap();
        let out = File::create(dir.join("stderr")).unwrap();
        let mut cmd = ns.cmd(bin);
        cmd.args(["-f", "-c"])
            .arg(&conf_path)
            .arg("-s")
            .arg(&sock)
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // SAFETY: prctl is async-signal-safe; it makes BIRD die with this
        // test even if the test process is killed before Drop runs.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning bird");
        let bird = Bird { child, dir, sock };
        wait_until("BIRD's control socket", T, || {
            bird.sock.exists() && bird.birdc(&["show", "status"]).contains("Daemon is up")
        });
        bird
    }

    /// `birdc -s <sock> <args>`, its output ("" if it failed).
    pub fn birdc(&self, args: &[&str]) -> String {
        Command::new("birdc")
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `show route <prefix> all`, None when BIRD has no route for it.
    pub fn route(&self, prefix: &str) -> Option<String> {
        let out = self.birdc(&["show", "route", prefix, "all"]);
        (out.contains(prefix) && !out.contains("Network not found")).then_some(out)
    }

    pub fn protocol(&self, name: &str) -> String {
        self.birdc(&["show", "protocols", "all", name])
    }

    pub fn established(&self, name: &str) -> bool {
        self.protocol(name)
            .contains("BGP state:          Established")
    }

    /// BIRD's log and protocol view, for failure messages.
    pub fn diag(&self) -> String {
        format!(
            "{}\n--- bird log ---\n{}",
            self.birdc(&["show", "protocols", "all"]),
            std::fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default()
        )
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// BIRD's config: one router, a device protocol, optionally the kernel
/// protocol (so it forwards what it learns), and `protocols`.
pub fn bird_conf(router_id: &str, kernel: bool, protocols: &str) -> String {
    let kernel = if kernel {
        "protocol kernel { ipv4 { export all; }; }\nprotocol kernel { ipv6 { export all; }; }\n"
    } else {
        ""
    };
    format!(
        "router id {router_id};\nlog \"@DIR@/bird.log\" all;\nprotocol device {{ scan time 1; }}\n{kernel}{protocols}"
    )
}

/// A BGP protocol towards one speaker: short timers, quick restarts
/// after errors, everything imported, nothing exported.
pub fn bird_peer(name: &str, local: &str, neighbor: &str, asns: (u32, u32), extra: &str) -> String {
    let (local_as, neighbor_as) = asns;
    format!(
        "protocol bgp {name} {{
  local {local} as {local_as};
  neighbor {neighbor} as {neighbor_as};
  hold time 3;
  keepalive time 1;
  connect delay time 1;
  error wait time 1, 2;
  {extra}
  ipv4 {{ import all; export none; }};
  ipv6 {{ import all; export none; }};
}}
"
    )
}
