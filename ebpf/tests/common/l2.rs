//! L2 test helpers: 802.1Q frames, ARP, and AF_PACKET sockets that see
//! VLAN tags (PACKET_AUXDATA), to send and observe raw frames inside a
//! namespace.

use std::{
    io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use super::{eth_header, NetNs, ETH_P_ARP};

pub const BCAST: [u8; 6] = [0xff; 6];
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

/// Inserts a tag (TPID, TCI) after the MAC addresses.
pub fn with_tag(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&tci.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// A frame with ethertype 0x88b5 (local experimental) and `len` payload
/// bytes: nothing in a netns reacts to it.
pub fn raw_frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = eth_header(dst, src, 0x88b5);
    f.extend((0..len).map(|i| i as u8));
    f
}

/// An ARP packet (request op 1 / reply op 2).
pub fn arp(
    dst: [u8; 6],
    src: [u8; 6],
    op: u16,
    sender_ip: [u8; 4],
    target_mac: [u8; 6],
    target_ip: [u8; 4],
) -> Vec<u8> {
    let mut f = eth_header(dst, src, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&target_mac);
    f.extend_from_slice(&target_ip);
    f.resize(60, 0);
    f
}

/// A gratuitous ARP request (sender = target = `ip`), broadcast, as QEMU
/// sends after a migration.
pub fn garp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    arp(BCAST, mac, 1, ip, [0; 6], ip)
}

/// A frame as an AF_PACKET socket saw it, with the VLAN tag the kernel
/// held in metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub frame: Vec<u8>,
    /// The TCI if the frame carried a tag (metadata or in the data).
    pub tci: Option<u16>,
    /// Whether the socket saw it leave (PACKET_OUTGOING).
    pub outgoing: bool,
}

impl Seen {
    pub fn vid(&self) -> Option<u16> {
        self.tci.map(|t| t & 0x0fff)
    }
    pub fn src(&self) -> [u8; 6] {
        self.frame[6..12].try_into().unwrap()
    }
    pub fn dst(&self) -> [u8; 6] {
        self.frame[..6].try_into().unwrap()
    }
    /// Ethertype after any tag in the data.
    pub fn ethertype(&self) -> u16 {
        let mut off = 12;
        loop {
            let t = u16::from_be_bytes([self.frame[off], self.frame[off + 1]]);
            if t == TPID_8021Q || t == TPID_8021AD {
                off += 4;
                continue;
            }
            return t;
        }
    }
}

/// An AF_PACKET socket bound to one interface of a namespace.
pub struct RawSock {
    fd: OwnedFd,
    ifindex: u32,
}

const PACKET_AUXDATA: libc::c_int = 8;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const PACKET_OUTGOING: u8 = 4;

#[repr(C)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

impl RawSock {
    /// Opens the socket inside `ns` on `ifname` (the fd works from any
    /// thread afterwards).
    pub fn open(ns: &NetNs, ifname: &str) -> Self {
        let ifindex = ns.ifindex(ifname);
        let fd = ns.run(move || {
            // SAFETY: plain socket(2); the fd is owned right away.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    (libc::ETH_P_ALL as u16).to_be() as i32,
                )
            };
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            // SAFETY: fd was just created and is not owned elsewhere.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        let one: libc::c_int = 1;
        // SAFETY: valid fd, option value is an int.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_AUXDATA,
                &one as *const _ as *const libc::c_void,
                mem::size_of_val(&one) as u32,
            )
        };
        assert_eq!(r, 0, "PACKET_AUXDATA: {}", io::Error::last_os_error());
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the given length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                mem::size_of_val(&sll) as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", io::Error::last_os_error());
        let s = RawSock { fd, ifindex };
        s.drain();
        s
    }

    /// Sends `frame` as is (a tag in it stays in the data).
    pub fn send(&self, frame: &[u8]) {
        let r = self.try_send(frame);
        assert_eq!(r.as_ref().ok(), Some(&frame.len()), "sendto: {r:?}");
    }

    /// Like [`RawSock::send`], returning the error: a frame a tc filter
    /// drops on the way out fails with ENOBUFS.
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: zeroed sockaddr_ll is valid.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and sll are valid for the given lengths.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                mem::size_of_val(&sll) as u32,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// Discards everything queued so far.
    pub fn drain(&self) {
        while self.recv_one(Duration::ZERO).is_some() {}
    }

    /// Incoming frames (not our own sends) received within `window`.
    pub fn collect(&self, window: Duration) -> Vec<Seen> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv_one(left) {
                Some(s) if !s.outgoing => out.push(s),
                Some(_) => {}
                None if left.is_zero() => return out,
                None => {}
            }
        }
    }

    /// Waits up to `timeout` for an incoming frame matching `pred`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Seen) -> bool) -> Option<Seen> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv_one(left) {
                Some(s) if !s.outgoing && pred(&s) => return Some(s),
                Some(_) => {}
                None if left.is_zero() => return None,
                None => {}
            }
        }
    }

    fn recv_one(&self, timeout: Duration) -> Option<Seen> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(60_000) as i32) };
        if n <= 0 {
            return None;
        }
        let mut buf = vec![0u8; 65536];
        let mut ctrl = [0u64; 64];
        // SAFETY: zeroed sockaddr_ll / msghdr are valid, pointers set below.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = &mut sll as *mut _ as *mut libc::c_void;
        msg.msg_namelen = mem::size_of_val(&sll) as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = mem::size_of_val(&ctrl);
        // SAFETY: msg points at live buffers.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return None;
        }
        buf.truncate(n as usize);
        let mut tci = None;
        // SAFETY: walking the control messages the kernel wrote into ctrl.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                    let aux = &*(libc::CMSG_DATA(c) as *const TpacketAuxdata);
                    if aux.tp_status & TP_STATUS_VLAN_VALID != 0 {
                        tci = Some(aux.tp_vlan_tci);
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if tci.is_none() && buf.len() >= 16 && u16::from_be_bytes([buf[12], buf[13]]) == TPID_8021Q
        {
            tci = Some(u16::from_be_bytes([buf[14], buf[15]]));
        }
        Some(Seen {
            frame: buf,
            tci,
            outgoing: sll.sll_pkttype == PACKET_OUTGOING,
        })
    }
}

pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;
/// iphdr.frag_off: more fragments.
pub const IP_MF: u16 = 0x2000;

/// An Ethernet + IPv4 + UDP frame, for the DHCP rules: any ports, IP
/// options (a multiple of 4 bytes), the raw `frag_off` field (flags and
/// offset in 8-byte units), valid header checksum, no UDP checksum.
#[derive(Clone, Debug)]
pub struct Udp4 {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub options: Vec<u8>,
    pub frag_off: u16,
    pub payload: Vec<u8>,
}

impl Udp4 {
    /// A BOOTP message body: op (1 request, 2 reply), the client MAC, the
    /// magic cookie and a message-type option, padded to 300 bytes.
    pub fn bootp(op: u8, chaddr: [u8; 6], msg_type: u8) -> Vec<u8> {
        let mut b = vec![0u8; 236];
        b[0] = op;
        b[1] = 1; // Ethernet
        b[2] = 6;
        b[4..8].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
        b[28..34].copy_from_slice(&chaddr);
        b.extend_from_slice(&[99, 130, 83, 99, 53, 1, msg_type, 255]);
        b.resize(300, 0);
        b
    }

    /// A broadcast DHCPDISCOVER from `client`.
    pub fn discover(client: [u8; 6]) -> Self {
        Udp4 {
            dst_mac: BCAST,
            src_mac: client,
            src: [0; 4],
            dst: [255; 4],
            sport: DHCP_CLIENT_PORT,
            dport: DHCP_SERVER_PORT,
            options: Vec::new(),
            frag_off: 0,
            payload: Self::bootp(1, client, 1),
        }
    }

    /// A DHCPOFFER from `server` (MAC, IP) to `client`, unicast.
    pub fn offer(server: [u8; 6], server_ip: [u8; 4], client: [u8; 6]) -> Self {
        Udp4 {
            dst_mac: client,
            src_mac: server,
            src: server_ip,
            dst: [10, 50, 0, 150],
            sport: DHCP_SERVER_PORT,
            dport: DHCP_CLIENT_PORT,
            options: Vec::new(),
            frag_off: 0,
            payload: Self::bootp(2, client, 2),
        }
    }

    pub fn frame(&self) -> Vec<u8> {
        assert_eq!(self.options.len() % 4, 0);
        let ihl = 5 + self.options.len() / 4;
        assert!(ihl <= 15);
        let udp_len = 8 + self.payload.len();
        let tot_len = ihl * 4 + udp_len;
        let mut ip = vec![0x40 | ihl as u8, 0];
        ip.extend_from_slice(&(tot_len as u16).to_be_bytes());
        ip.extend_from_slice(&[0xab, 0xcd]);
        ip.extend_from_slice(&self.frag_off.to_be_bytes());
        ip.extend_from_slice(&[64, 17, 0, 0]);
        ip.extend_from_slice(&self.src);
        ip.extend_from_slice(&self.dst);
        ip.extend_from_slice(&self.options);
        let csum = super::inet_checksum(&ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        let mut f = eth_header(self.dst_mac, self.src_mac, super::ETH_P_IP);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.payload);
        f
    }
}
