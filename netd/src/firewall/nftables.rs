//! nftables backend: builds nf_tables netlink messages directly (see
//! `netlink.rs`) and talks to the kernel of the calling thread's network
//! namespace.
//!
//! Atomicity of [`FirewallDriver::sync`]: one transaction that does
//! "create table if absent; delete table; create table, chain, sets,
//! elements, rules". nf_tables applies a transaction as a generation flip,
//! so packets see either the old ruleset or the new one, never a table
//! without its rule or set members. The new base chain's hook is registered
//! while the batch is prepared and the old one unregistered only after the
//! flip, so the NAT core always has one chain whose rules are live; flows
//! already masqueraded keep their conntrack binding regardless. The test
//! `sync_under_traffic_never_unmasks` checks this with live traffic (new
//! flows started during thousands of syncs: none left unmasqueraded).
//! Chosen over an in-place diff because it also removes anything foreign
//! in our table without first reading it. Cost: rule counters restart at
//! zero on every sync.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use ipnet::Ipv4Net;
use nix::errno::Errno;

use super::netlink::{
    self, attr, msg, Batch, BatchError, MsgWriter, NfSocket, RequestError, SocketPool,
    NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
};
use super::{
    set_name, validate_table_name, FirewallDriver, FirewallError, MasqueradeNetwork,
    MasqueradeRule, POSTROUTING_CHAIN,
};

// Kernel constants (linux/netfilter.h, linux/netfilter/nf_tables.h).
const NF_INET_POST_ROUTING: u32 = 4;
const NF_ACCEPT: u32 = 1;
/// `srcnat` priority: after DNAT/filter, where iptables' MASQUERADE sits.
const NF_IP_PRI_NAT_SRC: i32 = 100;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_NEQ: u32 = 1;
const NFT_LOOKUP_F_INV: u32 = 1;
/// nft's datatype id for `ipv4_addr` (so `nft list` prints the set type).
const NFT_TYPE_IPADDR: u32 = 7;
/// libnftnl udata tag for a rule comment (NFTNL_UDATA_RULE_COMMENT).
const UDATA_RULE_COMMENT: u8 = 0;
const IPV4_SADDR_OFFSET: u32 = 12;
const IPV4_DADDR_OFFSET: u32 = 16;
/// Elements per NEWSETELEM message: 16 bytes each keeps a message far below
/// the 64 KiB limit of the elements nest.
const ELEMS_PER_MSG: usize = 1024;

/// nftables implementation of [`FirewallDriver`].
pub struct NftablesDriver {
    table: String,
    /// Each call takes a fresh block of sequence numbers, so a stray reply
    /// left on a reused socket can never be taken for a later call's.
    seq: AtomicU32,
    sockets: SocketPool,
    /// Linux >= 6.3 has NFT_MSG_DESTROY* (delete; absent is success).
    /// Cleared on the first "unknown message" answer.
    destroy_supported: AtomicBool,
}

impl std::fmt::Debug for NftablesDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftablesDriver")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// What nfnetlink answers for a message type it does not know.
fn is_unsupported(e: &FirewallError) -> bool {
    matches!(e.errno(), Some(Errno::EINVAL | Errno::EOPNOTSUPP))
}

impl NftablesDriver {
    /// `table` must match `[A-Za-z][A-Za-z0-9_]*` (see
    /// [`super::table_name_for_instance`]). Does not touch the kernel.
    pub fn new(table: &str) -> Result<Self, FirewallError> {
        validate_table_name(table)?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(Self {
            table: table.to_string(),
            seq: AtomicU32::new(seed),
            sockets: SocketPool::new(),
            destroy_supported: AtomicBool::new(true),
        })
    }

    fn seq_base(&self) -> u32 {
        self.seq.fetch_add(0x1_0000, Ordering::Relaxed)
    }

