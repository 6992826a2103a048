//! Classic tc over rtnetlink: the clsact qdisc and cls_bpf filters,
//! addressed by ifindex. The datapath attaches through tcx links now
//! (`crate::tcx`); this is what finds and deletes the filters older netd
//! versions put in [`Slot::DATAPATH`] (migration), and what the VIP fence
//! uses without a datapath (`netd --vip-only`). No name lookups, so no
//! races with renames. One socket per operation, opened on the calling
//! thread so it talks to that thread's network namespace; every request
//! waits for its ack (or the end of its dump), so nothing is left unread.

use std::{io, os::fd::RawFd};

use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
    Parseable, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::{
    tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// tcm_info priority (the "pref" `tc` shows) of the filters older netd
/// versions attached (now migrated to tcx links). Filters run
/// in ascending priority order and the first direct-action verdict wins:
/// 1-239 stay free for anything that must run before us. `tc filter add`
/// without a priority picks 49152 and below, i.e. after us.
pub const FILTER_PRIORITY: u16 = 0xf0;
/// Handle of our filter inside its (priority, protocol all) slot.
/// `tc filter show` prints it as `handle 0xf0`.
pub const FILTER_HANDLE: u32 = 0xf0;

/// Where a cls_bpf filter sits on a hook: (priority, protocol all,
/// handle). The datapath uses [`Slot::DATAPATH`]; the VIP fence
/// (`crate::fence`) a slot of its own, before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub priority: u16,
    pub handle: u32,
}

impl Slot {
    /// The management and L2 programs' slot.
    pub const DATAPATH: Slot = Slot {
        priority: FILTER_PRIORITY,
        handle: FILTER_HANDLE,
    };
}

/// sizeof(struct tcmsg): the attributes follow it.
const TCMSG_LEN: usize = 20;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const NLMSGERR_ATTR_MSG: u16 = 1;
const KIND_BPF: &str = "bpf";
const KIND_CLSACT: &str = "clsact";
/// tcm_info's low 16 bits: the protocol in network order (ETH_P_ALL).
const PROTO_ALL: u16 = (libc::ETH_P_ALL as u16).to_be();
/// Large enough for any dump skb (the kernel caps them at 32 KiB).
const RECV_BUF: usize = 64 * 1024;

/// A clsact hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn parent(self) -> TcHandle {
        TcHandle {
            major: TcHandle::CLSACT.major,
            minor: match self {
                Hook::Ingress => TcHandle::MIN_INGRESS,
                Hook::Egress => TcHandle::MIN_EGRESS,
            },
        }
    }
}

/// A cls_bpf filter as a dump reports it (only what we look at).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    pub priority: u16,
    /// Network order, as in tcm_info.
    pub protocol: u16,
    pub handle: u32,
    pub kind: String,
    pub prog_id: Option<u32>,
    pub direct_action: bool,
}

impl Filter {
    /// At our (priority, protocol all, handle) slot, as a cls_bpf filter.
    pub fn in_our_slot(&self) -> bool {
        self.in_slot(Slot::DATAPATH)
    }

    /// At `slot` (protocol all), as a cls_bpf filter.
    pub fn in_slot(&self, slot: Slot) -> bool {
        self.priority == slot.priority
            && self.protocol == PROTO_ALL
            && self.handle == slot.handle
            && self.kind == KIND_BPF
    }
}

/// A failed request: the errno and the kernel's extended ack message.
#[derive(Debug)]
pub(crate) struct NlError {
    pub errno: i32,
    pub msg: Option<String>,
}

impl NlError {
    fn io(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(errno) => NlError { errno, msg: None },
            None => NlError {
                errno: libc::EIO,
                msg: Some(e.to_string()),
            },
        }
    }

    fn protocol(what: impl std::fmt::Display) -> Self {
        NlError {
            errno: libc::EPROTO,
            msg: Some(format!("unexpected netlink reply: {what}")),
        }
    }
}

impl From<NlError> for io::Error {
    fn from(e: NlError) -> io::Error {
        let os = io::Error::from_raw_os_error(e.errno);
        match e.msg {
            Some(m) => io::Error::new(os.kind(), format!("{m} ({os})")),
            None => os,
        }
    }
}

