//! Reachability checks between lab namespaces.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::Netns;

/// One ICMP echo from `from` to `to` (1 s timeout).
pub fn ping(from: &Netns, to: IpAddr) -> bool {
    from.cmd("ping")
        .args(["-c", "1", "-W", "1", "-q", &to.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pings until one answer arrives or `attempts` are used up (the first
/// packet may wait for ARP).
pub fn ping_ok(from: &Netns, to: IpAddr, attempts: u32) -> bool {
    (0..attempts).any(|_| ping(from, to))
}

/// Sends a UDP datagram from `sender` to `dst` (an address of
/// `receiver`) and returns the source address the receiver saw: the way
/// to check NAT from the far side.
pub fn udp_source_seen(
    sender: &Netns,
    receiver: &Netns,
    dst: SocketAddr,
) -> anyhow::Result<IpAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    let bind = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), dst.port());
    let recv = {
        let file = std::fs::File::open(receiver.path())?;
        std::thread::spawn(move || -> anyhow::Result<IpAddr> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let s = UdpSocket::bind(bind)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            tx.send(()).ok();
            let mut buf = [0u8; 64];
            let (_, peer) = s.recv_from(&mut buf)?;
            Ok(peer.ip())
        })
    };
    rx.recv_timeout(Duration::from_secs(5))?;
    // A few datagrams: the first may be spent on ARP resolution.
    sender.enter(move || -> anyhow::Result<()> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..5 {
            s.send_to(b"furrow-probe", dst)?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })??;
    recv.join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?
}