    /// Runs `f` with a netlink socket of the calling thread's namespace.
    fn with_socket<T>(
        &self,
        f: impl FnOnce(&NfSocket) -> Result<T, FirewallError>,
    ) -> Result<T, FirewallError> {
        self.sockets.with(
            |source| FirewallError::Socket {
                table: self.table.clone(),
                op: "open NETLINK_NETFILTER socket",
                source,
            },
            |r| {
                !matches!(
                    r,
                    Err(FirewallError::Socket { .. } | FirewallError::Protocol { .. })
                )
            },
            f,
        )
    }

    fn batch_error(&self, e: BatchError) -> FirewallError {
        match e {
            BatchError::Io(op, source) => FirewallError::Socket {
                table: self.table.clone(),
                op,
                source,
            },
            BatchError::Op { what, err } => FirewallError::Kernel {
                table: self.table.clone(),
                what,
                errno: err.errno,
                message: err.message,
            },
            BatchError::Protocol(detail) => FirewallError::Protocol {
                table: self.table.clone(),
                what: "batch".into(),
                detail,
            },
        }
    }

    fn request_error(&self, what: impl Into<String>, e: RequestError) -> FirewallError {
        match e {
            RequestError::Io(op, source) => FirewallError::Socket {
                table: self.table.clone(),
                op,
                source,
            },
            RequestError::Kernel(err) => FirewallError::Kernel {
                table: self.table.clone(),
                what: what.into(),
                errno: err.errno,
                message: err.message,
            },
            RequestError::Protocol(detail) => FirewallError::Protocol {
                table: self.table.clone(),
                what: what.into(),
                detail,
            },
        }
    }

    fn set_not_found(&self, network: &str, set: &str) -> FirewallError {
        FirewallError::SetNotFound {
            table: self.table.clone(),
            network: network.to_string(),
            set: set.to_string(),
        }
    }

    /// A transaction of one element message (NEW/DEL/DESTROYSETELEM).
    fn element_op(
        &self,
        msg_type: u16,
        flags: u16,
        what: String,
        set: &str,
        ip: Ipv4Addr,
    ) -> Result<(), FirewallError> {
        let mut b = Batch::new(self.seq_base());
        b.push(msg_type, flags, what, |w| {
            w.attr_str(attr::SET_ELEM_LIST_TABLE, &self.table);
            w.attr_str(attr::SET_ELEM_LIST_SET, set);
            write_elements(w, &[ip]);
        });
        self.with_socket(|sock| b.run(sock).map_err(|e| self.batch_error(e)))
    }

    /// Whether the element is in the set (GETSETELEM for one key, no dump).
    /// ENOENT (element, set or table absent) is `false`.
    fn get_element(&self, sock: &NfSocket, set: &str, ip: Ipv4Addr) -> Result<bool, FirewallError> {
        let mut found = false;
        let r = netlink::request(
            sock,
            self.seq_base(),
            msg::GETSETELEM,
            0,
            |w| {
                w.attr_str(attr::SET_ELEM_LIST_TABLE, &self.table);
                w.attr_str(attr::SET_ELEM_LIST_SET, set);
                write_elements(w, &[ip]);
            },
            |attrs| {
                found |= parse_elements(attrs)?.contains(&ip);
                Ok(())
            },
        );
        match r {
            Ok(()) => Ok(found),
            Err(RequestError::Kernel(e)) if e.errno == Errno::ENOENT => Ok(false),
            Err(e) => Err(self.request_error(format!("get element {ip} of set {set}"), e)),
        }
    }

    fn destroy_unsupported(&self, e: &FirewallError) {
        tracing::debug!(
            table = %self.table,
            error = %e,
            "no NFT_MSG_DESTROY* (Linux < 6.3), deleting via GET + DEL"
        );
        self.destroy_supported.store(false, Ordering::Relaxed);
    }

    /// Test hook: behave as on a kernel without NFT_MSG_DESTROY*.
    #[cfg(test)]
    pub(super) fn force_no_destroy(&self) {
        self.destroy_supported.store(false, Ordering::Relaxed);
    }

    /// Test hook: pooled sockets that still hold unread replies.
    #[cfg(test)]
    pub(super) fn sockets_with_unread_data(&self) -> (usize, usize) {
        self.sockets.idle_with_pending_data()
    }

