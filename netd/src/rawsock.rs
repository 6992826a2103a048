//! Raw Ethernet frames on one interface (AF_PACKET), driven by tokio: the
//! VIP controller's gratuitous ARPs and neighbour advertisements go out
//! this way (frames the kernel would never send on its own).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

pub struct RawSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
}

impl RawSocket {
    /// A socket that only sends out of `ifindex` (protocol 0: the kernel
    /// queues nothing for it), in the calling thread's namespace.
    pub fn sender(ifindex: u32) -> io::Result<RawSocket> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and valid.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; zeroed is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: addr is valid for its size.
        let r = unsafe {
            libc::bind(
                owned.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `owned` is an open socket the AsyncFd takes ownership of;
        // it stays open and the same fd for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register(owned) }.map_err(|e| e.into_parts().1)?;
        Ok(RawSocket { fd, ifindex })
    }

    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame shorter than an Ethernet header",
            ));
        }
        loop {
            let mut guard = self.fd.writable().await?;
            // SAFETY: sockaddr_ll is plain data.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = self.ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: frame and addr are valid for the given lengths.
            let n = unsafe {
                libc::sendto(
                    guard.get_inner().as_raw_fd(),
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                    0,
                    &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                return Err(e);
            }
            return Ok(());
        }
    }
}

/// An ARP request for `ip`, answered by `mac`: returns the reply frame.
/// (The responder's node end has no address, so the kernel would not
/// answer; renewing DHCP clients ARP for the server before unicasting.)
pub fn arp_reply_for(frame: &[u8], ip: std::net::Ipv4Addr, mac: [u8; 6]) -> Option<Vec<u8>> {
    // Ethernet (14) + ARP for IPv4 over Ethernet (28).
    if frame.len() < 42 || frame[12..14] != [0x08, 0x06] {
        return None;
    }
    let arp = &frame[14..42];
    let request = arp[0..2] == [0, 1]
        && arp[2..4] == [0x08, 0x00]
        && arp[4] == 6
        && arp[5] == 4
        && arp[6..8] == [0, 1];
    if !request || arp[24..28] != ip.octets() {
        return None;
    }
    let (sha, spa) = (&arp[8..14], &arp[14..18]);
    let mut r = Vec::with_capacity(60);
    r.extend_from_slice(sha);
    r.extend_from_slice(&mac);
    r.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    r.extend_from_slice(&mac);
    r.extend_from_slice(&ip.octets());
    r.extend_from_slice(sha);
    r.extend_from_slice(spa);
    r.resize(60, 0);
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_arp_for_the_server_address_only() {
        let mut req = vec![0xff; 6];
        req.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        req.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        req.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        req.extend_from_slice(&[10, 0, 0, 5]);
        req.extend_from_slice(&[0; 6]);
        req.extend_from_slice(&[10, 0, 0, 2]);
        let mac = [2, 0xaa, 0, 0, 0, 2];
        let r = arp_reply_for(&req, "10.0.0.2".parse().unwrap(), mac).unwrap();
        assert_eq!(&r[0..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&r[6..12], &mac);
        assert_eq!(&r[20..22], &[0, 2], "op reply");
        assert_eq!(&r[28..32], &[10, 0, 0, 2]);
        assert_eq!(&r[38..42], &[10, 0, 0, 5]);
        assert!(arp_reply_for(&req, "10.0.0.3".parse().unwrap(), mac).is_none());
        assert!(arp_reply_for(&req[..30], "10.0.0.2".parse().unwrap(), mac).is_none());
    }
}
