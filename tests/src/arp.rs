//! Who answers ARP for an address, seen from a namespace: one request out,
//! every reply collected for a while. Tells a VIP held by exactly one node
//! from one answered by two.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::Netns;

const ETH_P_ARP: u16 = 0x0806;

/// The MAC of `ifname` in `ns`.
pub fn link_mac(ns: &Netns, ifname: &str) -> anyhow::Result<[u8; 6]> {
    let link: serde_json::Value =
        serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", ifname])?)?;
    let v: Vec<u8> = link[0]["address"]
        .as_str()
        .unwrap_or("")
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    match <[u8; 6]>::try_from(v) {
        Ok(m) => Ok(m),
        Err(_) => bail!("no MAC for {ifname} in {}", ns.name),
    }
}

/// Sends one ARP request for `target` out of `ifname` in `ns` (from
/// `sender_ip`) and returns the distinct MACs that answered within `wait`.
pub fn responders(
    ns: &Netns,
    ifname: &str,
    sender_ip: Ipv4Addr,
    target: Ipv4Addr,
    wait: Duration,
) -> anyhow::Result<Vec<[u8; 6]>> {
    let mac = link_mac(ns, ifname)?;
    let ifname = ifname.to_string();
    ns.enter(move || -> anyhow::Result<Vec<[u8; 6]>> {
        use std::os::fd::AsRawFd;
        let fd = packet_socket(&ifname, ETH_P_ARP)?;
        let mut req = vec![0xff; 6];
        req.extend_from_slice(&mac);
        req.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        req.extend_from_slice(&mac);
        req.extend_from_slice(&sender_ip.octets());
        req.extend_from_slice(&[0; 6]);
        req.extend_from_slice(&target.octets());
        req.resize(60, 0);
        if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
            bail!("send: {}", std::io::Error::last_os_error());
        }
        let mut out: Vec<[u8; 6]> = Vec::new();
        recv_frames(&fd, wait, |f| {
            if f.len() >= 42 && f[20..22] == [0, 2] && f[28..32] == target.octets() {
                let m: [u8; 6] = f[22..28].try_into().expect("6 bytes");
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        });
        Ok(out)
    })?
}

/// An ARP request for `target` sent every `every` from `ifname` in `ns`
/// (as `sender_ip`) until stopped or dropped: a client that keeps asking
/// who has an address, so a capture shows every moment it was answered.
pub struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<anyhow::Result<u64>>>,
}

impl Prober {
    pub fn start(
        ns: &Netns,
        ifname: &str,
        sender_ip: Ipv4Addr,
        target: Ipv4Addr,
        every: Duration,
    ) -> anyhow::Result<Prober> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let mac = link_mac(ns, ifname)?;
        let file = std::fs::File::open(ns.path())?;
        let ifname = ifname.to_string();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || -> anyhow::Result<u64> {
            use std::os::fd::AsRawFd;
            let opened = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(anyhow::Error::from)
                .and_then(|_| packet_socket(&ifname, ETH_P_ARP));
            let fd = match opened {
                Ok(fd) => {
                    let _ = ready_tx.send(Ok(()));
                    fd
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            let req = request_frame(mac, sender_ip, target);
            let mut sent = 0u64;
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: sending a buffer we own on a socket we own.
                if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } >= 0 {
                    sent += 1;
                }
                next += every;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            Ok(sent)
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Prober {
                stop,
                handle: Some(handle),
            }),
            Ok(Err(e)) => bail!("ARP prober: {e}"),
            Err(_) => bail!("ARP prober did not start"),
        }
    }

    /// Stops sending; returns how many requests went out.
    pub fn stop(mut self) -> anyhow::Result<u64> {
        self.finish()
    }

    fn finish(&mut self) -> anyhow::Result<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("ARP prober panicked"))?,
            None => Ok(0),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// A broadcast ARP request for `target` from `mac`/`sender_ip`.
fn request_frame(mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut req = vec![0xff; 6];
    req.extend_from_slice(&mac);
    req.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    req.extend_from_slice(&mac);
    req.extend_from_slice(&sender_ip.octets());
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&target.octets());
    req.resize(60, 0);
    req
}

/// Hands every frame `fd` receives within `wait` to `f`, except the ones
/// this host sent.
pub(crate) fn recv_frames(fd: &std::os::fd::OwnedFd, wait: Duration, mut f: impl FnMut(&[u8])) {
    use std::os::fd::AsRawFd;
    let end = Instant::now() + wait;
    let mut buf = [0u8; 1514];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let tv = libc::timeval {
            tv_sec: left.as_secs() as libc::time_t,
            tv_usec: left.subsec_micros().max(1) as libc::suseconds_t,
        };
        // SAFETY: plain libc calls on a socket and buffers we own.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n > 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
            f(&buf[..n as usize]);
        }
    }
}

/// An AF_PACKET socket for `protocol` bound to `ifname`, in the calling
/// thread's namespace.
pub(crate) fn packet_socket(ifname: &str, protocol: u16) -> anyhow::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: plain libc calls on values we own; the fd is owned at once.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface {ifname}");
    }
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol.to_be()),
        )
    };
    if raw < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = index as i32;
    if unsafe {
        libc::bind(
            raw,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    } < 0
    {
        bail!("bind: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}
