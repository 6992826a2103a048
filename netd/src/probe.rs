//! What this kernel can do, found by trying it: some kernels accept a
//! request and silently ignore it (this machine's bridge accepts
//! vlan_filtering but does not store it), so every probe reads back.

pub use furrow_api::wire::{Feature, KernelFeatures};

use crate::netlink::{Netlink, NetlinkError};

fn probe_name(what: &str) -> String {
    // Unique per process and probe; 15 characters at most.
    format!("fwp{}{:x}", what, std::process::id() & 0xfffff)
}

fn unsupported(e: &NetlinkError) -> bool {
    matches!(e.errno(), Some(libc::EOPNOTSUPP) | Some(libc::EAFNOSUPPORT))
}

async fn cleanup(nl: &Netlink, name: &str) {
    if let Ok(Some(l)) = nl.link_by_name(name).await {
        let _ = nl.delete_link(l.index).await;
    }
}

pub async fn bridge_vlan_filtering(nl: &Netlink) -> Feature {
    let name = probe_name("br");
    cleanup(nl, &name).await;
    let r = async {
        let idx = nl.create_bridge(&name, true, None).await?;
        nl.bridge_vlan_filtering(idx).await
    }
    .await;
    cleanup(nl, &name).await;
    match r {
        Ok(Some(true)) => Feature {
            available: true,
            detail: "a bridge created with vlan_filtering=1 reads back 1".into(),
        },
        Ok(_) => Feature {
            available: false,
            detail: "a bridge created with vlan_filtering=1 reads back 0 (the kernel accepts but does not store it)".into(),
        },
        Err(e) => Feature {
            available: false,
            detail: format!("creating a bridge failed: {e}"),
        },
    }
}

pub async fn vlan_8021q(nl: &Netlink) -> Feature {
    let (a, b, v) = (probe_name("a"), probe_name("b"), probe_name("v"));
    cleanup(nl, &a).await;
    let r = async {
        let (ia, _) = nl.create_veth_pair(&a, &b, 1500).await?;
        nl.create_vlan(&v, ia, 100).await
    }
    .await;
    cleanup(nl, &v).await;
    cleanup(nl, &a).await;
    match r {
        Ok(_) => Feature {
            available: true,
            detail: "an 802.1Q device can be created".into(),
        },
        Err(e) if unsupported(&e) => Feature {
            available: false,
            detail: format!("creating an 802.1Q device: {e} (no 8021q support)"),
        },
        Err(e) => Feature {
            available: false,
            detail: format!("creating an 802.1Q device: {e}"),
        },
    }
}

pub async fn bonding(nl: &Netlink) -> Feature {
    let name = probe_name("bo");
    cleanup(nl, &name).await;
    let r = nl
        .create_bond(
            &name,
            netlink_packet_route::link::BondMode::ActiveBackup,
            100,
            None,
        )
        .await;
    cleanup(nl, &name).await;
    match r {
        Ok(_) => Feature {
            available: true,
            detail: "an active-backup bond can be created".into(),
        },
        Err(e) => Feature {
            available: false,
            detail: format!("creating a bond: {e}"),
        },
    }
}

pub async fn kernel_features(nl: &Netlink) -> KernelFeatures {
    KernelFeatures {
        bridge_vlan_filtering: bridge_vlan_filtering(nl).await,
        vlan_8021q: vlan_8021q(nl).await,
        bonding: bonding(nl).await,
    }
}
