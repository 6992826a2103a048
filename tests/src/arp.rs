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
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let name = std::ffi::CString::new(ifname.clone())?;
        // SAFETY: plain libc calls on values we own; the fd is owned at once.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            bail!("no interface {ifname}");
        }
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if raw < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ARP.to_be();
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
        let end = Instant::now() + wait;
        let mut out: Vec<[u8; 6]> = Vec::new();
        let mut buf = [0u8; 1514];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let tv = libc::timeval {
                tv_sec: left.as_secs() as libc::time_t,
                tv_usec: left.subsec_micros().max(1) as libc::suseconds_t,
            };
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 42 {
                continue;
            }
            let f = &buf[..n as usize];
            let reply = f[20..22] == [0, 2] && f[28..32] == target.octets();
            if reply {
                let m: [u8; 6] = f[22..28].try_into().expect("6 bytes");
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        Ok(out)
    })?
}
