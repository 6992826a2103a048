//! Minimal nfnetlink plumbing for nf_tables: a socket, a message/attribute
//! writer, an attribute reader and the batch/request exchanges.
//!
//! Written against the kernel uAPI (`linux/netfilter/nf_tables.h`,
//! `linux/netfilter/nfnetlink.h`) instead of going through libnftnl so that
//! we control every message flag (idempotent element add), can send a whole
//! batch in one `sendmsg` (the kernel only treats it as one transaction if
//! it arrives in one skb) and can attribute each error to the object whose
//! message caused it. No `unsafe` beyond the socket syscalls.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;

// --- netlink core (linux/netlink.h) ---
const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_MIN_TYPE: u16 = 16;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NETLINK_NETFILTER: i32 = 12;
const NETLINK_CAP_ACK: i32 = 10;
const NETLINK_EXT_ACK: i32 = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;

// --- nfnetlink ---
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = NLMSG_MIN_TYPE;
const NFNL_MSG_BATCH_END: u16 = NLMSG_MIN_TYPE + 1;
const NFNETLINK_V0: u8 = 0;
const NFGENMSG_LEN: usize = 4;
pub const NFPROTO_IPV4: u8 = 2;

/// `enum nf_tables_msg_types`.
pub mod msg {
    pub const NEWTABLE: u16 = 0;
    pub const DELTABLE: u16 = 2;
    pub const NEWCHAIN: u16 = 3;
    pub const NEWRULE: u16 = 6;
    pub const GETRULE: u16 = 7;
    pub const NEWSET: u16 = 9;
    pub const GETSET: u16 = 10;
    pub const NEWSETELEM: u16 = 12;
    pub const GETSETELEM: u16 = 13;
    pub const DELSETELEM: u16 = 14;
    /// Linux >= 6.3: like DEL, but an absent object is success.
    pub const DESTROYTABLE: u16 = 26;
    pub const DESTROYSETELEM: u16 = 30;
}

/// Attribute numbers from `linux/netfilter/nf_tables.h`.
pub mod attr {
    pub const LIST_ELEM: u16 = 1;

    pub const TABLE_NAME: u16 = 1;
    pub const TABLE_FLAGS: u16 = 2;

    pub const CHAIN_TABLE: u16 = 1;
    pub const CHAIN_NAME: u16 = 3;
    pub const CHAIN_HOOK: u16 = 4;
    pub const CHAIN_POLICY: u16 = 5;
    pub const CHAIN_TYPE: u16 = 7;
    pub const HOOK_HOOKNUM: u16 = 1;
    pub const HOOK_PRIORITY: u16 = 2;

    pub const RULE_TABLE: u16 = 1;
    pub const RULE_CHAIN: u16 = 2;
    pub const RULE_HANDLE: u16 = 3;
    pub const RULE_EXPRESSIONS: u16 = 4;
    pub const RULE_USERDATA: u16 = 7;

    pub const SET_TABLE: u16 = 1;
    pub const SET_NAME: u16 = 2;
    pub const SET_KEY_TYPE: u16 = 4;
    pub const SET_KEY_LEN: u16 = 5;
    pub const SET_ID: u16 = 10;

    pub const SET_ELEM_KEY: u16 = 1;
    pub const SET_ELEM_LIST_TABLE: u16 = 1;
    pub const SET_ELEM_LIST_SET: u16 = 2;
    pub const SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const SET_ELEM_LIST_SET_ID: u16 = 4;

    pub const DATA_VALUE: u16 = 1;

    pub const EXPR_NAME: u16 = 1;
    pub const EXPR_DATA: u16 = 2;

    pub const PAYLOAD_DREG: u16 = 1;
    pub const PAYLOAD_BASE: u16 = 2;
    pub const PAYLOAD_OFFSET: u16 = 3;
    pub const PAYLOAD_LEN: u16 = 4;

    pub const LOOKUP_SET: u16 = 1;
    pub const LOOKUP_SREG: u16 = 2;
    pub const LOOKUP_SET_ID: u16 = 4;
    pub const LOOKUP_FLAGS: u16 = 5;