    /// Whether the set exists (GETSET, non-dump).
    fn set_exists(&self, sock: &NfSocket, set: &str) -> Result<bool, FirewallError> {
        let r = netlink::request(
            sock,
            self.seq_base(),
            msg::GETSET,
            0,
            |w| {
                w.attr_str(attr::SET_TABLE, &self.table);
                w.attr_str(attr::SET_NAME, set);
            },
            |_| Ok(()),
        );
        match r {
            Ok(()) => Ok(true),
            Err(RequestError::Kernel(e)) if e.errno == Errno::ENOENT => Ok(false),
            Err(e) => Err(self.request_error(format!("get set {set}"), e)),
        }
    }
}

impl FirewallDriver for NftablesDriver {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn table(&self) -> &str {
        &self.table
    }

    fn sync(&self, networks: &[(MasqueradeNetwork, Vec<Ipv4Addr>)]) -> Result<(), FirewallError> {
        // Validate everything before touching the kernel.
        let mut plan = Vec::with_capacity(networks.len());
        let mut seen = BTreeSet::new();
        for (net, members) in networks {
            let set = set_name(&net.name)?;
            if !seen.insert(net.name.as_str()) {
                return Err(FirewallError::InvalidConfig(format!(
                    "network {:?} listed twice",
                    net.name
                )));
            }
            if net.cluster_cidr.prefix_len() == 0 {
                return Err(FirewallError::InvalidConfig(format!(
                    "network {:?}: cluster CIDR {} covers everything; nothing would be masqueraded",
                    net.name, net.cluster_cidr
                )));
            }
            // Duplicates would make the EXCL element add fail.
            let members: Vec<Ipv4Addr> = members
                .iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            plan.push((net, set, members));
        }

        let t = self.table.as_str();
        let mut b = Batch::new(self.seq_base());
        // Create-if-absent first so the delete cannot fail with ENOENT.
        b.push(msg::NEWTABLE, NLM_F_CREATE, "ensure table exists", |w| {
            w.attr_str(attr::TABLE_NAME, t);
            w.attr_be32(attr::TABLE_FLAGS, 0);
        });
        b.push(msg::DELTABLE, 0, "delete previous table", |w| {
            w.attr_str(attr::TABLE_NAME, t);
        });
        b.push(
            msg::NEWTABLE,
            NLM_F_CREATE | NLM_F_EXCL,
            "create table",
            |w| {
                w.attr_str(attr::TABLE_NAME, t);
                w.attr_be32(attr::TABLE_FLAGS, 0);
            },
        );
        b.push(
            msg::NEWCHAIN,
            NLM_F_CREATE | NLM_F_EXCL,
            format!("create chain {POSTROUTING_CHAIN}"),
            |w| {
                w.attr_str(attr::CHAIN_TABLE, t);
                w.attr_str(attr::CHAIN_NAME, POSTROUTING_CHAIN);
                let h = w.nest_start(attr::CHAIN_HOOK);
                w.attr_be32(attr::HOOK_HOOKNUM, NF_INET_POST_ROUTING);
                w.attr_be32(attr::HOOK_PRIORITY, NF_IP_PRI_NAT_SRC as u32);
                w.nest_end(h);
                w.attr_be32(attr::CHAIN_POLICY, NF_ACCEPT);
                w.attr_str(attr::CHAIN_TYPE, "nat");
            },
        );
        for (i, (_, set, members)) in plan.iter().enumerate() {
            // Set ids let elements and rules refer to sets created in this
            // same transaction.
            let id = i as u32 + 1;
            b.push(
                msg::NEWSET,
                NLM_F_CREATE | NLM_F_EXCL,
                format!("create set {set}"),
                |w| {
                    w.attr_str(attr::SET_TABLE, t);
                    w.attr_str(attr::SET_NAME, set);
                    w.attr_be32(attr::SET_KEY_TYPE, NFT_TYPE_IPADDR);
                    w.attr_be32(attr::SET_KEY_LEN, 4);
                    w.attr_be32(attr::SET_ID, id);
                },
            );
            for chunk in members.chunks(ELEMS_PER_MSG) {
                let what = match chunk {
                    [one] => format!("add element {one} to set {set}"),
                    _ => format!(
                        "add {} elements ({}..{}) to set {set}",
                        chunk.len(),
                        chunk[0],
                        chunk[chunk.len() - 1]
                    ),
                };
                b.push(msg::NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, what, |w| {
                    w.attr_str(attr::SET_ELEM_LIST_TABLE, t);
                    w.attr_str(attr::SET_ELEM_LIST_SET, set);
                    w.attr_be32(attr::SET_ELEM_LIST_SET_ID, id);
                    write_elements(w, chunk);
                });
            }
        }
        for (i, (net, set, _)) in plan.iter().enumerate() {
            b.push(
                msg::NEWRULE,
                NLM_F_CREATE | NLM_F_APPEND | NLM_F_EXCL,
                format!("add masquerade rule for network {}", net.name),
                |w| {
                    w.attr_str(attr::RULE_TABLE, t);
                    w.attr_str(attr::RULE_CHAIN, POSTROUTING_CHAIN);
                    write_masquerade_exprs(w, set, i as u32 + 1, net.cluster_cidr);
                    w.attr(attr::RULE_USERDATA, &comment_udata(&net.name));
                },
            );
        }
        self.with_socket(|sock| b.run(sock).map_err(|e| self.batch_error(e)))?;
        tracing::debug!(
            table = t,
            networks = plan.len(),
            "nftables masquerade synced"
        );
        Ok(())
    }