pub(crate) struct TcSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl TcSocket {
    /// A route netlink socket in the calling thread's netns.
    pub fn open() -> Result<Self, NlError> {
        let sock = Socket::new(NETLINK_ROUTE).map_err(NlError::io)?;
        // Error messages from the kernel, and acks without a copy of the request.
        sock.set_ext_ack(true).map_err(NlError::io)?;
        sock.set_cap_ack(true).map_err(NlError::io)?;
        Ok(TcSocket {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Adds the clsact qdisc; fine if there is one already. Any other
    /// qdisc in the ingress slot (the plain `ingress` qdisc) is an error:
    /// it would take an "egress" filter on its single block.
    pub fn ensure_clsact(&mut self, ifindex: u32) -> Result<(), NlError> {
        let mut msg = TcMessage::with_index(ifindex as i32);
        msg.header.handle = TcHandle {
            major: TcHandle::CLSACT.major,
            minor: 0,
        };
        msg.header.parent = TcHandle::CLSACT;
        msg.attributes.push(TcAttribute::Kind(KIND_CLSACT.into()));
        let req = RouteNetlinkMessage::NewQueueDiscipline(msg);
        match self.request(req, NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.errno == libc::EEXIST => {}
            r => return r,
        }
        let mut get = TcMessage::with_index(ifindex as i32);
        get.header.parent = TcHandle::CLSACT;
        let mut kinds = Vec::new();
        // A qdisc "get" is answered as a notification: only to the TC
        // multicast group unless the request asks for an echo.
        self.exchange(
            RouteNetlinkMessage::GetQueueDiscipline(get),
            NLM_F_ACK | NLM_F_ECHO,
            libc::RTM_NEWQDISC,
            |_, attrs| {
                kinds.push(kind_of(attrs)?);
                Ok(())
            },
        )?;
        match kinds.as_slice() {
            [k] if k == KIND_CLSACT => Ok(()),
            other => Err(NlError {
                errno: libc::EEXIST,
                msg: Some(format!(
                    "the device has a {other:?} qdisc where clsact is needed"
                )),
            }),
        }
    }

    /// Creates the filter at `slot` or, if the slot holds one already,
    /// swaps its program in place (RTM_NEWTFILTER with NLM_F_CREATE but
    /// without NLM_F_EXCL: cls_bpf replaces the filter under RCU, so
    /// traffic sees either program and never none).
    pub fn upsert_filter_at(
        &mut self,
        ifindex: u32,
        hook: Hook,
        slot: Slot,
        prog_fd: RawFd,
        prog_name: &str,
    ) -> Result<(), NlError> {
        let mut msg = filter_msg(ifindex, hook, slot);
        msg.attributes.push(TcAttribute::Kind(KIND_BPF.into()));
        msg.attributes.push(TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::ProgFd(prog_fd as u32)),
            TcOption::Bpf(TcFilterBpfOption::ProgName(prog_name.into())),
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        ]));
        self.request(
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Deletes the filter in our slot. `Ok(false)` if there was nothing to
    /// delete: device gone (ENODEV), no clsact qdisc or another kind of
    /// filter at our priority (EINVAL), no filter there (ENOENT).
    pub fn delete_filter(&mut self, ifindex: u32, hook: Hook) -> Result<bool, NlError> {
        self.delete_filter_at(ifindex, hook, Slot::DATAPATH)
    }

    /// [`TcSocket::delete_filter`] at another slot.
    pub fn delete_filter_at(
        &mut self,
        ifindex: u32,
        hook: Hook,
        slot: Slot,
    ) -> Result<bool, NlError> {
        let mut msg = filter_msg(ifindex, hook, slot);
        msg.attributes.push(TcAttribute::Kind(KIND_BPF.into()));
        match self.request(RouteNetlinkMessage::DelTrafficFilter(msg), 0) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.errno, libc::ENOENT | libc::ENODEV | libc::EINVAL) => {
                tracing::trace!(ifindex, ?hook, errno = e.errno, msg = ?e.msg, "no filter to delete");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Every cls_bpf filter on a hook (empty if the device or its clsact
    /// qdisc is gone).
    pub fn filters(&mut self, ifindex: u32, hook: Hook) -> Result<Vec<Filter>, NlError> {
        let mut msg = TcMessage::with_index(ifindex as i32);
        msg.header.parent = hook.parent();
        let mut out = Vec::new();
        self.exchange(
            RouteNetlinkMessage::GetTrafficFilter(msg),
            NLM_F_DUMP,
            libc::RTM_NEWTFILTER,
            |header, attrs| {
                let handle = u32::from(header.handle);
                if handle == 0 {
                    // The entry of the (priority, protocol) slot itself.
                    return Ok(());
                }
                let mut f = Filter {
                    priority: (header.info >> 16) as u16,
                    protocol: header.info as u16,
                    handle,
                    ..Default::default()
                };
                for nla in NlasIterator::new(attrs) {
                    let nla = nla.map_err(NlError::protocol)?;
                    match nla.kind() {
                        TCA_KIND => f.kind = c_string(nla.value()),
                        TCA_OPTIONS => parse_bpf_options(&mut f, nla.value())?,
                        _ => {}
                    }
                }
                if f.kind == KIND_BPF {
                    out.push(f);
                }
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Indexes of the devices that have a clsact qdisc (one dump for the
    /// whole netns).
    pub fn clsact_devices(&mut self) -> Result<Vec<u32>, NlError> {
        let mut out = Vec::new();
        self.exchange(
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
            NLM_F_DUMP,
            libc::RTM_NEWQDISC,
            |header, attrs| {
                if kind_of(attrs)? == KIND_CLSACT && header.index > 0 {
                    out.push(header.index as u32);
                }
                Ok(())
            },
        )?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// A request answered by an ack only.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NlError> {
        self.exchange(msg, NLM_F_ACK | flags, 0, |_, _| Ok(()))
    }

    /// Sends one request and reads every reply up to its ack, error or end
    /// of dump, handing messages of type `want` to `each`.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        want: u16,
        mut each: impl FnMut(&TcHeader, &[u8]) -> Result<(), NlError>,
    ) -> Result<(), NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock
            .send_to(&out, &SocketAddr::new(0, 0), 0)
            .map_err(NlError::io)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        // A deferred error from `each`: keep reading to the end of the
        // reply so the socket is left clean, then report it.
        let mut failed: Option<NlError> = None;
        loop {
            self.buf.clear();
            let n = match self.sock.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::io(e)),
            };
            if n > self.buf.len() {
                return Err(NlError::protocol(format!(
                    "datagram of {n} bytes truncated"
                )));
            }
            let mut data = &self.buf[..];
            while !data.is_empty() {
                let buf = NetlinkBuffer::new_checked(data).map_err(NlError::protocol)?;
                let advance = (buf.length() as usize + 3) & !3;
                let next = data.get(advance..).unwrap_or_default();
                if buf.sequence_number() != seq {
                    // Not ours (nothing else should arrive on this socket).
                    data = next;
                    continue;
                }
                match buf.message_type() {
                    NLMSG_ERROR => {
                        let err =
                            ErrorBuffer::new_checked(buf.payload()).map_err(NlError::protocol)?;
                        let Some(code) = err.code() else {
                            // The ack: the request succeeded.
                            return failed.map_or(Ok(()), Err);
                        };
                        return Err(NlError {
                            errno: code.get().abs(),
                            msg: error_msg(buf.flags(), err.payload()),
                        });
                    }
                    NLMSG_DONE if dump => {
                        // A failed dump ends with a negative errno here.
                        let code = buf
                            .payload()
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if code < 0 {
                            return Err(NlError {
                                errno: -code,
                                msg: (buf.flags() & NLM_F_ACK_TLVS != 0)
                                    .then(|| tlv_msg(buf.payload().get(4..)?))
                                    .flatten(),
                            });
                        }
                        return failed.map_or(Ok(()), Err);
                    }
                    t if t == want && failed.is_none() => {
                        let payload = buf.payload();
                        let r = TcHeader::parse(payload)
                            .map_err(NlError::protocol)
                            .and_then(|h| each(&h, payload.get(TCMSG_LEN..).unwrap_or_default()));
                        if let Err(e) = r {
                            failed = Some(e);
                        }
                    }
                    _ => {}
                }
                data = next;
            }
        }
    }
}

fn filter_msg(ifindex: u32, hook: Hook, slot: Slot) -> TcMessage {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = hook.parent();
    msg.header.handle = slot.handle.into();
    msg.header.info = (u32::from(slot.priority) << 16) | u32::from(PROTO_ALL);
    msg
}

fn kind_of(attrs: &[u8]) -> Result<String, NlError> {
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(NlError::protocol)?;
        if nla.kind() == TCA_KIND {
            return Ok(c_string(nla.value()));
        }
    }
    Ok(String::new())
}

fn parse_bpf_options(f: &mut Filter, opts: &[u8]) -> Result<(), NlError> {
    for nla in NlasIterator::new(opts) {
        let nla = nla.map_err(NlError::protocol)?;
        match TcFilterBpfOption::parse(&nla) {
            Ok(TcFilterBpfOption::ProgId(id)) => f.prog_id = Some(id),
            Ok(TcFilterBpfOption::Flags(flags)) => {
                f.direct_action = flags.contains(TcBpfFlags::DirectAction)
            }
            Ok(_) => {}
            Err(e) => return Err(NlError::protocol(e)),
        }
    }
    Ok(())
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// NLMSGERR_ATTR_MSG of an NLMSG_ERROR payload (after the error code):
/// the original request's header (or whole message unless capped), then
/// the extended ack TLVs.
fn error_msg(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let skip = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize;
        (len + 3) & !3
    };
    tlv_msg(payload.get(skip..)?)
}

fn tlv_msg(tlvs: &[u8]) -> Option<String> {
    for nla in NlasIterator::new(tlvs) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            return Some(c_string(nla.value()).trim_end_matches('.').to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_slot() {
        let f = Filter {
            priority: FILTER_PRIORITY,
            protocol: PROTO_ALL,
            handle: FILTER_HANDLE,
            kind: "bpf".into(),
            ..Default::default()
        };
        assert!(f.in_our_slot());
        assert!(!Filter {
            handle: 1,
            ..f.clone()
        }
        .in_our_slot());
        assert!(!Filter {
            protocol: 8u16.to_be(),
            ..f
        }
        .in_our_slot());
        assert_eq!(PROTO_ALL, 0x0300);
    }

    #[test]
    fn hook_parents() {
        assert_eq!(u32::from(Hook::Ingress.parent()), 0xffff_fff2);
        assert_eq!(u32::from(Hook::Egress.parent()), 0xffff_fff3);
    }
}
