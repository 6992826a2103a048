//! The MTU probe with DF set: from the node's own interface on a VLAN (a
//! VlanInterface's node end), a full-size ICMP echo that may not be
//! fragmented to each peer, and a small one to tell "the path's MTU is too
//! small" from "the peer does not answer". Raw ICMP socket bound to the
//! interface; no `ping` binary.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The full-size packet came back.
    FullSize,
    /// Only small packets came back: the path drops full-size frames.
    SmallOnly,
    /// Nothing came back.
    NoAnswer,
    /// The probe could not be sent (message says why).
    Failed(String),
}

/// Pings `peer` from `ifname` with DF: first `mtu`-sized IP packets, then
/// small ones if those get no answer.
pub fn probe(ifname: &str, peer: Ipv4Addr, mtu: u32) -> Outcome {
    let sock = match open(ifname) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("raw ICMP socket on {ifname}: {e}")),
    };
    let id = (std::process::id() & 0xffff) as u16;
    let full = (mtu as usize).saturating_sub(28);
    for seq in 0..3u16 {
        match echo(&sock, peer, id, seq, full, Duration::from_millis(700)) {
            Ok(true) => return Outcome::FullSize,
            Ok(false) => {}
            Err(e) => {
                return Outcome::Failed(format!("sending {mtu} bytes with DF to {peer}: {e}"))
            }
        }
    }
    for seq in 100..103u16 {
        if let Ok(true) = echo(&sock, peer, id, seq, 56, Duration::from_millis(700)) {
            return Outcome::SmallOnly;
        }
    }
    Outcome::NoAnswer
}

fn open(ifname: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = ifname.as_bytes();
    // SAFETY: the option values point to live buffers of the given length.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr() as *const libc::c_void,
            name.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let df: libc::c_int = libc::IP_PMTUDISC_PROBE;
    // SAFETY: as above.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            &df as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One echo request with `payload` bytes; true if its reply arrived.
fn echo(
    sock: &OwnedFd,
    peer: Ipv4Addr,
    id: u16,
    seq: u16,
    payload: usize,
    wait: Duration,
) -> std::io::Result<bool> {
    let mut pkt = vec![0u8; 8 + payload];
    pkt[0] = 8; // echo request
    pkt[4..6].copy_from_slice(&id.to_be_bytes());
    pkt[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in pkt[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let c = checksum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(peer.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: pkt and addr are live for the call.
    let r = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            pkt.as_ptr() as *const libc::c_void,
            pkt.len(),
            0,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
        if n <= 0 {
            continue;
        }
        // SAFETY: buf is live and large enough.
        let len = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if len <= 0 {
            continue;
        }
        let got = &buf[..len as usize];
        if got.len() < 20 {
            continue;
        }
        let ihl = usize::from(got[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(got[12], got[13], got[14], got[15]);
        let icmp = match got.get(ihl..) {
            Some(i) if i.len() >= 8 => i,
            _ => continue,
        };
        if src == peer
            && icmp[0] == 0
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Ok(true);
        }
    }
}
