//! Packet captures in lab namespaces with tcpdump: what arrived on an
//! interface, with link-level headers (so VLAN tags are visible).

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::Netns;

pub struct Capture {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Capture {
    /// Starts `tcpdump -e -nn` on `iface` in `ns` with a pcap `filter`;
    /// `inbound_only` captures only frames the interface receives. Returns
    /// once tcpdump is listening.
    pub fn start(
        ns: &Netns,
        iface: &str,
        filter: &str,
        inbound_only: bool,
    ) -> anyhow::Result<Capture> {
        Capture::start_with(ns, iface, &[], filter, inbound_only)
    }

    /// As [`Capture::start`], with more tcpdump options before the filter
    /// (e.g. `-tt`: every line starts with the frame's Unix time, taken by
    /// the kernel as it arrived).
    pub fn start_with(
        ns: &Netns,
        iface: &str,
        options: &[&str],
        filter: &str,
        inbound_only: bool,
    ) -> anyhow::Result<Capture> {
        let mut cmd = ns.cmd("tcpdump");
        // -Z root: stay root (minimal systems have no tcpdump user to drop to).
        cmd.args(["-i", iface, "-e", "-nn", "-l", "-U", "-Z", "root"]);
        cmd.args(options);
        if inbound_only {
            cmd.args(["-Q", "in"]);
        }
        if !filter.is_empty() {
            cmd.args(filter.split_whitespace());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (apt-get install tcpdump)")?;
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            // tcpdump prints notes (data link type, verbosity) before
            // "listening on"; anything else it says before exiting is why
            // it could not start.
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            let mut said = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if line.contains("listening on") {
                    let _ = ready_tx.send(Ok(()));
                } else {
                    said.push_str(&line);
                }
                line.clear();
            }
            let _ = ready_tx.send(Err(said));
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("tcpdump on {iface}: {e}"),
            Err(_) => bail!("tcpdump on {iface} did not start"),
        }
        Ok(Capture { child, lines: rx })
    }

    /// Stops the capture and returns every line it printed.
    pub fn stop(mut self) -> Vec<String> {
        // SIGINT makes tcpdump flush and exit.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
        let mut out = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            out.push(l);
        }
        out
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
