//! `netctl trace`: what the VLAN switch does with a frame, found by running
//! the loaded `furrow_l2_ingress` on a crafted frame (BPF_PROG_TEST_RUN) in
//! its trace (dry-run) mode, so the answer cannot drift from the datapath.
//!
//! Trace mode (see `bpf/l2.bpf.c`, `l2_dry_run`): the caller puts two magic
//! words in `skb->cb[3..4]`; the program then decides on the live maps
//! exactly as for a live frame but writes nothing (no counters, no MAC
//! learning, no `last_seen` refresh, no clones) and, when it floods,
//! appends a trailer to the frame listing every delivery it would make.
//! Its verdict comes back in the usual trace record (`skb->cb`,
//! [`L2Trace`]). The map entries behind each decision are read here, after
//! the run, and named in the steps.

use std::net::Ipv4Addr;

use crate::{
    l2::L2Trace, sys, Datapath, DatapathError, FdbEntry, L2Mode, L2Verdict, PROG_L2_INGRESS,
};

/// cb[3] / cb[4] of a trace-mode run (`L2_DRY_MAGIC3` / `L2_DRY_MAGIC4`).
pub const L2_DRY_MAGIC3: u32 = 0x4654_5243;
pub const L2_DRY_MAGIC4: u32 = 0x4452_5931;
const TRAILER_MAGIC: u32 = 0x4654_5231;
const TRAILER_HDR: usize = 16;
const TRAILER_LEN: usize = TRAILER_HDR + 4 * crate::L2_MAX_MEMBERS;
const TRAILER_F_HOST_COPY: u32 = 0x1;

// struct __sk_buff offsets (stable UAPI), as in testrun.rs.
const CTX_IFINDEX: usize = 40;
const CTX_CB: usize = 48;
const CTX_LEN: usize = 192;

/// The frame a trace runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2TraceFrame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// An 802.1Q tag in the frame (as a trunk port or the uplink sends it);
    /// `None`: untagged.
    pub tag: Option<u16>,
    pub src_ip: Option<Ipv4Addr>,
    pub dst_ip: Option<Ipv4Addr>,
}

impl L2TraceFrame {
    /// The bytes: an ARP request for `dst_ip` when the destination is
    /// broadcast and an address is given, an IPv4/UDP datagram (to the
    /// discard port 9, never DHCP) when an address is given, else a frame of
    /// the local experimental EtherType 0x88b5.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        if let Some(vid) = self.tag {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        let src = self.src_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let dst = self.dst_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        if self.dst_mac == [0xff; 6] && self.dst_ip.is_some() {
            f.extend_from_slice(&0x0806u16.to_be_bytes());
            f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            f.extend_from_slice(&self.src_mac);
            f.extend_from_slice(&src.octets());
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&dst.octets());
        } else if self.src_ip.is_some() || self.dst_ip.is_some() {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let payload = b"furrow-trace";
            let udp_len = 8 + payload.len() as u16;
            let total = 20 + udp_len;
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let sum = ip_checksum(&ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(&ip);
            f.extend_from_slice(&49152u16.to_be_bytes());
            f.extend_from_slice(&9u16.to_be_bytes());
            f.extend_from_slice(&udp_len.to_be_bytes());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(payload);
        } else {
            f.extend_from_slice(&0x88b5u16.to_be_bytes());
            f.extend_from_slice(b"furrow-trace");
        }
        while f.len() < 60 {
            f.push(0);
        }
        f
    }
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// What one trace-mode run of `furrow_l2_ingress` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2TraceRun {
    /// The tc verdict (`TC_ACT_*`).
    pub retval: u32,
    /// The trace record (`None`: the program left none).
    pub trace: Option<L2Trace>,
    /// A flood's deliveries, in order (the last one gets the original).
    pub flood_to: Vec<u32>,
    /// A flood also hands a copy to the node's stack (VLAN 0, `to_host`).
    pub flood_to_host: bool,
}

/// One decision of the switch, with the map entries behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2TraceStep {
    /// `port`, `vlan`, `filter`, `security`, `source`, `fdb`, `forward`,
    /// `flood`, `drop`, `pass`.
    pub stage: &'static str,
    /// What the switch decided, in words.
    pub decision: String,
    /// The map entries it rests on (`map[key] = value`).
    pub entries: Vec<String>,
}