    fn add_member(&self, network: &str, ip: Ipv4Addr) -> Result<(), FirewallError> {
        let set = set_name(network)?;
        // No NLM_F_EXCL: an existing element is success (idempotent ADD).
        match self.element_op(
            msg::NEWSETELEM,
            NLM_F_CREATE,
            format!("add element {ip} to set {set}"),
            &set,
            ip,
        ) {
            Err(e) if e.errno() == Some(Errno::ENOENT) => Err(self.set_not_found(network, &set)),
            r => r,
        }
    }

    fn remove_member(&self, network: &str, ip: Ipv4Addr) -> Result<(), FirewallError> {
        let set = set_name(network)?;
        let what = format!("delete element {ip} from set {set}");
        if self.destroy_supported.load(Ordering::Relaxed) {
            match self.element_op(msg::DESTROYSETELEM, 0, what.clone(), &set, ip) {
                // ENOENT here means the set or table is absent: the pod
                // leaves no trace either way, which is all DEL must ensure.
                Err(e) if e.errno() == Some(Errno::ENOENT) => return Ok(()),
                Err(e) if is_unsupported(&e) => self.destroy_unsupported(&e),
                r => return r,
            }
        }
        // Before Linux 6.3: DELSETELEM fails on an absent element, and a
        // failed transaction costs an RCU grace period (abort path), so
        // look first; a racing remove just makes the delete say ENOENT.
        if !self.with_socket(|sock| self.get_element(sock, &set, ip))? {
            return Ok(());
        }
        match self.element_op(msg::DELSETELEM, 0, what, &set, ip) {
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(()),
            r => r,
        }
    }

    fn has_member(&self, network: &str, ip: Ipv4Addr) -> Result<bool, FirewallError> {
        let set = set_name(network)?;
        self.with_socket(|sock| {
            if self.get_element(sock, &set, ip)? {
                return Ok(true);
            }
            // ENOENT is either "no such element" or "no such set/table";
            // ask once more to tell them apart (only on this path).
            if self.set_exists(sock, &set)? {
                Ok(false)
            } else {
                Err(self.set_not_found(network, &set))
            }
        })
    }

