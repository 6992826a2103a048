//! `POST /v1/trace` (`netctl trace`): runs the loaded switch program on a
//! crafted frame in trace mode (`Datapath::l2_trace`, BPF_PROG_TEST_RUN:
//! nothing is learned, counted or sent) and names the ports in its steps.

use std::collections::BTreeMap;

use furrow_api::error::code;
use furrow_api::wire_trace::{TraceFrame, TracePort, TraceRequest, TraceResponse, TraceStep};
use furrow_api::ApiError;
use furrow_ebpf::L2TraceFrame;

use super::backend::{BackendKind, Realized};
use super::VlanDriver;
use crate::drivers::common::kernel;
use crate::ports::{self, AnyPort, VlanPortRecord};
use crate::resources::store_error;

fn pod_label(r: &VlanPortRecord) -> String {
    match (&r.pod.namespace, &r.pod.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.clone(),
        _ => r.container_id.chars().take(12).collect(),
    }
}

/// Whether `r` is the port of VM (or pod) `vm`: `name`, `namespace/name`,
/// or a KubeVirt launcher pod `virt-launcher-<vm>-<hash>`.
fn is_vm(r: &VlanPortRecord, vm: &str) -> bool {
    let (ns, name) = match vm.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, vm),
    };
    if ns.is_some() && r.pod.namespace.as_deref() != ns {
        return false;
    }
    let Some(pod) = r.pod.name.as_deref() else {
        return false;
    };
    pod == name
        || pod
            .strip_prefix("virt-launcher-")
            .and_then(|rest| rest.strip_prefix(name))
            .is_some_and(|rest| {
                rest.strip_prefix('-')
                    .is_some_and(|h| !h.is_empty() && !h.contains('-'))
            })
}

impl VlanDriver {
    /// `POST /v1/trace`.
    pub async fn trace(&self, req: TraceRequest) -> Result<TraceResponse, ApiError> {
        let recs: Vec<VlanPortRecord> =
            ports::list_all(self.node.store.as_ref(), &self.node.cfg.node)
                .await
                .map_err(store_error)?
                .into_iter()
                .filter_map(|p| match p {
                    AnyPort::Vlan(v) => Some(v),
                    AnyPort::Management(_) => None,
                })
                .collect();
        let rec = select_port(&recs, &req)?;
        let links = self.node.host.links().await.map_err(kernel)?;
        let ifnames: BTreeMap<u32, String> = links.into_iter().map(|l| (l.index, l.name)).collect();
        let by_name: BTreeMap<&str, u32> = ifnames.iter().map(|(i, n)| (n.as_str(), *i)).collect();
        let Some(ifindex) = by_name
            .get(rec.host_ifname.as_str())
            .copied()
            .or(rec.host_ifindex)
        else {
            return Err(ApiError::new(
                code::NOT_FOUND,
                format!("the port's host interface {} is gone", rec.host_ifname),
            ));
        };

        // Names of every port the steps may mention.
        let mut named: BTreeMap<u32, TracePort> = BTreeMap::new();
        let port = |ifindex: u32, kind: &str, owner: Option<String>| TracePort {
            ifindex,
            ifname: ifnames.get(&ifindex).cloned().unwrap_or_default(),
            kind: kind.into(),
            owner,
        };
        for r in &recs {
            if let Some(i) = by_name
                .get(r.host_ifname.as_str())
                .copied()
                .or(r.host_ifindex)
            {
                named.insert(i, port(i, "vm", Some(pod_label(r))));
            }
        }
        {
            let st = self.state.lock().await;
            let cn = st.nets.get(&rec.cluster_network).ok_or_else(|| {
                ApiError::new(
                    code::NOT_FOUND,
                    format!(
                        "cluster network {} of the port is not set up on this node",
                        rec.cluster_network
                    ),
                )
            })?;
            if cn.backend != BackendKind::Ebpf {
                return Err(ApiError::new(
                    code::NOT_AVAILABLE,
                    format!(
                        "cluster network {} uses the kernel bridge backend: trace needs the eBPF switch",
                        cn.name
                    ),
                ));
            }
            for c in st.nets.values() {
                if let Some(Realized::Ebpf { nics, .. }) = &c.realized {
                    for (_, idx, _) in nics {
                        named.insert(*idx, port(*idx, "uplink", Some(c.name.clone())));
                    }
                }
            }
            for np in st.node_ports.values() {
                named.insert(
                    np.switch_index,
                    port(np.switch_index, "node", Some(np.spec.id.clone())),
                );
            }
        }
        let label = |i: u32| -> TracePort {
            named
                .get(&i)
                .cloned()
                .unwrap_or_else(|| port(i, "unknown", None))
        };
        let labels: BTreeMap<u32, String> = named.iter().map(|(i, p)| (*i, p.label())).collect();

        let src_mac = match (req.src_mac, rec.mac) {
            (Some(m), _) | (None, Some(m)) => m,
            (None, None) => {
                return Err(ApiError::new(
                    code::INVALID_CONFIG,
                    "srcMac: the port has no known MAC; give one",
                ))
            }
        };
        if let Some(v) = req.vlan {
            if v > 4094 {
                return Err(ApiError::new(
                    code::INVALID_CONFIG,
                    format!("vlan: {v} is not a VLAN id (0-4094)"),
                ));
            }
        }
        let frame = L2TraceFrame {
            src_mac: src_mac.0,
            dst_mac: req.dst_mac.0,
            tag: req.vlan,
            src_ip: req.src_ip,
            dst_ip: req.dst_ip,
        };
        let f = frame.clone();
        let report = self
            .node
            .try_with_datapath(move |dp| {
                let name = |i: u32| {
                    labels
                        .get(&i)
                        .cloned()
                        .unwrap_or_else(|| format!("ifindex {i}"))
                };
                dp.l2_trace(ifindex, &f, &name)
            })
            .await
            .ok_or_else(|| ApiError::new(code::NOT_AVAILABLE, "this netd runs no datapath"))?
            .map_err(|e| ApiError::internal(format!("tracing on the datapath: {e}")))?;
        Ok(TraceResponse {
            node: self.node.cfg.node.clone(),
            cluster_network: rec.cluster_network.clone(),
            port: label(ifindex),
            frame: TraceFrame {
                src_mac,
                dst_mac: req.dst_mac,
                vlan: req.vlan,
                src_ip: req.src_ip,
                dst_ip: req.dst_ip,
            },
            verdict: report.verdict.into(),
            reason: report.reason,
            vlan: report.vid,
            out_ports: report.out_ports.iter().map(|i| label(*i)).collect(),
            steps: report
                .steps
                .into_iter()
                .map(|s| TraceStep {
                    stage: s.stage.into(),
                    decision: s.decision,
                    entries: s.entries,
                })
                .collect(),
        })
    }
}

