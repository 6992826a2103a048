//! An AF_PACKET socket bound to one interface, for DHCP frames, driven by
//! tokio (`AsyncFd`).
//!
//! A kernel filter passes only IPv4/UDP to the role's port (67 for a
//! server, 68 for a client), so a busy interface does not wake us for
//! every frame. PACKET_AUXDATA tells whether the UDP checksum is still
//! partial (offloaded by a sender on this host) and carries a VLAN tag the
//! kernel stripped from the frame.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::frame::{VlanTag, CLIENT_PORT, ETHERTYPE_VLAN, SERVER_PORT};

// From <linux/if_packet.h> and <linux/if_ether.h>; not all are in every
// libc release.
const ETH_P_ALL: u16 = 0x0003;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const PACKET_OUTGOING: u8 = 4;

#[repr(C)]
#[derive(Clone, Copy)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// Which end of DHCP this socket serves: the UDP destination port to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
    /// A server that also answers ARP for its address itself (netd's
    /// responders: the address is anycast, on no kernel interface), so ARP
    /// frames pass the filter too.
    ServerWithArp,
}

impl Role {
    fn port(self) -> u16 {
        match self {
            Role::Server | Role::ServerWithArp => SERVER_PORT,
            Role::Client => CLIENT_PORT,
        }
    }
}

const ETHERTYPE_ARP: u32 = 0x0806;

/// What came with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes stored in the buffer.
    pub len: usize,
    /// The frame was larger than the buffer (and is cut).
    pub truncated: bool,
    /// The UDP checksum is not filled in yet: don't verify it.
    pub checksum_partial: bool,
    /// A VLAN tag the kernel took off the frame (VLAN offload).
    pub vlan: Option<VlanTag>,
}

/// An AF_PACKET/SOCK_RAW socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to a live T of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Classic BPF: IPv4 (optionally one 802.1Q tag in the frame), UDP, not a
/// later fragment, destination `port`. Jump offsets count from the next
/// instruction; targets are noted per line.
fn filter(port: u16) -> Vec<libc::sock_filter> {
    const LDH: u16 = 0x28; // ld half [k]
    const LDB: u16 = 0x30; // ld byte [k]
    const LDXB_MSH: u16 = 0xb1; // ldx 4*([k]&0xf)
    const LDH_IND: u16 = 0x48; // ld half [x+k]
    const JEQ: u16 = 0x15;
    const JSET: u16 = 0x45;
    const RET: u16 = 0x06;
    let p = u32::from(port);
    vec![
        /* 0 */ op(LDH, 0, 0, 12),
        /* 1 */ op(JEQ, 8, 0, u32::from(ETHERTYPE_VLAN)), // -> 10
        /* 2 */ op(JEQ, 0, 16, 0x0800), // -> 19 drop
        /* 3 */ op(LDB, 0, 0, 23),
        /* 4 */ op(JEQ, 0, 14, 17), // -> 19
        /* 5 */ op(LDH, 0, 0, 20),
        /* 6 */ op(JSET, 12, 0, 0x1fff), // -> 19
        /* 7 */ op(LDXB_MSH, 0, 0, 14),
        /* 8 */ op(LDH_IND, 0, 0, 16),
        /* 9 */ op(JEQ, 10, 9, p), // -> 20 accept / 19 drop
        /* 10 */ op(LDH, 0, 0, 16),
        /* 11 */ op(JEQ, 0, 7, 0x0800), // -> 19
        /* 12 */ op(LDB, 0, 0, 27),
        /* 13 */ op(JEQ, 0, 5, 17), // -> 19
        /* 14 */ op(LDH, 0, 0, 24),
        /* 15 */ op(JSET, 3, 0, 0x1fff), // -> 19
        /* 16 */ op(LDXB_MSH, 0, 0, 18),
        /* 17 */ op(LDH_IND, 0, 0, 20),
        /* 18 */ op(JEQ, 1, 0, p), // -> 20 accept / 19 drop
        /* 19 */ op(RET, 0, 0, 0),
        /* 20 */ op(RET, 0, 0, 0x0004_0000),
    ]
}

/// Prefixes `prog` with "ARP frames pass": the jump lands on its last
/// instruction, the accept.
fn with_arp(prog: Vec<libc::sock_filter>) -> Vec<libc::sock_filter> {
    let to_accept = (prog.len() - 1) as u8;
    let mut out = vec![op(0x28, 0, 0, 12), op(0x15, to_accept, 0, ETHERTYPE_ARP)];
    out.extend(prog);
    out
}