    pub const BITWISE_SREG: u16 = 1;
    pub const BITWISE_DREG: u16 = 2;
    pub const BITWISE_LEN: u16 = 3;
    pub const BITWISE_MASK: u16 = 4;
    pub const BITWISE_XOR: u16 = 5;

    pub const CMP_SREG: u16 = 1;
    pub const CMP_OP: u16 = 2;
    pub const CMP_DATA: u16 = 3;

    pub const COUNTER_BYTES: u16 = 1;
    pub const COUNTER_PACKETS: u16 = 2;
}

/// Appends netlink messages and attributes to one contiguous buffer.
#[derive(Default)]
pub struct MsgWriter {
    buf: Vec<u8>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl MsgWriter {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    /// Starts a message: nlmsghdr + nfgenmsg. Returns its start offset for
    /// [`MsgWriter::end_msg`].
    pub fn begin_msg(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched later
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: kernel
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    pub fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        self.pad();
    }

    fn pad(&mut self) {
        let aligned = align4(self.buf.len());
        self.buf.resize(aligned, 0);
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = (NLA_HDRLEN + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// NUL-terminated string, as nf_tables expects for names.
    pub fn attr_str(&mut self, ty: u16, s: &str) {
        let len = (NLA_HDRLEN + s.len() + 1) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    pub fn attr_be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn nest_start(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub fn nest_end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// `NFTA_*` nest holding one `NFTA_DATA_VALUE`.
    pub fn attr_data_value(&mut self, ty: u16, value: &[u8]) {
        let n = self.nest_start(ty);
        self.attr(attr::DATA_VALUE, value);
        self.nest_end(n);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Iterates the attributes of a netlink attribute stream.
pub struct Attrs<'a> {
    rest: &'a [u8],
}

pub fn attrs(data: &[u8]) -> Attrs<'_> {
    Attrs { rest: data }
}

impl<'a> Iterator for Attrs<'a> {
    /// (type without flag bits, payload)
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([self.rest[0], self.rest[1]]) as usize;
        let ty = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.rest.len() {
            // Truncated stream: stop rather than read garbage.
            self.rest = &[];
            return None;
        }
        let payload = &self.rest[NLA_HDRLEN..len];
        self.rest = &self.rest[align4(len).min(self.rest.len())..];
        Some((ty, payload))
    }
}

pub fn be32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

pub fn be64(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(..8)?.try_into().ok()?))
}

pub fn cstr(p: &[u8]) -> &[u8] {
    p.split(|b| *b == 0).next().unwrap_or(p)
}

/// First attribute of `ty` in `data`.
pub fn find(data: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(data).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

/// The bytes of the `NFTA_DATA_VALUE` inside a data nest.
pub fn data_value(nest: &[u8]) -> Option<&[u8]> {
    find(nest, attr::DATA_VALUE)
}

/// A kernel error for one message, with the extended-ack text if any.
#[derive(Debug, Clone)]
pub struct NlError {
    pub errno: Errno,
    pub message: Option<String>,
}

/// Error of a batch: which operation (by the label given to
/// [`Batch::push`]) failed, or the socket itself.
#[derive(Debug)]
pub enum BatchError {
    Io(&'static str, io::Error),
    Op { what: String, err: NlError },
    Protocol(String),
}

/// Error of a request/dump.
#[derive(Debug)]
pub enum RequestError {
    Io(&'static str, io::Error),
    Kernel(NlError),
    Protocol(String),
}

/// A transaction: BATCH_BEGIN, messages, BATCH_END, sent in one sendmsg.
pub struct Batch {
    w: MsgWriter,
    begin_seq: u32,
    next_seq: u32,
    /// Label of each message, index = seq - begin_seq - 1.
    ops: Vec<String>,
}

impl Batch {
    pub fn new(first_seq: u32) -> Self {
        let mut w = MsgWriter::with_capacity(1024);
        // No NLM_F_ACK on begin/end: kernels before 6.10 ignore it, later
        // ones would ack; acking only real messages keeps the count exact.
        let s = w.begin_msg(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first_seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        w.end_msg(s);
        Self {
            w,
            begin_seq: first_seq,
            next_seq: first_seq.wrapping_add(1),
            ops: Vec::new(),
        }
    }

    /// Adds one nf_tables message (always with NLM_F_REQUEST|NLM_F_ACK).
    /// `what` names it in errors.
    pub fn push(
        &mut self,
        msg_type: u16,
        flags: u16,
        what: impl Into<String>,
        body: impl FnOnce(&mut MsgWriter),
    ) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let s = self.w.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | msg_type,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            NFPROTO_IPV4,
            0,
        );
        body(&mut self.w);
        self.w.end_msg(s);
        self.ops.push(what.into());
    }

    /// Sends the batch and waits for the verdict on every message. The
    /// first error (in batch order) is returned; the kernel has then
    /// aborted the whole transaction.
    pub fn run(mut self, sock: &NfSocket) -> Result<(), BatchError> {
        let s = self.w.begin_msg(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            self.next_seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        self.w.end_msg(s);
        let n_ops = self.ops.len();
        let bytes = self.w.into_bytes();
        sock.size_buffers(bytes.len(), n_ops)
            .map_err(|e| BatchError::Io("setsockopt buffer size", e))?;
        sock.send(&bytes)
            .map_err(|e| BatchError::Io("sendmsg batch", e))?;

        let mut answered = vec![false; n_ops];
        let mut remaining = n_ops;
        // (batch index, error); index n_ops = the batch as a whole.
        let mut first_err: Option<(usize, NlError)> = None;
        let mut buf = vec![0u8; RECV_BUF];
        while remaining > 0 {
            let n = sock
                .recv(&mut buf)
                .map_err(|e| BatchError::Io("recv batch acks", e))?;
            for m in messages(&buf[..n]) {
                let m = m.map_err(BatchError::Protocol)?;
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let err = parse_error(&m).map_err(BatchError::Protocol)?;
                let idx = m.seq.wrapping_sub(self.begin_seq).wrapping_sub(1) as usize;
                if m.seq == self.begin_seq {
                    // Commit failure is reported against the batch begin.
                    if let Some(e) = err {
                        first_err.get_or_insert((n_ops, e));
                    }
                    continue;
                }
                if idx >= n_ops || answered[idx] {
                    continue; // not ours (stale) or duplicate
                }
                answered[idx] = true;
                remaining -= 1;
                if let Some(e) = err {
                    if first_err.as_ref().is_none_or(|(i, _)| idx < *i) {
                        first_err = Some((idx, e));
                    }
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some((idx, err)) => Err(BatchError::Op {
                what: self
                    .ops
                    .get(idx)
                    .cloned()
                    .unwrap_or_else(|| "commit transaction".to_string()),
                err,
            }),
        }
    }
}

/// Sends one non-batched nf_tables request (a GET, dump or not) and feeds
/// every data message's attribute payload to `on_msg`.
pub fn request(
    sock: &NfSocket,
    seq: u32,
    msg_type: u16,
    flags: u16,
    body: impl FnOnce(&mut MsgWriter),
    mut on_msg: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), RequestError> {
    let mut w = MsgWriter::with_capacity(256);
    let s = w.begin_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | msg_type,
        NLM_F_REQUEST | NLM_F_ACK | flags,
        seq,
        NFPROTO_IPV4,
        0,
    );
    body(&mut w);
    w.end_msg(s);
    sock.send(&w.into_bytes())
        .map_err(|e| RequestError::Io("sendmsg request", e))?;
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let n = sock
            .recv(&mut buf)
            .map_err(|e| RequestError::Io("recv reply", e))?;
        for m in messages(&buf[..n]) {
            let m = m.map_err(RequestError::Protocol)?;
            if m.seq != seq {
                continue;
            }
            match m.ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    return match parse_error(&m).map_err(RequestError::Protocol)? {
                        None => Ok(()), // ack of a non-dump GET
                        Some(e) => Err(RequestError::Kernel(e)),
                    };
                }
                _ => {
                    let attrs = m
                        .payload
                        .get(NFGENMSG_LEN..)
                        .ok_or_else(|| RequestError::Protocol("short nfgenmsg".into()))?;
                    on_msg(attrs).map_err(RequestError::Protocol)?;
                }
            }
        }
    }
}

struct Msg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn messages(mut data: &[u8]) -> impl Iterator<Item = Result<Msg<'_>, String>> {
    std::iter::from_fn(move || {
        if data.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            data = &[];
            return Some(Err(format!("truncated netlink message (len {len})")));
        }
        let m = Msg {
            ty: u16::from_ne_bytes(data[4..6].try_into().unwrap()),
            flags: u16::from_ne_bytes(data[6..8].try_into().unwrap()),
            seq: u32::from_ne_bytes(data[8..12].try_into().unwrap()),
            payload: &data[NLMSG_HDRLEN..len],
        };
        data = &data[align4(len).min(data.len())..];
        Some(Ok(m))
    })
}

/// NLMSG_ERROR payload: Ok(None) is an ACK, Ok(Some) a failure.
fn parse_error(m: &Msg<'_>) -> Result<Option<NlError>, String> {
    let code = m
        .payload
        .get(..4)
        .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
        .ok_or("short NLMSG_ERROR")?;
    if code == 0 {
        return Ok(None);
    }
    let mut message = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        // After the error code comes the echoed request: only its header
        // when capped (we ask for that), the whole message otherwise.
        let echoed_len = if m.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            m.payload
                .get(4..8)
                .map(|b| u32::from_ne_bytes(b.try_into().unwrap()) as usize)
                .unwrap_or(NLMSG_HDRLEN)
        };
        if let Some(tlvs) = m.payload.get(4 + align4(echoed_len)..) {
            message = find(tlvs, NLMSGERR_ATTR_MSG)
                .map(|p| String::from_utf8_lossy(cstr(p)).into_owned());
        }
    }
    Ok(Some(NlError {
        errno: Errno::from_raw(-code),
        message,
    }))
}