    fn members(&self, network: &str) -> Result<Vec<Ipv4Addr>, FirewallError> {
        let set = set_name(network)?;
        self.with_socket(|sock| {
            let mut out = Vec::new();
            let r = netlink::request(
                sock,
                self.seq_base(),
                msg::GETSETELEM,
                NLM_F_DUMP,
                |w| {
                    w.attr_str(attr::SET_ELEM_LIST_TABLE, &self.table);
                    w.attr_str(attr::SET_ELEM_LIST_SET, &set);
                },
                |attrs| {
                    out.extend(parse_elements(attrs)?);
                    Ok(())
                },
            );
            match r {
                Ok(()) => {
                    out.sort();
                    out.dedup();
                    Ok(out)
                }
                Err(RequestError::Kernel(e)) if e.errno == Errno::ENOENT => {
                    Err(self.set_not_found(network, &set))
                }
                Err(e) => Err(self.request_error(format!("list elements of set {set}"), e)),
            }
        })
    }

    fn masquerade_rule(&self, network: &str) -> Result<Option<MasqueradeRule>, FirewallError> {
        let set = set_name(network)?;
        self.with_socket(|sock| {
            let mut found = None;
            let r = netlink::request(
                sock,
                self.seq_base(),
                msg::GETRULE,
                NLM_F_DUMP,
                |w| {
                    // Kernel-side filter: only our table's postrouting chain.
                    w.attr_str(attr::RULE_TABLE, &self.table);
                    w.attr_str(attr::RULE_CHAIN, POSTROUTING_CHAIN);
                },
                |attrs| {
                    if found.is_none() {
                        found = parse_masquerade_rule(attrs, &self.table, &set);
                    }
                    Ok(())
                },
            );
            match r {
                Ok(()) => Ok(
                    found.map(|(cluster_cidr, handle, packets, bytes)| MasqueradeRule {
                        network: network.to_string(),
                        cluster_cidr,
                        handle,
                        packets,
                        bytes,
                    }),
                ),
                // Older kernels answer a dump filtered on a missing table/chain
                // with ENOENT instead of an empty dump.
                Err(RequestError::Kernel(e)) if e.errno == Errno::ENOENT => Ok(None),
                Err(e) => {
                    Err(self.request_error(format!("list rules of chain {POSTROUTING_CHAIN}"), e))
                }
            }
        })
    }

    fn teardown(&self) -> Result<(), FirewallError> {
        let run = |msg_type| {
            let mut b = Batch::new(self.seq_base());
            b.push(msg_type, 0, "delete table", |w| {
                w.attr_str(attr::TABLE_NAME, &self.table);
            });
            self.with_socket(|sock| b.run(sock).map_err(|e| self.batch_error(e)))
        };
        if self.destroy_supported.load(Ordering::Relaxed) {
            match run(msg::DESTROYTABLE) {
                Err(e) if is_unsupported(&e) => self.destroy_unsupported(&e),
                r => return r,
            }
        }
        match run(msg::DELTABLE) {
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(()),
            r => r,
        }
    }
}

fn write_elements(w: &mut MsgWriter, ips: &[Ipv4Addr]) {
    let list = w.nest_start(attr::SET_ELEM_LIST_ELEMENTS);
    for ip in ips {
        let e = w.nest_start(attr::LIST_ELEM);
        w.attr_data_value(attr::SET_ELEM_KEY, &ip.octets());
        w.nest_end(e);
    }
    w.nest_end(list);
}

fn write_expr(w: &mut MsgWriter, name: &str, body: impl FnOnce(&mut MsgWriter)) {
    let e = w.nest_start(attr::LIST_ELEM);
    w.attr_str(attr::EXPR_NAME, name);
    let d = w.nest_start(attr::EXPR_DATA);
    body(w);
    w.nest_end(d);
    w.nest_end(e);
}

