//! Socket options tokio does not offer: the TCP MD5 signature key
//! (RFC 2385) and the CS6 traffic class routers expect for BGP.

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

use super::config::MAX_PASSWORD_LEN;

/// `struct tcp_md5sig` from linux/tcp.h: a 128-octet sockaddr_storage,
/// flags, prefix length, key length, ifindex, then the key.
const MD5SIG_LEN: usize = 128 + 1 + 1 + 2 + 4 + MAX_PASSWORD_LEN;
const KEYLEN_AT: usize = 130;
const KEY_AT: usize = 136;

/// Builds the `tcp_md5sig` for `peer` and `key` (exact address match, no
/// interface binding).
fn md5sig(peer: IpAddr, key: &[u8]) -> io::Result<[u8; MD5SIG_LEN]> {
    if key.is_empty() || key.len() > MAX_PASSWORD_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 key must be 1 to {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    let mut b = [0u8; MD5SIG_LEN];
    match peer {
        IpAddr::V4(a) => {
            // sockaddr_in: family, port, address.
            b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            // sockaddr_in6: family, port, flow info, address, scope.
            b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[8..24].copy_from_slice(&a.octets());
        }
    }
    b[KEYLEN_AT..KEYLEN_AT + 2].copy_from_slice(&(key.len() as u16).to_ne_bytes());
    b[KEY_AT..KEY_AT + key.len()].copy_from_slice(key);
    Ok(b)
}

fn setsockopt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &[u8]) -> io::Result<()> {
    // SAFETY: `value` is a live buffer of the length passed; the kernel
    // copies it and keeps no reference.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Signs every segment to and from `peer` on this (not yet connected)
/// socket with `key`.
pub fn set_md5_key(fd: RawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &md5sig(peer, key)?)
}

/// Marks the connection's packets CS6 (network control), as routers do
/// for BGP, so they survive congested uplinks. Best effort.
pub fn set_network_control(fd: RawFd, v6: bool) -> io::Result<()> {
    let cs6: libc::c_int = 0xc0;
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TOS)
    };
    setsockopt(fd, level, name, &cs6.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5sig_layout_matches_linux() {
        let b = md5sig("10.1.2.3".parse().unwrap(), b"secret").unwrap();
        assert_eq!(b.len(), 216);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), libc::AF_INET as u16);
        assert_eq!(&b[2..8], &[0, 0, 10, 1, 2, 3]);
        assert_eq!(u16::from_ne_bytes([b[130], b[131]]), 6);
        assert_eq!(&b[136..142], b"secret");
        assert!(b[142..].iter().all(|x| *x == 0));
        let b = md5sig("fd00::1".parse().unwrap(), b"k").unwrap();
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), libc::AF_INET6 as u16);
        assert_eq!(b[8], 0xfd);
        assert_eq!(b[23], 1);
        assert!(md5sig("fd00::1".parse().unwrap(), &[0; 81]).is_err());
        assert!(md5sig("fd00::1".parse().unwrap(), b"").is_err());
    }

    #[test]
    fn the_kernel_takes_the_key() {
        use std::os::fd::AsRawFd;
        // An unconnected socket; nothing is sent.
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_md5_key(s.as_raw_fd(), "127.0.0.2".parse().unwrap(), b"secret").unwrap();
        set_network_control(s.as_raw_fd(), false).unwrap();
    }
}