/// Receive buffer size. The kernel sizes dump skbs by the largest buffer a
/// socket has offered, capped at 32 KiB, so this never truncates (recv
/// checks with MSG_TRUNC anyway).
const RECV_BUF: usize = 32 * 1024;

/// A NETLINK_NETFILTER socket, private to one driver call. The socket is
/// bound to the network namespace of the thread that opens it, and its own
/// port id and sequence numbers keep concurrent calls apart.
pub struct NfSocket {
    fd: OwnedFd,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl NfSocket {
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain syscalls on an fd we own.
        unsafe {
            let fd = cvt(libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            ))?;
            let sock = Self {
                fd: OwnedFd::from_raw_fd(fd),
            };
            // Errors echo only the header, not our (possibly large) request.
            sock.setopt(libc::SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
            // Extended ack: the kernel's error text when it has one.
            sock.setopt(libc::SOL_NETLINK, NETLINK_EXT_ACK, 1)?;
            // Never hang a CNI call on a lost reply.
            let tv = libc::timeval {
                tv_sec: 5,
                tv_usec: 0,
            };
            cvt(libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            ))?;
            let mut addr: libc::sockaddr_nl = mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            // nl_pid 0: the kernel assigns a unique port id.
            cvt(libc::bind(
                fd,
                (&addr as *const libc::sockaddr_nl).cast(),
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            ))?;
            Ok(sock)
        }
    }

    fn setopt(&self, level: i32, name: i32, val: libc::c_int) -> io::Result<()> {
        // SAFETY: valid fd and an int option value.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&val as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
        Ok(())
    }

    /// Large syncs: the batch must fit the send buffer in one piece and all
    /// acks (one skb each) must fit the receive buffer.
    fn size_buffers(&self, batch_len: usize, n_acks: usize) -> io::Result<()> {
        const DEFAULT_OK: usize = 128 * 1024;
        if batch_len > DEFAULT_OK / 2 {
            let want = (batch_len * 2).min(i32::MAX as usize) as i32;
            // FORCE needs CAP_NET_ADMIN (which we need anyway); fall back.
            self.setopt(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want)
                .or_else(|_| self.setopt(libc::SOL_SOCKET, libc::SO_SNDBUF, want))?;
        }
        let ack_bytes = n_acks * 1024;
        if ack_bytes > DEFAULT_OK / 2 {
            let want = (ack_bytes * 2).min(i32::MAX as usize) as i32;
            self.setopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want)
                .or_else(|_| self.setopt(libc::SOL_SOCKET, libc::SO_RCVBUF, want))?;
        }
        Ok(())
    }

    fn send(&self, data: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: data/addr valid for the call.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    0,
                    (&addr as *const libc::sockaddr_nl).cast(),
                    mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r as usize != data.len() {
                return Err(io::Error::other("short netlink send"));
            }
            return Ok(());
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf valid for writes of its length.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no reply from nf_tables within {:?}",
                            Duration::from_secs(5)
                        ),
                    ));
                }
                return Err(e);
            }
            if r as usize > buf.len() {
                return Err(io::Error::other(format!(
                    "netlink reply of {r} bytes truncated to {}",
                    buf.len()
                )));
            }
            return Ok(r as usize);
        }
    }
}