/// `ip saddr @set ip daddr != cidr counter masquerade`, as nft compiles it.
pub(super) fn write_masquerade_exprs(w: &mut MsgWriter, set: &str, set_id: u32, cidr: Ipv4Net) {
    let cidr = cidr.trunc();
    let ex = w.nest_start(attr::RULE_EXPRESSIONS);
    let payload = |w: &mut MsgWriter, offset: u32| {
        write_expr(w, "payload", |w| {
            w.attr_be32(attr::PAYLOAD_DREG, NFT_REG_1);
            w.attr_be32(attr::PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
            w.attr_be32(attr::PAYLOAD_OFFSET, offset);
            w.attr_be32(attr::PAYLOAD_LEN, 4);
        })
    };
    payload(w, IPV4_SADDR_OFFSET);
    write_expr(w, "lookup", |w| {
        w.attr_str(attr::LOOKUP_SET, set);
        w.attr_be32(attr::LOOKUP_SET_ID, set_id);
        w.attr_be32(attr::LOOKUP_SREG, NFT_REG_1);
    });
    payload(w, IPV4_DADDR_OFFSET);
    if cidr.prefix_len() < 32 {
        write_expr(w, "bitwise", |w| {
            w.attr_be32(attr::BITWISE_SREG, NFT_REG_1);
            w.attr_be32(attr::BITWISE_DREG, NFT_REG_1);
            w.attr_be32(attr::BITWISE_LEN, 4);
            w.attr_data_value(attr::BITWISE_MASK, &cidr.netmask().octets());
            w.attr_data_value(attr::BITWISE_XOR, &[0; 4]);
        });
    }
    write_expr(w, "cmp", |w| {
        w.attr_be32(attr::CMP_SREG, NFT_REG_1);
        w.attr_be32(attr::CMP_OP, NFT_CMP_NEQ);
        w.attr_data_value(attr::CMP_DATA, &cidr.network().octets());
    });
    write_expr(w, "counter", |_| {});
    write_expr(w, "masq", |_| {});
    w.nest_end(ex);
}

/// libnftnl "udata" TLV carrying the rule comment nft displays.
fn comment_udata(text: &str) -> Vec<u8> {
    // nft limits comments to 128 bytes including the NUL.
    let text = &text.as_bytes()[..text.len().min(127)];
    let mut v = Vec::with_capacity(text.len() + 3);
    v.push(UDATA_RULE_COMMENT);
    v.push((text.len() + 1) as u8);
    v.extend_from_slice(text);
    v.push(0);
    v
}

/// Element keys of a NEWSETELEM message (dump or get reply).
fn parse_elements(attrs: &[u8]) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    let Some(list) = netlink::find(attrs, attr::SET_ELEM_LIST_ELEMENTS) else {
        return Ok(out);
    };
    for (ty, elem) in netlink::attrs(list) {
        if ty != attr::LIST_ELEM {
            continue;
        }
        let key = netlink::find(elem, attr::SET_ELEM_KEY)
            .and_then(netlink::data_value)
            .ok_or("set element without key")?;
        let octets: [u8; 4] = key
            .try_into()
            .map_err(|_| format!("set element key of {} bytes, expected 4", key.len()))?;
        out.push(Ipv4Addr::from(octets));
    }
    Ok(out)
}

/// The expressions the masquerade rule is made of, as dumped by the kernel.
#[derive(Debug)]
enum Expr {
    Payload { base: u32, offset: u32, len: u32 },
    Lookup { set: String, inverted: bool },
    Bitwise { mask: Vec<u8>, xor: Vec<u8> },
    Cmp { op: u32, data: Vec<u8> },
    Counter { packets: u64, bytes: u64 },
    Masq,
    Other,
}

