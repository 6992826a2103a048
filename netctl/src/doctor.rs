//! `netctl doctor`: what is wrong with Furrow on this node, and what to do.
//!
//! Works without netd: the kernel is probed directly (`kernel.rs`), and
//! netd's answers, when it answers, add checks of the store, the datapath,
//! uplinks, MTUs along each network, duplicate MACs and IPs, and ports
//! whose network namespace is gone (`checks.rs`). Links are read over
//! rtnetlink in netctl's own network namespace: run doctor in the node's
//! namespace (where netd runs).

mod checks;
mod dfprobe;
mod kernel;

use serde::Serialize;

use furrow_api::client::{Client, ClientError};

pub use kernel::KernelReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warn,
    Error,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warn => "warn",
            Severity::Error => "error",
        }
    }
}

/// One finding. `check` is a stable identifier (`kernel.bpf`, `netd`,
/// `store`, `uplink`, `mtu`, `duplicateMac`, ...); `subject` names what it
/// is about (a network, a NIC, a port).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub check: String,
    pub severity: Severity,
    pub subject: String,
    /// What was found (or what is wrong).
    pub message: String,
    /// What to do about it; empty when nothing.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub advice: String,
}

/// A backend Furrow can run a network on, and whether it can here.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendReport {
    /// `ebpf` (the eBPF datapath: management network and the 802.1Q
    /// switch) or `bridge` (kernel bridge with VLAN filtering).
    pub name: String,
    pub usable: bool,
    /// False when the kernel could not be probed (not root): `usable`
    /// then says nothing.
    pub probed: bool,
    /// Whether netd uses it now; absent without netd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<bool>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub ok: usize,
    pub warn: usize,
    pub error: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// netd's socket that was asked.
    pub socket: String,
    pub netd_reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netd_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub kernel: KernelReport,
    pub backends: Vec<BackendReport>,
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.summary.error > 0
    }
}

pub(crate) struct Findings(Vec<Finding>);

impl Findings {
    pub(crate) fn push(
        &mut self,
        check: &str,
        severity: Severity,
        subject: impl Into<String>,
        message: impl Into<String>,
        advice: impl Into<String>,
    ) {
        self.0.push(Finding {
            check: check.into(),
            severity,
            subject: subject.into(),
            message: message.into(),
            advice: advice.into(),
        });
    }
}

/// Runs every check.
pub fn run(client: &Client, peers: &[std::net::Ipv4Addr]) -> Report {
    let kernel = kernel::probe();
    let mut f = Findings(Vec::new());
    kernel_findings(&kernel, &mut f);

    let mut report = Report {
        socket: client.path().display().to_string(),
        netd_reachable: false,
        netd_version: None,
        node: None,
        backends: Vec::new(),
        kernel,
        findings: Vec::new(),
        summary: Summary {
            ok: 0,
            warn: 0,
            error: 0,
        },
    };
    let mut in_use: Option<(bool, bool)> = None;
    match client.get::<furrow_api::wire::NodeStatus>("/v1/status") {
        Ok(status) => {
            report.netd_reachable = true;
            report.netd_version = Some(status.version.clone());
            report.node = Some(status.node.clone());
            f.push(
                "netd",
                Severity::Ok,
                client.path().display().to_string(),
                format!(
                    "netd {} (API v{}) answers for node {} (instance {}, pid {})",
                    status.version, status.api_version, status.node, status.instance, status.pid
                ),
                "",
            );
            in_use = Some(checks::netd_checks(client, &status, peers, &mut f));
        }
        Err(e) => {
            let (sev, msg, advice) = match &e {
                ClientError::Unreachable { source, .. } => (
                    Severity::Warn,
                    format!("netd is not reachable ({source}); only the kernel was checked"),
                    "start netd (systemctl start furrow-netd, or the furrow DaemonSet), or point netctl at it with --socket / --instance".to_string(),
                ),
                ClientError::VersionMismatch { .. } => (
                    Severity::Error,
                    e.to_string(),
                    "install netctl and netd from the same release".to_string(),
                ),
                ClientError::PermissionDenied { .. } => (
                    Severity::Warn,
                    format!("{e}; only the kernel was checked"),
                    "run netctl doctor as root".to_string(),
                ),
                _ => (
                    Severity::Error,
                    format!("netd answers, but not as expected: {e}"),
                    "check netd's log; restart netd".to_string(),
                ),
            };
            f.push(
                "netd",
                sev,
                client.path().display().to_string(),
                msg,
                advice,
            );
        }
    }
    report.backends = backends(&report.kernel, in_use);
    for b in &report.backends {
        let (sev, advice) = match (b.name.as_str(), b.usable, b.in_use) {
            (_, true, _) => (Severity::Ok, String::new()),
            (_, false, _) if !b.probed => (Severity::Warn, "run netctl doctor as root".into()),
            (_, false, Some(true)) => (
                Severity::Error,
                "netd uses a backend this kernel cannot run: switch the cluster network's spec.backend to auto or ebpf".into(),
            ),
            ("ebpf", false, _) if report.kernel.available("bridgeVlanFiltering") => (
                Severity::Warn,
                "VLAN networks can use backend: bridge (the kernel bridge has VLAN filtering); the management network needs BPF: use a kernel with CONFIG_BPF_SYSCALL and tcx (Linux 6.6+)".into(),
            ),
            ("ebpf", false, _) => (
                Severity::Error,
                "Furrow needs BPF here (no kernel bridge VLAN filtering either): use a kernel with CONFIG_BPF_SYSCALL and CONFIG_NET_XGRESS (Linux 6.6+, for tcx links), and run netd as root".into(),
            ),
            _ => (
                Severity::Warn,
                "nothing to do while the eBPF backend is usable (backend: auto chooses it); for Harvester's bridge layout use a kernel with CONFIG_BRIDGE_VLAN_FILTERING".into(),
            ),
        };
        let state = match (b.usable, b.in_use) {
            (true, Some(true)) => "usable, in use",
            (true, Some(false)) => "usable, not in use",
            (true, None) => "usable",
            (false, Some(true)) => "NOT usable, yet in use",
            (false, _) if !b.probed => "unknown (not probed)",
            (false, _) => "not usable",
        };
        f.push(
            "backend",
            sev,
            b.name.clone(),
            format!("{} backend: {state} ({})", b.name, b.detail),
            advice,
        );
    }
    report.findings = f.0;
    for x in &report.findings {
        match x.severity {
            Severity::Ok => report.summary.ok += 1,
            Severity::Warn => report.summary.warn += 1,
            Severity::Error => report.summary.error += 1,
        }
    }
    report
}