impl PacketSocket {
    /// Opens a socket on interface `ifindex` for `role`. Must be called in a
    /// tokio runtime. The socket stays in the network namespace of the
    /// calling thread, wherever it is used later.
    pub fn open(ifindex: u32, role: Role) -> io::Result<Self> {
        // Protocol 0: receive nothing until the filter is on and bind()
        // names the protocol, so no unfiltered frame sneaks in.
        // SAFETY: plain socket(2).
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut prog = filter(role.port());
        if role == Role::ServerWithArp {
            prog = with_arp(prog);
        }
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
        setsockopt(raw, libc::SOL_PACKET, PACKET_AUXDATA, &1 as &libc::c_int)?;
        // Our own transmissions (and other local senders') are not input.
        // Older kernels lack it; the xid/op checks cover that case.
        let _ = setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            &1 as &libc::c_int,
        );
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        cvt(unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        // SAFETY: the OwnedFd moves into the AsyncFd, which owns it (and so
        // its closing) from here on.
        let fd = unsafe {
            AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE)
        }?;
        Ok(PacketSocket { fd, ifindex })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Receives the next frame into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_once(fd.as_raw_fd(), buf)) {
                Ok(Ok(Some(r))) => return Ok(r),
                // An outgoing frame slipped through: read the next one.
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives a frame already queued, without waiting: `None` when the
    /// queue is empty. Lets a server drain a burst and answer it at once.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        loop {
            match recv_once(self.fd.get_ref().as_raw_fd(), buf) {
                Ok(Some(r)) => return Ok(Some(r)),
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends one complete Ethernet frame.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| {
                // SAFETY: `frame` is a valid buffer of the length passed.
                let n =
                    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) if n == frame.len() => return Ok(()),
                Ok(Ok(n)) => {
                    return Err(io::Error::other(format!(
                        "short send: {n} of {} bytes",
                        frame.len()
                    )))
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv_once(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: zeroed sockaddr_ll/msghdr are valid; pointers set below
    // outlive the call.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>() as _;
    // MSG_TRUNC: return the real frame length so a cut frame is noticed.
    // SAFETY: `msg` is fully initialised and its buffers are live.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_TRUNC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if sll.sll_pkttype == PACKET_OUTGOING {
        return Ok(None);
    }
    let n = n as usize;
    let mut out = Received {
        len: n.min(buf.len()),
        truncated: n > buf.len(),
        checksum_partial: false,
        vlan: None,
    };
    // SAFETY: walking the control buffer the kernel filled, with libc's
    // CMSG macros and bounds.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::SOL_PACKET
                && h.cmsg_type == PACKET_AUXDATA
                && h.cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<TpacketAuxdata>() as u32) as usize
            {
                let aux: TpacketAuxdata = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                out.checksum_partial = aux.tp_status & TP_STATUS_CSUMNOTREADY != 0;
                if aux.tp_status & TP_STATUS_VLAN_VALID != 0 {
                    let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        ETHERTYPE_VLAN
                    };
                    out.vlan = Some(VlanTag {
                        tpid,
                        tci: aux.tp_vlan_tci,
                    });
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the classic BPF program on `pkt` (enough of an interpreter
    /// for the opcodes `filter` uses).
    fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let half = |i: usize| {
            pkt.get(i..i + 2)
                .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                0x28 => match half(i.k as usize) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x30 => match pkt.get(i.k as usize) {
                    Some(v) => a = u32::from(*v),
                    None => return 0,
                },
                0xb1 => match pkt.get(i.k as usize) {
                    Some(v) => x = u32::from(v & 0xf) * 4,
                    None => return 0,
                },
                0x48 => match half((x + i.k) as usize) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x15 => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                0x45 => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                0x06 => return i.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn frame(vlan: bool, dport: u16, proto: u8, frag: u16) -> Vec<u8> {
        let mut f = vec![0xff; 12];
        if vlan {
            f.extend([0x81, 0, 0, 100]);
        }
        f.extend([0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 28, 0, 0];
        ip.extend(frag.to_be_bytes());
        ip.extend([64, proto, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255]);
        f.extend(ip);
        f.extend(68u16.to_be_bytes());
        f.extend(dport.to_be_bytes());
        f.extend([0, 8, 0, 0]);
        f
    }

    #[test]
    fn the_kernel_filter_passes_only_dhcp_to_our_port() {
        let prog = filter(67);
        for vlan in [false, true] {
            assert_ne!(run(&prog, &frame(vlan, 67, 17, 0)), 0, "vlan {vlan}");
            assert_eq!(run(&prog, &frame(vlan, 68, 17, 0)), 0);
            assert_eq!(run(&prog, &frame(vlan, 67, 6, 0)), 0);
            assert_eq!(run(&prog, &frame(vlan, 67, 17, 0x0010)), 0);
            // The first fragment (offset 0, MF set) passes; the parser
            // refuses it with a typed error.
            assert_ne!(run(&prog, &frame(vlan, 67, 17, 0x2000)), 0);
        }
        let mut arp = frame(false, 67, 17, 0);
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(run(&prog, &arp), 0);
        assert_eq!(run(&prog, &arp[..10]), 0);
        assert_ne!(run(&filter(68), &frame(true, 68, 17, 0)), 0);
    }

    #[test]
    fn the_responder_filter_also_passes_arp_and_nothing_else_new() {
        let prog = with_arp(filter(67));
        let mut arp = frame(false, 67, 17, 0);
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_ne!(run(&prog, &arp), 0);
        for vlan in [false, true] {
            assert_ne!(run(&prog, &frame(vlan, 67, 17, 0)), 0);
            assert_eq!(run(&prog, &frame(vlan, 68, 17, 0)), 0);
            assert_eq!(run(&prog, &frame(vlan, 67, 6, 0)), 0);
        }
        let mut ipv6 = frame(false, 67, 17, 0);
        ipv6[12] = 0x86;
        ipv6[13] = 0xdd;
        assert_eq!(run(&prog, &ipv6), 0);
    }
}