/// Identity of the calling thread's network namespace (nsfs dev + inode).
fn current_netns() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Idle sockets kept for reuse, keyed by network namespace.
///
/// Why not one socket per call: closing an nf_tables socket while the
/// kernel still has a finished transaction to free (any delete: element
/// removal, sync) makes the close wait for an RCU grace period under the
/// nf_tables commit mutex (`nft_rcv_nl_event` ->
/// `nf_tables_trans_destroy_flush_work`), measured at 12-15 ms here.
/// Reused sockets never close on the hot path. A call borrows a socket
/// exclusively, so port ids and sequence numbers of concurrent calls never
/// mix; a socket is only reused in the namespace it was opened in.
pub struct SocketPool {
    idle: std::sync::Mutex<Vec<((u64, u64), NfSocket)>>,
}

/// Enough for the blocking pool's concurrency; extra sockets are closed.
const POOL_MAX_IDLE: usize = 16;

impl SocketPool {
    pub fn new() -> Self {
        Self {
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` with a socket of the calling thread's namespace. The socket
    /// goes back to the pool unless `reusable` says its state is unknown
    /// (I/O or protocol error: replies may be left unread).
    pub fn with<T, E>(
        &self,
        open_err: impl FnOnce(io::Error) -> E,
        reusable: impl FnOnce(&Result<T, E>) -> bool,
        f: impl FnOnce(&NfSocket) -> Result<T, E>,
    ) -> Result<T, E> {
        let key = current_netns();
        let pooled = key.and_then(|k| {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let i = idle.iter().rposition(|(kk, _)| *kk == k)?;
            Some(idle.swap_remove(i).1)
        });
        let sock = match pooled {
            Some(s) => s,
            None => NfSocket::open().map_err(open_err)?,
        };
        let r = f(&sock);
        if let Some(k) = key {
            if reusable(&r) {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < POOL_MAX_IDLE {
                    idle.push((k, sock));
                }
            }
        }
        r
    }
}

#[cfg(test)]
impl SocketPool {
    /// (idle sockets, idle sockets with unread data)
    pub fn idle_with_pending_data(&self) -> (usize, usize) {
        let idle = self.idle.lock().unwrap();
        let pending = idle
            .iter()
            .filter(|(_, s)| {
                let mut b = [0u8; 64];
                // SAFETY: valid fd and buffer.
                let r = unsafe {
                    libc::recv(
                        s.fd.as_raw_fd(),
                        b.as_mut_ptr().cast(),
                        b.len(),
                        libc::MSG_PEEK | libc::MSG_DONTWAIT,
                    )
                };
                r >= 0
            })
            .count();
        (idle.len(), pending)
    }
}

impl Default for SocketPool {
    fn default() -> Self {
        Self::new()
    }
}