fn kernel_findings(k: &KernelReport, f: &mut Findings) {
    for feat in &k.features {
        let check = format!("kernel.{}", feat.name);
        let (sev, msg, advice): (Severity, String, String) = if !feat.probed {
            (
                Severity::Warn,
                if feat.detail.starts_with("not probed") {
                    feat.detail.clone()
                } else {
                    format!("not probed: {}", feat.detail)
                },
                "run netctl doctor as root".into(),
            )
        } else if feat.available {
            (
                Severity::Ok,
                format!("available ({})", feat.detail),
                String::new(),
            )
        } else {
            let (sev, advice) = match feat.name.as_str() {
                "bridgeVlanFiltering" => (
                    Severity::Warn,
                    "the kernel-bridge backend is unavailable; Furrow uses the eBPF 802.1Q switch instead (backend: auto or ebpf). For backend: bridge, use a kernel with CONFIG_BRIDGE_VLAN_FILTERING",
                ),
                "vlan8021q" => (
                    Severity::Warn,
                    "802.1Q devices are missing; Furrow's eBPF switch tags and untags VLANs itself and needs none. The kernel-bridge backend needs CONFIG_VLAN_8021Q",
                ),
                "bonding" => (
                    Severity::Warn,
                    "no bonding; the eBPF backend does active-backup over several NICs itself. The kernel-bridge backend needs CONFIG_BONDING",
                ),
                "tcx" => (
                    Severity::Error,
                    "the eBPF datapath attaches its programs through tcx links (pinned, so restarts and upgrades are hitless): use Linux 6.6 or later with CONFIG_NET_XGRESS; VLAN networks can use backend: bridge meanwhile",
                ),
                "bpffs" => (
                    Severity::Warn,
                    "netd mounts bpffs itself at start; to mount it now: mount -t bpf bpf /sys/fs/bpf",
                ),
                "nftablesNat" => (
                    Severity::Error,
                    "the management network masquerades pods with nftables: use a kernel with CONFIG_NF_TABLES, CONFIG_NFT_NAT and CONFIG_NFT_MASQ",
                ),
                "bpf" | "bpfDatapath" => (
                    Severity::Error,
                    "the eBPF datapath cannot run: use a kernel with CONFIG_BPF_SYSCALL and CONFIG_NET_XGRESS (Linux 6.6+, for tcx links) (and run as root)",
                ),
                _ => (Severity::Warn, ""),
            };
            (
                sev,
                format!("missing ({})", feat.detail),
                advice.to_string(),
            )
        };
        f.push(&check, sev, feat.name.clone(), msg, advice);
    }
}

