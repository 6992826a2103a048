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
pub use furrow_vip::neigh::arp_reply_for;
