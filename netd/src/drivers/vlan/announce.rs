//! Announcing a VM's MAC on the wire after it appears on this node.
//!
//! When a VM starts on another node with the same MAC (live migration,
//! or a restart elsewhere), switches — the fabric's and the other nodes'
//! eBPF switches — still send its frames to the old node until they see
//! the MAC again. QEMU answers this with a few RARP frames from the VM's
//! MAC after migration; netd sends the same on the VM's VLANs as soon as
//! the port exists, so the VM is reachable again within milliseconds
//! instead of after MAC aging, whatever the guest does.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use furrow_api::MacAddr;

const ETH_P_RARP: u16 = 0x8035;
const ETH_P_8021Q: u16 = 0x8100;

/// A RARP "request reverse" from `mac`, broadcast, tagged with `vid`
/// unless it is `None` (untagged).
pub fn rarp_frame(mac: MacAddr, vid: Option<u16>) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac.0);
    if let Some(v) = vid {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&(v & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ETH_P_RARP.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op 3 (request reverse)
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x03]);
    f.extend_from_slice(&mac.0); // sender hardware address
    f.extend_from_slice(&[0; 4]); // sender protocol address
    f.extend_from_slice(&mac.0); // target hardware address
    f.extend_from_slice(&[0; 4]); // target protocol address
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// Sends raw frames out of one interface (of the calling thread's netns).
pub fn send_frames(ifindex: u32, frames: &[Vec<u8>]) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    for f in frames {
        if f.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame shorter than an Ethernet header",
            ));
        }
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&f[..6]);
        // SAFETY: buffer and address are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                f.as_ptr() as *const libc::c_void,
                f.len(),
                0,
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarp_frames_are_well_formed() {
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let f = rarp_frame(mac, Some(100));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac.0);
        assert_eq!(&f[12..14], &[0x81, 0x00]);
        assert_eq!(&f[14..16], &[0x00, 100]);
        assert_eq!(&f[16..18], &[0x80, 0x35]);
        assert_eq!(f[25], 3, "op request-reverse");
        assert_eq!(&f[26..32], &mac.0);
        assert_eq!(f.len(), 60);
        let u = rarp_frame(mac, None);
        assert_eq!(&u[12..14], &[0x80, 0x35]);
        assert_eq!(u.len(), 60);
    }
}