fn parse_expr(elem: &[u8]) -> Expr {
    let name = netlink::find(elem, attr::EXPR_NAME).map(netlink::cstr);
    let data = netlink::find(elem, attr::EXPR_DATA).unwrap_or(&[]);
    let u32_of = |ty| netlink::find(data, ty).and_then(netlink::be32);
    let value_of = |ty| {
        netlink::find(data, ty)
            .and_then(netlink::data_value)
            .map(<[u8]>::to_vec)
    };
    let parsed = match name {
        Some(b"payload") => (|| {
            Some(Expr::Payload {
                base: u32_of(attr::PAYLOAD_BASE)?,
                offset: u32_of(attr::PAYLOAD_OFFSET)?,
                len: u32_of(attr::PAYLOAD_LEN)?,
            })
        })(),
        Some(b"lookup") => netlink::find(data, attr::LOOKUP_SET).map(|s| Expr::Lookup {
            set: String::from_utf8_lossy(netlink::cstr(s)).into_owned(),
            inverted: u32_of(attr::LOOKUP_FLAGS).unwrap_or(0) & NFT_LOOKUP_F_INV != 0,
        }),
        Some(b"bitwise") => (|| {
            Some(Expr::Bitwise {
                mask: value_of(attr::BITWISE_MASK)?,
                xor: value_of(attr::BITWISE_XOR)?,
            })
        })(),
        Some(b"cmp") => (|| {
            Some(Expr::Cmp {
                op: u32_of(attr::CMP_OP)?,
                data: value_of(attr::CMP_DATA)?,
            })
        })(),
        Some(b"counter") => Some(Expr::Counter {
            packets: netlink::find(data, attr::COUNTER_PACKETS)
                .and_then(netlink::be64)
                .unwrap_or(0),
            bytes: netlink::find(data, attr::COUNTER_BYTES)
                .and_then(netlink::be64)
                .unwrap_or(0),
        }),
        Some(b"masq") => Some(Expr::Masq),
        _ => None,
    };
    parsed.unwrap_or(Expr::Other)
}

/// If this NEWRULE message is `ip saddr @<set> ip daddr != <cidr> [counter]
/// masquerade` in our table: (cidr, handle, packets, bytes).
pub(super) fn parse_masquerade_rule(
    attrs: &[u8],
    table: &str,
    set: &str,
) -> Option<(Ipv4Net, u64, u64, u64)> {
    let name_is =
        |ty, want: &str| netlink::find(attrs, ty).map(netlink::cstr) == Some(want.as_bytes());
    // The kernel filters on table/chain, but do not rely on it.
    if !name_is(attr::RULE_TABLE, table) || !name_is(attr::RULE_CHAIN, POSTROUTING_CHAIN) {
        return None;
    }
    let handle = netlink::find(attrs, attr::RULE_HANDLE).and_then(netlink::be64)?;
    let exprs: Vec<Expr> = netlink::attrs(netlink::find(attrs, attr::RULE_EXPRESSIONS)?)
        .filter(|(ty, _)| *ty == attr::LIST_ELEM)
        .map(|(_, e)| parse_expr(e))
        .collect();

    let net_field = |e: &Expr, off: u32| {
        matches!(e, Expr::Payload { base, offset, len }
            if *base == NFT_PAYLOAD_NETWORK_HEADER && *offset == off && *len == 4)
    };
    let (e, rest) = exprs.split_first()?;
    if !net_field(e, IPV4_SADDR_OFFSET) {
        return None;
    }
    let (e, rest) = rest.split_first()?;
    if !matches!(e, Expr::Lookup { set: s, inverted: false } if s == set) {
        return None;
    }
    let (e, mut rest) = rest.split_first()?;
    if !net_field(e, IPV4_DADDR_OFFSET) {
        return None;
    }
    let mut mask = u32::MAX;
    if let Some((Expr::Bitwise { mask: m, xor }, r)) = rest.split_first() {
        if xor.iter().any(|b| *b != 0) {
            return None;
        }
        mask = u32::from_be_bytes(m.as_slice().try_into().ok()?);
        rest = r;
    }
    let prefix = mask.leading_ones();
    if mask != u32::MAX.checked_shl(32 - prefix).unwrap_or(0) {
        return None; // not a prefix mask
    }
    let (Expr::Cmp { op, data }, mut rest) = rest.split_first()? else {
        return None;
    };
    if *op != NFT_CMP_NEQ {
        return None;
    }
    let addr = Ipv4Addr::from(<[u8; 4]>::try_from(data.as_slice()).ok()?);
    let cidr = Ipv4Net::new(addr, prefix as u8).ok()?;
    if cidr.trunc().network() != addr {
        return None;
    }
    let (mut packets, mut bytes) = (0, 0);
    if let Some((
        Expr::Counter {
            packets: p,
            bytes: b,
        },
        r,
    )) = rest.split_first()
    {
        (packets, bytes) = (*p, *b);
        rest = r;
    }
    match rest {
        [Expr::Masq] => Some((cidr, handle, packets, bytes)),
        _ => None,
    }
}