/// The VLAN port the request names.
fn select_port<'a>(
    recs: &'a [VlanPortRecord],
    req: &TraceRequest,
) -> Result<&'a VlanPortRecord, ApiError> {
    let bad = |m: String| ApiError::new(code::INVALID_CONFIG, m);
    let found: Vec<&VlanPortRecord> = match (&req.port, &req.vm) {
        (Some(p), None) => recs
            .iter()
            .filter(|r| r.container_id == p.container_id && r.ifname == p.ifname)
            .collect(),
        (None, Some(vm)) => recs
            .iter()
            .filter(|r| is_vm(r, vm))
            .filter(|r| req.ifname.as_ref().is_none_or(|i| &r.ifname == i))
            .collect(),
        (Some(_), Some(_)) => return Err(bad("port, vm: give one of them, not both".into())),
        (None, None) => return Err(bad("port, vm: give the port or the VM to trace from".into())),
    };
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(ApiError::new(
            code::NOT_FOUND,
            match (&req.port, &req.vm) {
                (Some(p), _) => {
                    format!("no VLAN port {}/{} on this node", p.container_id, p.ifname)
                }
                (_, Some(vm)) => format!("no VLAN port of VM {vm} on this node"),
                _ => unreachable!("checked above"),
            },
        )),
        many => Err(bad(format!(
            "vm: {} has several VLAN ports ({}): pick one with ifname",
            req.vm.as_deref().unwrap_or_default(),
            many.iter()
                .map(|r| r.ifname.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ns: &str, pod: &str) -> VlanPortRecord {
        let mut r: VlanPortRecord = serde_json::from_value(serde_json::json!({
            "node": "n", "networkName": "net", "kind": "vlan", "clusterNetwork": "cn",
            "vlan": 100, "containerId": "c", "ifname": "net1", "hostIfname": "h",
            "mtu": 1500, "state": "ready", "createdAt": 0
        }))
        .unwrap_or_else(|e| panic!("record: {e}"));
        r.pod.namespace = Some(ns.into());
        r.pod.name = Some(pod.into());
        r
    }

    #[test]
    fn vm_names_match_pods_and_launchers() {
        let r = rec("default", "virt-launcher-web-abcde");
        assert!(is_vm(&r, "web"));
        assert!(is_vm(&r, "default/web"));
        assert!(is_vm(&r, "virt-launcher-web-abcde"));
        assert!(!is_vm(&r, "other/web"));
        assert!(!is_vm(&r, "we"));
        assert!(!is_vm(&rec("default", "virt-launcher-web-db-abcde"), "web"));
    }
}
