//! Crafted frames sent from a lab namespace with scapy (Debian package
//! python3-scapy), for tests that forge what a well-behaved stack never
//! sends: other MACs and addresses, gratuitous ARP, router and neighbour
//! advertisements.

use anyhow::{ensure, Context};

use crate::Netns;

/// Debian's interpreter, which has python3-scapy (a `python3` earlier in
/// PATH, a pyenv shim say, may not).
pub const PYTHON: &str = "/usr/bin/python3";

/// Sends each frame (a scapy expression, e.g.
/// `Ether(src="02:00:00:00:00:01")/ARP(...)`) `count` times out of
/// `iface` in `ns`.
pub fn send(ns: &Netns, iface: &str, frames: &[String], count: u32) -> anyhow::Result<()> {
    let script = format!(
        "from scapy.all import *\nconf.verb = 0\nframes = [{}]\nfor f in frames:\n    sendp(f, iface={iface:?}, count={count}, inter=0.01)\n",
        frames.join(",\n    ")
    );
    let out = ns
        .cmd(PYTHON)
        .arg("-c")
        .arg(&script)
        .output()
        .context("running python3 with scapy (apt-get install python3-scapy)")?;
    ensure!(
        out.status.success(),
        "scapy failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The EUI-64 link-local address of a MAC (`aa:bb:cc:dd:ee:ff`), as the
/// kernel gives an interface by default.
pub fn eui64_link_local(mac: &str) -> String {
    let b: Vec<u8> = mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).expect("hex"))
        .collect();
    format!(
        "fe80::{:x}:{:x}:{:x}:{:x}",
        u16::from_be_bytes([b[0] ^ 2, b[1]]),
        u16::from_be_bytes([b[2], 0xff]),
        u16::from_be_bytes([0xfe, b[3]]),
        u16::from_be_bytes([b[4], b[5]])
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_local() {
        assert_eq!(
            super::eui64_link_local("52:54:00:12:34:56"),
            "fe80::5054:ff:fe12:3456"
        );
    }
}
