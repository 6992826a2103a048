//! Which options a reply carries, in what priority, and fitting them into
//! the client's maximum message size.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::Name;
use ipnet::Ipv4Net;

use super::ServerConfig;
use crate::codec;
use crate::frame::{DEFAULT_MAX_MESSAGE, IPV4_HEADER_LEN, UDP_HEADER_LEN};

/// Never dropped to make room: without them the reply means nothing, and
/// RFC 3046 2.2 says the relay information MUST be echoed.
fn mandatory(code: u8) -> bool {
    matches!(code, 53 | 54 | 51 | 58 | 59 | 82)
}

/// Largest IP datagram the reply may be: the client's option 57 (never
/// below 576, RFC 2132 9.10), and never above the network's MTU.
pub(super) fn max_size(cfg: &ServerConfig, req: &Message) -> usize {
    let mtu = cfg
        .pool
        .mtu
        .map_or(1500, |m| m as usize)
        .max(DEFAULT_MAX_MESSAGE);
    let asked = codec::max_message_size(req).map_or(DEFAULT_MAX_MESSAGE, usize::from);
    asked.clamp(DEFAULT_MAX_MESSAGE, mtu)
}

/// RFC 3442 routes for the pool, with the router as the 0.0.0.0/0 entry:
/// a client that gets option 121 ignores option 3.
pub fn classless_routes(cfg: &ServerConfig) -> Vec<(Ipv4Net, Ipv4Addr)> {
    let mut routes: Vec<(Ipv4Net, Ipv4Addr)> = cfg
        .pool
        .routes
        .iter()
        .map(|r| (r.dst.trunc(), r.gateway))
        .collect();
    let has_default = routes.iter().any(|(n, _)| n.prefix_len() == 0);
    if let (Some(router), false) = (cfg.pool.router, has_default) {
        routes.push((Ipv4Net::default(), router));
    }
    routes
}

/// RFC 3397 names; ones that are not valid DNS names are skipped (the API
/// validates them, this only keeps a bad store entry from failing replies).
fn search_names(list: &[String]) -> Vec<Name> {
    list.iter()
        .filter_map(|d| Name::from_ascii(format!("{}.", d.trim_end_matches('.'))).ok())
        .collect()
}

fn echoed(req: &Message) -> Vec<DhcpOption> {
    let mut v = Vec::new();
    // RFC 6842: servers echo the client identifier.
    if let Some(id) = codec::client_id(req) {
        v.push(DhcpOption::ClientIdentifier(id.to_vec()));
    }
    // RFC 3046 2.2: echo the relay agent information (the encoder puts it
    // last).
    if let Some(o) = req.opts().get(OptionCode::RelayAgentInformation) {
        v.push(o.clone());
    }
    v
}

/// A requested-only option's value, if the pool configures it.
fn optional(cfg: &ServerConfig, code: u8) -> Option<DhcpOption> {
    let p = &cfg.pool;
    match code {
        28 => Some(DhcpOption::BroadcastAddr(p.cidr.broadcast())),
        42 if !p.ntp.is_empty() => Some(DhcpOption::NtpServers(p.ntp.clone())),
        119 if !p.domain_search.is_empty() => {
            let names = search_names(&p.domain_search);
            (!names.is_empty()).then_some(DhcpOption::DomainSearch(names))
        }
        121 => {
            let routes = classless_routes(cfg);
            (!routes.is_empty()).then_some(DhcpOption::ClasslessStaticRoute(routes))
        }
        67 => p
            .boot_file_name
            .as_ref()
            .map(|f| DhcpOption::BootfileName(f.as_bytes().to_vec())),
        _ => None,
    }
}

/// The options of an OFFER or ACK (`lease` set) or an ACK to INFORM
/// (`lease` None), highest priority first.
pub(super) fn config_options(
    cfg: &ServerConfig,
    req: &Message,
    kind: MessageType,
    lease: Option<u32>,
) -> Vec<DhcpOption> {
    let p = &cfg.pool;
    let mut v = vec![
        DhcpOption::MessageType(kind),
        DhcpOption::ServerIdentifier(p.server_ip),
    ];
    if let Some(l) = lease {
        // RFC 2131 4.4.5 defaults: T1 = 0.5, T2 = 0.875 of the lease.
        let t1 = (u64::from(l) / 2) as u32;
        let t2 = (u64::from(l) * 7 / 8) as u32;
        v.extend([
            DhcpOption::AddressLeaseTime(l),
            DhcpOption::Renewal(t1),
            DhcpOption::Rebinding(t2),
        ]);
    }
    v.extend(echoed(req));
    // The basic set goes to every client: harmless when unrequested, and
    // clients that apply unrequested MTUs get the right one.
    v.push(DhcpOption::SubnetMask(p.cidr.netmask()));
    if let Some(r) = p.router {
        v.push(DhcpOption::Router(vec![r]));
    }
    if !p.dns.is_empty() {
        v.push(DhcpOption::DomainNameServer(p.dns.clone()));
    }
    if let Some(d) = &p.domain_name {
        v.push(DhcpOption::DomainName(d.clone()));
    }
    if let Some(mtu) = p.mtu {
        v.push(DhcpOption::InterfaceMtu(mtu.min(u32::from(u16::MAX)) as u16));
    }
    // The rest only when asked for (in the client's order of preference),
    // or all of them (but 28 and 67) to a client that sent no list.
    let requested: Vec<u8> = match codec::parameter_list(req) {
        Some(prl) => prl.iter().map(|c| u8::from(*c)).collect(),
        None => vec![42, 119, 121],
    };
    for code in requested {
        if v.iter().any(|o| u8::from(OptionCode::from(o)) == code) {
            continue;
        }
        if let Some(o) = optional(cfg, code) {
            v.push(o);
        }
    }
    v
}

pub(super) fn nak_options(cfg: &ServerConfig, req: &Message, text: &str) -> Vec<DhcpOption> {
    let mut v = vec![
        DhcpOption::MessageType(MessageType::Nak),
        DhcpOption::ServerIdentifier(cfg.pool.server_ip),
    ];
    v.extend(echoed(req));
    v.push(DhcpOption::Message(text.to_string()));
    v
}

/// Drops options from the low-priority end until the reply fits in
/// `max_size`; None when even the mandatory ones do not.
pub(super) fn fit(mut opts: Vec<DhcpOption>, max_size: usize) -> Option<Vec<DhcpOption>> {
    let fixed = IPV4_HEADER_LEN + UDP_HEADER_LEN + codec::MIN_MESSAGE_LEN + 1;
    let size = |opts: &[DhcpOption]| fixed + opts.iter().map(codec::option_len).sum::<usize>();
    while size(&opts) > max_size {
        let victim = opts
            .iter()
            .rposition(|o| !mandatory(u8::from(OptionCode::from(o))))?;
        opts.remove(victim);
    }
    Some(opts)
}
