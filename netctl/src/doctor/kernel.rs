//! What this kernel can do for Furrow, found by trying it.
//!
//! Link probes (bridge vlan_filtering, 802.1Q, bonding) are netd's own
//! (`furrow_netd::probe`), and nftables NAT is probed with netd's own
//! nftables driver, both in a private network namespace created for the
//! probe: nothing appears on the node, and whatever the probes create
//! vanishes with the namespace. BPF is probed with raw bpf(2) calls (a
//! trivial program, a tcx link on the private namespace's loopback) and,
//! where bpffs is mounted, by loading netd's real datapath programs.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use serde::Serialize;

/// One probed kernel capability.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelFeature {
    /// Stable name: `bpf`, `bpfDatapath`, `tcx`, `bpffs`,
    /// `bridgeVlanFiltering`, `vlan8021q`, `bonding`, `nftablesNat`.
    pub name: String,
    pub available: bool,
    /// False when the probe could not run (e.g. not root): `available`
    /// then says nothing about the kernel.
    pub probed: bool,
    pub detail: String,
}

impl KernelFeature {
    fn new(name: &str, available: bool, detail: impl Into<String>) -> Self {
        KernelFeature {
            name: name.into(),
            available,
            probed: true,
            detail: detail.into(),
        }
    }
    fn unprobed(name: &str, detail: impl Into<String>) -> Self {
        KernelFeature {
            name: name.into(),
            available: false,
            probed: false,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelReport {
    /// The probes ran in a private network namespace.
    pub private_netns: bool,
    pub features: Vec<KernelFeature>,
}

impl KernelReport {
    pub fn get(&self, name: &str) -> Option<&KernelFeature> {
        self.features.iter().find(|f| f.name == name)
    }
    pub fn available(&self, name: &str) -> bool {
        self.get(name).is_some_and(|f| f.available)
    }
}

/// Runs every probe; never fails (a probe that cannot run says why).
pub fn probe() -> KernelReport {
    let bpffs = bpffs_feature();
    let bpffs_ok = bpffs.available;
    let handle = std::thread::Builder::new()
        .name("doctor-probe".into())
        .spawn(move || probe_in_private_netns(bpffs_ok));
    let (private_netns, mut features) = match handle.map(|h| h.join()) {
        Ok(Ok(r)) => r,
        _ => (
            false,
            vec![KernelFeature::unprobed(
                "bpf",
                "the probe thread failed to run",
            )],
        ),
    };
    features.push(bpffs);
    KernelReport {
        private_netns,
        features,
    }
}

/// On a thread of its own (it leaves the node's namespace and dies).
fn probe_in_private_netns(bpffs_ok: bool) -> (bool, Vec<KernelFeature>) {
    let mut out = Vec::new();
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        let why = format!(
            "not probed: creating a private network namespace failed ({e}); run netctl doctor as root"
        );
        for n in [
            "bridgeVlanFiltering",
            "vlan8021q",
            "bonding",
            "nftablesNat",
            "tcx",
        ] {
            out.push(KernelFeature::unprobed(n, why.clone()));
        }
        out.extend(bpf_features(bpffs_ok));
        return (false, out);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match rt {
        Ok(rt) => rt.block_on(async {
            match furrow_netd::netlink::Netlink::current() {
                Ok(nl) => {
                    let k = furrow_netd::probe::kernel_features(&nl).await;
                    out.push(KernelFeature::new(
                        "bridgeVlanFiltering",
                        k.bridge_vlan_filtering.available,
                        k.bridge_vlan_filtering.detail,
                    ));
                    out.push(KernelFeature::new(
                        "vlan8021q",
                        k.vlan_8021q.available,
                        k.vlan_8021q.detail,
                    ));
                    out.push(KernelFeature::new(
                        "bonding",
                        k.bonding.available,
                        k.bonding.detail,
                    ));
                }
                Err(e) => {
                    for n in ["bridgeVlanFiltering", "vlan8021q", "bonding"] {
                        out.push(KernelFeature::unprobed(
                            n,
                            format!("not probed: rtnetlink: {e}"),
                        ));
                    }
                }
            }
        }),
        Err(e) => {
            for n in ["bridgeVlanFiltering", "vlan8021q", "bonding"] {
                out.push(KernelFeature::unprobed(
                    n,
                    format!("not probed: no async runtime: {e}"),
                ));
            }
        }
    }
    out.push(nft_feature());
    let bpf = bpf_features(bpffs_ok);
    let bpf_ok = bpf[0].available;
    out.extend(bpf);
    out.push(if bpf_ok {
        tcx_feature()
    } else {
        KernelFeature::unprobed("tcx", "not probed: BPF programs cannot be loaded")
    });
    (true, out)
}

/// `bpf`, then `bpfDatapath` (only tried where a trivial program loads).
fn bpf_features(bpffs_ok: bool) -> Vec<KernelFeature> {
    let bpf = bpf_feature();
    let dp = if bpf.available {
        datapath_feature(bpffs_ok)
    } else {
        KernelFeature::unprobed("bpfDatapath", "not probed: BPF programs cannot be loaded")
    };
    vec![bpf, dp]
}

fn nft_feature() -> KernelFeature {
    use furrow_netd::firewall::{FirewallDriver, MasqueradeNetwork, NftablesDriver};
    let name = "nftablesNat";
    let drv = match NftablesDriver::new("furrow_doctor") {
        Ok(d) => d,
        Err(e) => return KernelFeature::unprobed(name, e.to_string()),
    };
    let net = MasqueradeNetwork {
        name: "doctor".into(),
        cluster_cidr: "10.255.0.0/16".parse().expect("valid prefix"),
    };
    let r = drv
        .sync(&[(net, vec![std::net::Ipv4Addr::new(10, 255, 0, 2)])])
        .and_then(|_| drv.masquerade_rule("doctor"));
    let _ = drv.teardown();
    match r {
        Ok(Some(_)) => KernelFeature::new(
            name,
            true,
            "a table with a masquerade rule was created over netlink and read back",
        ),
        Ok(None) => KernelFeature::new(
            name,
            false,
            "the masquerade rule was accepted but does not read back",
        ),
        Err(e) => KernelFeature::new(name, false, format!("creating a masquerade rule: {e}")),
    }
}

fn bpffs_feature() -> KernelFeature {
    let name = "bpffs";
    match nix::sys::statfs::statfs("/sys/fs/bpf") {
        Ok(st) => {
            #[allow(clippy::unnecessary_cast)]
            let t = st.filesystem_type().0 as i64;
            if t == 0xcafe_4a11 {
                KernelFeature::new(name, true, "bpffs is mounted at /sys/fs/bpf")
            } else {
                KernelFeature::new(
                    name,
                    false,
                    "/sys/fs/bpf is not a bpffs mount (netd mounts it when it starts)",
                )
            }
        }
        Err(e) => KernelFeature::new(name, false, format!("/sys/fs/bpf: {e}")),
    }
}

// enum bpf_cmd / bpf_prog_type / bpf_attach_type (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: attr is a zero-padded repr(C) prefix of union bpf_attr for
    // `cmd`; the kernel reads at most size_of::<T>() bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: the kernel returned a new fd nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }
}

/// Loads `r0 = 0; exit` as a tc classifier.
fn load_trivial() -> std::io::Result<OwnedFd> {
    // struct bpf_insn: code, dst/src regs, off, imm. BPF_ALU64|BPF_MOV|BPF_K
    // = 0xb7, BPF_JMP|BPF_EXIT = 0x95.
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = b"GPL\0";
    let mut name = [0u8; 16];
    name[..6].copy_from_slice(b"doctor");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    bpf(BPF_PROG_LOAD, &mut attr)
}

fn bpf_feature() -> KernelFeature {
    match load_trivial() {
        Ok(_) => KernelFeature::new(
            "bpf",
            true,
            "bpf(2) loads a tc classifier program (BPF_PROG_LOAD)",
        ),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => KernelFeature::new(
            "bpf",
            false,
            "the kernel has no bpf(2) system call (CONFIG_BPF_SYSCALL)",
        ),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => KernelFeature::unprobed(
            "bpf",
            format!("BPF_PROG_LOAD: {e} (needs root: CAP_BPF and CAP_NET_ADMIN)"),
        ),
        Err(e) => KernelFeature::new("bpf", false, format!("BPF_PROG_LOAD: {e}")),
    }
}

/// tcx (Linux 6.6+): a BPF link attached to the loopback of the private
/// namespace, gone with it.
fn tcx_feature() -> KernelFeature {
    let prog = match load_trivial() {
        Ok(p) => p,
        Err(e) => return KernelFeature::unprobed("tcx", format!("no program to attach: {e}")),
    };
    let mut attr = LinkCreateAttr {
        prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
        target_ifindex: 1,
        attach_type: BPF_TCX_INGRESS,
        ..Default::default()
    };
    match bpf(BPF_LINK_CREATE, &mut attr) {
        Ok(_) => KernelFeature::new(
            "tcx",
            true,
            "a tcx ingress link can be created (the eBPF datapath attaches through pinned tcx links)",
        ),
        Err(e) => KernelFeature::new(
            "tcx",
            false,
            format!(
                "creating a tcx link: {e} (tcx needs Linux 6.6; the eBPF datapath attaches through tcx links)"
            ),
        ),
    }
}

/// netd's real programs: loads them (the verifier accepts them on this
/// kernel) with their maps pinned in a throwaway directory, then removes it.
fn datapath_feature(bpffs_ok: bool) -> KernelFeature {
    let name = "bpfDatapath";
    if !bpffs_ok {
        return KernelFeature::unprobed(
            name,
            "not probed: bpffs is not mounted at /sys/fs/bpf (netd mounts it and pins its maps there)",
        );
    }
    let root = Path::new("/sys/fs/bpf/furrow");
    // Leftovers of doctors that died mid-probe.
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("doctor-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = root.join(format!("doctor-{}", std::process::id()));
    let r = furrow_ebpf::Datapath::open(furrow_ebpf::DatapathConfig::new(&dir));
    let out = match r {
        Ok(dp) => {
            let n = dp.status().programs.len();
            let _ = dp.destroy();
            KernelFeature::new(
                name,
                true,
                format!("the kernel's verifier accepts Furrow's {n} datapath programs"),
            )
        }
        Err(e) => KernelFeature::new(name, false, format!("loading Furrow's programs: {e}")),
    };
    let _ = std::fs::remove_dir_all(&dir);
    out
}