/// Everything `netctl trace` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2TraceReport {
    pub run: L2TraceRun,
    /// `forward`, `flood`, `drop`, `pass`, `to-host`.
    pub verdict: &'static str,
    /// The verdict's reason (`L2Verdict` in words).
    pub reason: String,
    /// The VLAN the frame was classified into.
    pub vid: Option<u16>,
    /// Ports the frame would leave by (unicast: one; flood: every copy).
    pub out_ports: Vec<u32>,
    pub steps: Vec<L2TraceStep>,
}

impl Datapath {
    /// Runs `furrow_l2_ingress` in trace mode on `frame` as if it arrived
    /// on `ifindex` (an interface of the calling thread's netns). Changes
    /// nothing in the maps and sends nothing.
    pub fn l2_trace_run(&self, ifindex: u32, frame: &[u8]) -> Result<L2TraceRun, DatapathError> {
        let prog = self.program_fd(PROG_L2_INGRESS)?;
        let mut ctx = vec![0u8; CTX_LEN];
        ctx[CTX_IFINDEX..CTX_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        ctx[CTX_CB + 12..CTX_CB + 16].copy_from_slice(&L2_DRY_MAGIC3.to_ne_bytes());
        ctx[CTX_CB + 16..CTX_CB + 20].copy_from_slice(&L2_DRY_MAGIC4.to_ne_bytes());
        let mut ctx_out = vec![0u8; CTX_LEN];
        let mut out = vec![0u8; frame.len() + TRAILER_LEN + 512];
        let r = sys::prog_test_run(prog, frame, &mut out, Some(&ctx), Some(&mut ctx_out), 1)
            .map_err(|cause| DatapathError::Syscall {
                call: "BPF_PROG_TEST_RUN",
                cause,
            })?;
        out.truncate(r.data_size_out as usize);
        let mut cb = [0u32; 5];
        for (i, v) in cb.iter_mut().enumerate() {
            let o = CTX_CB + 4 * i;
            *v = u32::from_ne_bytes(ctx_out[o..o + 4].try_into().expect("4 bytes"));
        }
        let (flood_to, flood_to_host) = parse_trailer(&out);
        Ok(L2TraceRun {
            retval: r.retval,
            trace: L2Trace::from_cb(cb),
            flood_to,
            flood_to_host,
        })
    }

    /// Traces `frame` from `ifindex` and explains each decision with the
    /// map entries behind it; `name` names a port (ifindex) for the steps.
    pub fn l2_trace(
        &self,
        ifindex: u32,
        frame: &L2TraceFrame,
        name: &dyn Fn(u32) -> String,
    ) -> Result<L2TraceReport, DatapathError> {
        // Read before the run what the run's decisions rest on.
        let port = self.l2_port(ifindex)?;
        let flags = self.l2_port_flags(ifindex)?.unwrap_or_default();
        let psec = self.l2_port_security(ifindex)?;
        let fdb = self.fdb_entries()?;
        let run = self.l2_trace_run(ifindex, &frame.build())?;
        let mut steps = Vec::new();
        let mac = fmt_mac;
        let Some(t) = run.trace else {
            steps.push(L2TraceStep {
                stage: "pass",
                decision: format!("{} left no trace record: not an L2 port", name(ifindex)),
                entries: vec![],
            });
            return Ok(L2TraceReport {
                run,
                verdict: "pass",
                reason: "not a port of the switch".into(),
                vid: None,
                out_ports: vec![],
                steps,
            });
        };
        let Some(port) = port else {
            steps.push(L2TraceStep {
                stage: "port",
                decision: format!(
                    "{} is not a port of the switch (no furrow_l2_ports entry): to the kernel",
                    name(ifindex)
                ),
                entries: vec![format!("furrow_l2_ports[{ifindex}] = (none)")],
            });
            return Ok(report(run, t, steps, vec![]));
        };
        let cn = port.cluster_network;
        steps.push(L2TraceStep {
            stage: "port",
            decision: format!(
                "ingress {} (ifindex {ifindex}): cluster network {cn}, {}",
                name(ifindex),
                mode_words(&port.mode)
            ),
            entries: vec![format!(
                "furrow_l2_ports[{ifindex}] = {{cn {cn}, {}, mtu {}{}{}}}",
                mode_words(&port.mode),
                port.mtu,
                if flags.trusted { ", trusted" } else { "" },
                if flags.local_only { ", local-only" } else { "" },
            )],
        });
        let tag = match frame.tag {
            Some(v) => format!("tagged VLAN {v}"),
            None => "untagged".into(),
        };
        let vlans = self.l2_vlans()?;
        match t.vid {
            None if matches!(t.verdict, L2Verdict::DropVlan) => {
                steps.push(L2TraceStep {
                    stage: "vlan",
                    decision: format!(
                        "a {tag} frame is not accepted on a port that is {}: dropped (drop_vlan)",
                        mode_words(&port.mode)
                    ),
                    entries: vec![],
                });
            }
            None => {}
            Some(vid) => {
                let v = vlans
                    .iter()
                    .find(|v| v.cluster_network == cn && v.vid == vid);
                let entry = match v {
                    Some(v) => format!(
                        "furrow_l2_vlans[cn {cn}, vid {vid}] = {{members [{}]{}}}",
                        v.members
                            .iter()
                            .map(|m| name(*m))
                            .collect::<Vec<_>>()
                            .join(", "),
                        if v.to_host { ", to_host" } else { "" }
                    ),
                    None => format!("furrow_l2_vlans[cn {cn}, vid {vid}] = (none)"),
                };
                let decision = if matches!(t.verdict, L2Verdict::DropVlan) {
                    format!("{tag} frame classified into VLAN {vid}, which has no entry on this node: dropped (drop_vlan)")
                } else {
                    format!("{tag} frame classified into VLAN {vid}")
                };
                steps.push(L2TraceStep {
                    stage: "vlan",
                    decision,
                    entries: vec![entry],
                });
            }
        }
        if let Some(vid) = t.vid.filter(|_| !matches!(t.verdict, L2Verdict::DropVlan)) {
            let find = |m: [u8; 6]| -> Option<&FdbEntry> {
                fdb.iter()
                    .find(|e| e.cluster_network == cn && e.vid == vid && e.mac == m)
            };
            if let Some(d) = t.dhcp {
                steps.push(L2TraceStep {
                    stage: "filter",
                    decision: format!("DHCP {d:?} frame"),
                    entries: vec![],
                });
            }
            if let (true, Some(ps)) = (t.port_security, &psec) {
                let decision = if t.verdict.is_port_security_drop() {
                    format!("{}: dropped", reason_words(t.verdict))
                } else {
                    "port security: the frame's MAC and addresses are the port's".to_string()
                };
                steps.push(L2TraceStep {
                    stage: "security",
                    decision,
                    entries: psec_words(ifindex, ps),
                });
            }
            let src = frame.src_mac;
            if t.verdict.is_port_security_drop() {
                // Dropped before learning and forwarding.
            } else if src[0] & 1 == 0 && src != [0; 6] {
                let (decision, entries) = match find(src) {
                    Some(e) => (
                        if e.ifindex == ifindex {
                            format!("source {} is known on this port", mac(src))
                        } else if e.is_static {
                            format!(
                                "source {} has a static entry on {}: never moved by learning",
                                mac(src),
                                name(e.ifindex)
                            )
                        } else {
                            format!(
                                "source {} is known on {}: a live frame would move it here (not in trace mode)",
                                mac(src),
                                name(e.ifindex)
                            )
                        },
                        vec![fdb_words(e, name)],
                    ),
                    None => (
                        format!(
                            "source {} is unknown: a live frame would learn it on {} (not in trace mode)",
                            mac(src),
                            name(ifindex)
                        ),
                        vec![format!(
                            "furrow_l2_fdb[cn {cn}, vid {vid}, {}] = (none)",
                            mac(src)
                        )],
                    ),
                };
                steps.push(L2TraceStep {
                    stage: "source",
                    decision,
                    entries,
                });
            }
            let dst = frame.dst_mac;
            if t.verdict.is_port_security_drop() {
            } else if dst[0] & 1 == 1 {
                steps.push(L2TraceStep {
                    stage: "fdb",
                    decision: format!(
                        "destination {} is {}: flooded to the VLAN",
                        mac(dst),
                        if dst == [0xff; 6] {
                            "broadcast"
                        } else {
                            "multicast"
                        }
                    ),
                    entries: vec![],
                });
            } else if !matches!(t.verdict, L2Verdict::ToHost) {
                match find(dst) {
                    Some(e) => steps.push(L2TraceStep {
                        stage: "fdb",
                        decision: format!("destination {} is on {}", mac(dst), name(e.ifindex)),
                        entries: vec![fdb_words(e, name)],
                    }),
                    None => steps.push(L2TraceStep {
                        stage: "fdb",
                        decision: format!(
                            "destination {} is unknown (or aged out): flooded as unknown unicast",
                            mac(dst)
                        ),
                        entries: vec![format!(
                            "furrow_l2_fdb[cn {cn}, vid {vid}, {}] = (none)",
                            mac(dst)
                        )],
                    }),
                }
            }
        }
        let mut out_ports = Vec::new();
        let stage = match t.verdict {
            L2Verdict::Unicast | L2Verdict::DhcpSteered | L2Verdict::ToHost => {
                let o = t.out_ifindex.unwrap_or(0);
                out_ports.push(o);
                let how = match t.egress_tci {
                    Some(tci) => format!("tagged VLAN {}", tci & 0x0fff),
                    None => "untagged".into(),
                };
                let what = match t.verdict {
                    L2Verdict::ToHost => {
                        format!("to the node's own stack through {}", name(o))
                    }
                    L2Verdict::DhcpSteered => {
                        format!("DHCP request steered to the responder {} ({how})", name(o))
                    }
                    _ => format!("redirected to {} ({how})", name(o)),
                };
                ("forward", what)
            }
            L2Verdict::Flood | L2Verdict::FloodPass => {
                out_ports.extend(run.flood_to.iter().copied());
                let mut what = if run.flood_to.is_empty() && t.flood_copies > 0 {
                    // The trailer could not be appended (a frame near the
                    // 64 KiB limit): the count is still the program's.
                    format!("flooded to {} port(s) (list unavailable)", t.flood_copies)
                } else if run.flood_to.is_empty() {
                    "flooded, but no other member carries the VLAN here: nobody gets it".to_string()
                } else {
                    format!(
                        "flooded to {} port(s): {}",
                        run.flood_to.len(),
                        run.flood_to
                            .iter()
                            .map(|m| name(*m))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                if t.flood_mtu_drops > 0 {
                    what += &format!(
                        "; {} member(s) skipped (frame above their MTU)",
                        t.flood_mtu_drops
                    );
                }
                if t.flood_local_only_skips > 0 {
                    what += &format!(
                        "; {} member(s) skipped (local-only rule)",
                        t.flood_local_only_skips
                    );
                }
                if run.flood_to_host || matches!(t.verdict, L2Verdict::FloodPass) {
                    what += "; and to the node's own stack";
                }
                ("flood", what)
            }
            v if verdict_word(v) == "drop" => {
                let mut what = format!("dropped: {}", reason_words(v));
                if let Some(o) = t.out_ifindex {
                    what += &format!(" ({})", name(o));
                }
                ("drop", what)
            }
            v => ("pass", format!("to the kernel: {}", reason_words(v))),
        };
        steps.push(L2TraceStep {
            stage: stage.0,
            decision: stage.1,
            entries: vec![],
        });
        Ok(report(run, t, steps, out_ports))
    }
}

fn report(run: L2TraceRun, t: L2Trace, steps: Vec<L2TraceStep>, out: Vec<u32>) -> L2TraceReport {
    L2TraceReport {
        verdict: verdict_word(t.verdict),
        reason: reason_words(t.verdict).into(),
        vid: t.vid,
        out_ports: out,
        steps,
        run,
    }
}

/// The trailer a trace-mode flood appends: (deliveries, host copy).
fn parse_trailer(out: &[u8]) -> (Vec<u32>, bool) {
    if out.len() < TRAILER_LEN {
        return (vec![], false);
    }
    let t = &out[out.len() - TRAILER_LEN..];
    let word = |i: usize| u32::from_ne_bytes(t[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    if word(0) != TRAILER_MAGIC {
        return (vec![], false);
    }
    let n = (word(1) as usize).min(crate::L2_MAX_MEMBERS);
    let members = (0..n).map(|i| word(TRAILER_HDR / 4 + i)).collect();
    (members, word(2) & TRAILER_F_HOST_COPY != 0)
}

fn verdict_word(v: L2Verdict) -> &'static str {
    match v {
        L2Verdict::Unicast | L2Verdict::DhcpSteered => "forward",
        L2Verdict::ToHost => "to-host",
        L2Verdict::Flood | L2Verdict::FloodPass => "flood",
        L2Verdict::DropVlan
        | L2Verdict::DropHairpin
        | L2Verdict::DropMtu
        | L2Verdict::DropMalformed
        | L2Verdict::DropPolicy
        | L2Verdict::DropOther
        | L2Verdict::DropDhcpGuard
        | L2Verdict::DropLocalOnly
        | L2Verdict::DropNoResponder
        | L2Verdict::DropSpoofMac
        | L2Verdict::DropSpoofIpv4
        | L2Verdict::DropSpoofIpv6
        | L2Verdict::DropSpoofArp
        | L2Verdict::DropSpoofNd
        | L2Verdict::DropRaGuard => "drop",
        _ => "pass",
    }
}

fn reason_words(v: L2Verdict) -> &'static str {
    match v {
        L2Verdict::PassNotPort => "not a port of the switch",
        L2Verdict::PassOwnMac => "addressed to the node's own MAC",
        L2Verdict::PassNoVlan0 => "untagged and the node has no VLAN 0: the node's traffic",
        L2Verdict::PassHostCopy => "the copy for the node's stack",
        L2Verdict::PassLinkLocal => "IEEE 802.1D link-local destination",
        L2Verdict::PassNotHost => "not the node's VLAN-0 traffic",
        L2Verdict::Unicast => "known unicast",
        L2Verdict::ToHost => "to the node's own MAC on VLAN 0",
        L2Verdict::Flood => "broadcast, multicast or unknown unicast",
        L2Verdict::FloodPass => "flooded and passed to the kernel",
        L2Verdict::DropVlan => "VLAN filter (tag not allowed, or VLAN not on this node)",
        L2Verdict::DropHairpin => "the destination is behind the ingress port (hairpin)",
        L2Verdict::DropMtu => "larger than the egress port's MTU",
        L2Verdict::DropMalformed => "malformed frame",
        L2Verdict::DropPolicy => "IEEE 802.1D link-local frame from a VM",
        L2Verdict::DropOther => "internal error (tag push/pop failed)",
        L2Verdict::DhcpSteered => "DHCP request to this node's responder",
        L2Verdict::DropDhcpGuard => "DHCP server reply from an untrusted port (DHCP guard)",
        L2Verdict::DropLocalOnly => "local-only traffic would cross the uplink",
        L2Verdict::DropNoResponder => "the VLAN's DHCP responder is gone",
        L2Verdict::DropSpoofMac => "port security: the source MAC is not the port's (spoofed MAC)",
        L2Verdict::DropSpoofIpv4 => {
            "port security: the IPv4 source is not one of the port's addresses (spoofed IP)"
        }
        L2Verdict::DropSpoofIpv6 => {
            "port security: the IPv6 source is not one of the port's addresses (spoofed IP)"
        }
        L2Verdict::DropSpoofArp => {
            "port security: ARP claiming another MAC or address (spoofed ARP)"
        }
        L2Verdict::DropSpoofNd => {
            "port security: neighbour discovery claiming another MAC or address (spoofed ND)"
        }
        L2Verdict::DropRaGuard => {
            "port security: router advertisement from an untrusted port (RA guard)"
        }
    }
}

fn mode_words(m: &L2Mode) -> String {
    match m {
        L2Mode::Access { vid } => format!("access VLAN {vid}"),
        L2Mode::Untagged => "untagged (VLAN 0)".into(),
        L2Mode::Trunk { allowed } => format!(
            "trunk ({})",
            allowed
                .ranges()
                .iter()
                .map(|r| if r.start() == r.end() {
                    r.start().to_string()
                } else {
                    format!("{}-{}", r.start(), r.end())
                })
                .collect::<Vec<_>>()
                .join(",")
        ),
        L2Mode::Uplink { own_mac } => format!("uplink (node MAC {})", fmt_mac(*own_mac)),
    }
}

fn psec_words(ifindex: u32, ps: &crate::PortSecurity) -> Vec<String> {
    let mut macs = vec![fmt_mac(ps.mac)];
    macs.extend(ps.extra_macs.iter().map(|m| fmt_mac(*m)));
    let mut out = vec![format!(
        "furrow_l2_psec[{ifindex}] = {{macs [{}], ipv4 {}, ipv6 {}}}",
        macs.join(", "),
        if ps.enforce_ipv4 {
            "enforced"
        } else {
            "not checked"
        },
        if ps.enforce_ipv6 {
            "enforced"
        } else {
            "not checked"
        },
    )];
    for a in &ps.addresses {
        let map = if a.addr.is_ipv4() {
            "furrow_l2_psec_v4"
        } else {
            "furrow_l2_psec_v6"
        };
        out.push(format!(
            "{map}[{ifindex}, {}/{}] = {{{}}}",
            a.addr,
            a.prefix_len,
            fmt_mac(a.mac)
        ));
    }
    out
}

fn fdb_words(e: &FdbEntry, name: &dyn Fn(u32) -> String) -> String {
    format!(
        "furrow_l2_fdb[cn {}, vid {}, {}] = {{{}, {}}}",
        e.cluster_network,
        e.vid,
        fmt_mac(e.mac),
        name(e.ifindex),
        match e.age {
            None => "static".to_string(),
            Some(a) => format!("learned {:.1}s ago", a.as_secs_f64()),
        }
    )
}

/// `aa:bb:cc:dd:ee:ff`.
fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
