//! One rtnetlink link query: what the L2 switch needs to know about a port
//! device (whether bpf_redirect_peer can deliver to it).

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// What a link dump says about one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkFacts {
    pub is_veth: bool,
    /// IFLA_LINK_NETNSID present: the veth's peer lives in another netns.
    pub peer_elsewhere: bool,
}

impl LinkFacts {
    /// bpf_redirect_peer delivers only to a veth (or netkit) whose peer
    /// is in another network namespace; it drops anything else.
    pub fn redirect_peer_ok(&self) -> bool {
        self.is_veth && self.peer_elsewhere
    }
}

/// RTM_GETLINK by index in the calling thread's netns. `Ok(None)` if the
/// device does not exist.
pub(crate) fn link_facts(ifindex: u32) -> io::Result<Option<LinkFacts>> {
    let sock = Socket::new(NETLINK_ROUTE)?;
    sock.set_ext_ack(true)?;
    sock.connect(&SocketAddr::new(0, 0))?;

    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut nl = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(msg)),
    );
    nl.finalize();
    let mut out = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut out);
    sock.send(&out, 0)?;

    let mut facts = None;
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        match sock.recv(&mut buf, 0) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut data = &buf[..];
        while !data.is_empty() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = (msg.header.length as usize + 3) & !3;
            data = data.get(len.max(16)..).unwrap_or_default();
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    let mut f = LinkFacts::default();
                    for a in &link.attributes {
                        match a {
                            LinkAttribute::LinkInfo(infos) => {
                                f.is_veth |= infos
                                    .iter()
                                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                            }
                            LinkAttribute::LinkNetNsId(_) => f.peer_elsewhere = true,
                            _ => {}
                        }
                    }
                    facts = Some(f);
                }
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(facts),
                        Some(code) if code.get().abs() == libc::ENODEV => Ok(None),
                        Some(code) => Err(io::Error::from_raw_os_error(code.get().abs())),
                    };
                }
                NetlinkPayload::Done(_) => return Ok(facts),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_not_a_veth() {
        let f = link_facts(1).unwrap().expect("lo exists");
        assert!(!f.is_veth && !f.redirect_peer_ok());
        assert_eq!(link_facts(999_999).unwrap(), None);
    }
}