/// Which backends the kernel allows, and which netd uses (`in_use`:
/// (eBPF in use, bridge in use) when netd answered).
fn backends(k: &KernelReport, in_use: Option<(bool, bool)>) -> Vec<BackendReport> {
    let bpf = k.get("bpf");
    let dp = k.get("bpfDatapath");
    let ebpf_probed = bpf.is_some_and(|b| b.probed);
    let (ebpf_usable, ebpf_detail) = match (bpf, dp) {
        (Some(b), _) if b.probed && !b.available => (false, b.detail.clone()),
        (_, Some(d)) if d.probed => (d.available, d.detail.clone()),
        (Some(b), _) if b.probed => (
            true,
            format!(
                "{}; the datapath's own programs were not loaded ({})",
                b.detail,
                dp.map(|d| d.detail.as_str()).unwrap_or("")
            ),
        ),
        _ => (false, "BPF could not be probed (run as root)".to_string()),
    };
    // The datapath attaches through tcx links: BPF alone is not enough.
    let (ebpf_usable, ebpf_detail) = match k.get("tcx") {
        Some(t) if ebpf_usable && t.probed && !t.available => (
            false,
            format!("{ebpf_detail}; but tcx links are missing: {}", t.detail),
        ),
        _ => (ebpf_usable, ebpf_detail),
    };
    let bridge = k.get("bridgeVlanFiltering");
    let bridge_usable = bridge.is_some_and(|b| b.available);
    let bridge_detail = match bridge {
        Some(b) if b.available => {
            let bond = if k.available("bonding") {
                "with bonding"
            } else {
                "without bonding (one NIC only)"
            };
            format!("bridge VLAN filtering works, {bond}")
        }
        Some(b) if b.probed => format!("bridge VLAN filtering: {}", b.detail),
        Some(_) => "bridge VLAN filtering not probed (run as root)".into(),
        None => "not probed".into(),
    };
    vec![
        BackendReport {
            name: "ebpf".into(),
            usable: ebpf_usable,
            probed: ebpf_probed,
            in_use: in_use.map(|u| u.0),
            detail: ebpf_detail,
        },
        BackendReport {
            name: "bridge".into(),
            usable: bridge_usable,
            probed: bridge.is_some_and(|b| b.probed),
            in_use: in_use.map(|u| u.1),
            detail: if ebpf_usable && !bridge_usable && bridge.is_some_and(|b| b.probed) {
                format!("{bridge_detail}; falls back to the eBPF switch")
            } else {
                bridge_detail
            },
        },
    ]
}

/// The human-readable form.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "netd:    {}\n",
        match (&r.netd_version, &r.node) {
            (Some(v), Some(n)) => format!("{v} on node {n} ({})", r.socket),
            _ => format!("not reachable at {}", r.socket),
        }
    ));
    out.push_str(&format!(
        "Kernel ({}):\n",
        if r.kernel.private_netns {
            "probed in a private network namespace"
        } else {
            "NOT fully probed: no private network namespace"
        }
    ));
    let mut t = crate::table::Table::new(&["FEATURE", "AVAILABLE", "DETAIL"]);
    for f in &r.kernel.features {
        t.row(vec![
            f.name.clone(),
            if !f.probed {
                "unknown"
            } else if f.available {
                "yes"
            } else {
                "no"
            }
            .into(),
            f.detail.clone(),
        ]);
    }
    out.push_str(&t.render());
    out.push_str("\nBackends:\n");
    let mut t = crate::table::Table::new(&["BACKEND", "USABLE", "IN-USE", "DETAIL"]);
    for b in &r.backends {
        t.row(vec![
            b.name.clone(),
            if b.usable {
                "yes"
            } else if b.probed {
                "no"
            } else {
                "unknown"
            }
            .into(),
            match b.in_use {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }
            .into(),
            b.detail.clone(),
        ]);
    }
    out.push_str(&t.render());
    out.push_str("\nFindings:\n");
    let mut sorted: Vec<&Finding> = r.findings.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    for f in sorted {
        out.push_str(&format!(
            "  [{:<5}] {:<24} {}: {}\n",
            f.severity.as_str(),
            f.check,
            f.subject,
            f.message
        ));
        if !f.advice.is_empty() && f.severity != Severity::Ok {
            out.push_str(&format!("          -> {}\n", f.advice));
        }
    }
    out.push_str(&format!(
        "\n{} ok, {} warnings, {} errors\n",
        r.summary.ok, r.summary.warn, r.summary.error
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(features: &[(&str, bool)]) -> KernelReport {
        KernelReport {
            private_netns: true,
            features: features
                .iter()
                .map(|(n, a)| kernel::KernelFeature {
                    name: n.to_string(),
                    available: *a,
                    probed: true,
                    detail: "test".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn without_bridge_vlan_filtering_the_ebpf_switch_is_the_fallback() {
        let k = report(&[
            ("bpf", true),
            ("bpfDatapath", true),
            ("bridgeVlanFiltering", false),
        ]);
        let b = backends(&k, None);
        assert!(b[0].usable && b[0].name == "ebpf");
        assert!(!b[1].usable && b[1].detail.contains("falls back to the eBPF switch"));
        let mut f = Findings(Vec::new());
        kernel_findings(&k, &mut f);
        let w: Vec<_> =
            f.0.iter()
                .filter(|x| x.severity == Severity::Warn)
                .collect();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].check, "kernel.bridgeVlanFiltering");
        assert!(w[0].advice.contains("eBPF"));
    }

    #[test]
    fn without_bpf_the_datapath_is_an_error() {
        let k = report(&[("bpf", false), ("bridgeVlanFiltering", false)]);
        let b = backends(&k, None);
        assert!(!b[0].usable && !b[1].usable);
        let mut f = Findings(Vec::new());
        kernel_findings(&k, &mut f);
        assert!(f
            .0
            .iter()
            .any(|x| x.check == "kernel.bpf" && x.severity == Severity::Error));
    }
}
