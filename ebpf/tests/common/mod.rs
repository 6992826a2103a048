//! Fixtures shared by the integration tests: private network namespaces
//! held by an fd (nothing in the root netns is touched), unique bpffs pin
//! directories removed on drop (also on panic), and frame builders.
#![allow(dead_code)]

use std::{
    fs::File,
    os::fd::{AsRawFd, OwnedFd},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{setns, unshare, CloneFlags};

pub mod l2;
pub mod lab;

/// A private network namespace. It lives as long as this value holds its fd.
pub struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    pub fn new() -> Self {
        let fd = std::thread::spawn(|| {
            // unshare on a throwaway thread: only that thread moves.
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            OwnedFd::from(File::open("/proc/thread-self/ns/net").expect("open netns"))
        })
        .join()
        .expect("netns thread");
        let ns = NetNs { fd };
        ns.ip("link set lo up");
        // No IPv6 autoconfiguration chatter (RS, MLD, DAD) to disturb the
        // counters the tests assert on.
        for key in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6");
            ns.run(|| {
                if std::path::Path::new(&path).exists() {
                    std::fs::write(&path, "1").unwrap_or_else(|e| panic!("{path}: {e}"));
                }
            });
        }
        ns
    }

    /// Runs `f` on a thread inside this namespace and returns its result
    /// (panics propagate).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.fd, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
        })
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// A path `ip link set ... netns PATH` accepts.
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }

    /// Runs a command inside the namespace (children inherit the thread's netns).
    pub fn cmd(&self, prog: &str, args: &[&str]) -> std::process::Output {
        self.run(|| {
            Command::new(prog)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("running {prog}: {e}"))
        })
    }

    /// `ip ARGS` inside the namespace; panics on failure.
    pub fn ip(&self, args: &str) -> String {
        let argv: Vec<&str> = args.split_whitespace().collect();
        let out = self.cmd("ip", &argv);
        assert!(
            out.status.success(),
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ifindex(&self, ifname: &str) -> u32 {
        let name = ifname.to_owned();
        self.run(move || nix::net::if_::if_nametoindex(name.as_str()).expect("if_nametoindex"))
    }

    pub fn mac(&self, ifname: &str) -> [u8; 6] {
        let out = self.ip(&format!("-o link show dev {ifname}"));
        let s = out
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC in {out}"));
        parse_mac(s)
    }

    /// Writes a sysctl of this namespace (/proc/sys/net resolves per netns
    /// of the writing thread).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_owned();
        self.run(move || std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}")));
    }

    /// A veth pair `host` (here) / `peer` moved into `pod` and renamed
    /// `pod_ifname`, both ends left down.
    pub fn veth_to(&self, host: &str, peer: &str, pod: &NetNs, pod_ifname: &str) {
        self.ip(&format!("link add {host} type veth peer name {peer}"));
        self.ip(&format!("link set {peer} netns {}", pod.path()));
        if peer != pod_ifname {
            pod.ip(&format!("link set {peer} name {pod_ifname}"));
        }
    }
}

pub fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("mac byte"))
        .collect();
    v.try_into().expect("6-byte MAC")
}

/// One cls_bpf filter as `tc -j filter show` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcFilter {
    pub kind: String,
    pub pref: u64,
    pub protocol: String,
    pub handle: String,
    pub prog_id: u64,
    pub direct_action: bool,
}

impl NetNs {
    /// The filters (not the per-priority entries) on the `hook` ("ingress"
    /// or "egress") of `ifname`, from `tc -j filter show` in this netns.
    pub fn tc_filters(&self, ifname: &str, hook: &str) -> Vec<TcFilter> {
        let out = self.cmd("tc", &["-j", "filter", "show", "dev", ifname, hook]);
        assert!(
            out.status.success(),
            "tc filter show dev {ifname} {hook}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("tc -j output");
        v.as_array()
            .expect("tc -j: an array")
            .iter()
            .filter_map(|f| {
                let o = f.get("options")?;
                Some(TcFilter {
                    kind: f["kind"].as_str().unwrap_or_default().to_owned(),
                    pref: f["pref"].as_u64().expect("pref"),
                    protocol: f["protocol"].as_str().unwrap_or_default().to_owned(),
                    handle: o["handle"].as_str().unwrap_or_default().to_owned(),
                    prog_id: o["prog"]["id"].as_u64().unwrap_or(0),
                    direct_action: o["direct-action"].as_bool().unwrap_or(false),
                })
            })
            .collect()
    }

    /// Program ids of the bpf filters on (ingress, egress) of `ifname`.
    pub fn tc_prog_ids(&self, ifname: &str) -> (Vec<u64>, Vec<u64>) {
        let ids = |hook| {
            self.tc_filters(ifname, hook)
                .iter()
                .filter(|f| f.kind == "bpf")
                .map(|f| f.prog_id)
                .collect()
        };
        (ids("ingress"), ids("egress"))
    }

    /// What runs on the tcx (ingress, egress) hooks of `ifname`, in order.
    pub fn tcx(
        &self,
        ifname: &str,
    ) -> (Vec<furrow_ebpf::TcxProgram>, Vec<furrow_ebpf::TcxProgram>) {
        let idx = self.ifindex(ifname);
        self.run(|| {
            (
                furrow_ebpf::tcx_programs(idx, false).unwrap(),
                furrow_ebpf::tcx_programs(idx, true).unwrap(),
            )
        })
    }

    /// Every program on the (ingress, egress) hooks of `ifname`: tcx
    /// programs in order, then classic bpf filters.
    pub fn hook_prog_ids(&self, ifname: &str) -> (Vec<u64>, Vec<u64>) {
        let (ti, te) = self.tcx(ifname);
        let (mut ci, mut ce) = self.tc_prog_ids(ifname);
        let mut i: Vec<u64> = ti.iter().map(|p| p.prog_id.into()).collect();
        let mut e: Vec<u64> = te.iter().map(|p| p.prog_id.into()).collect();
        i.append(&mut ci);
        e.append(&mut ce);
        (i, e)
    }

    /// Link ids on the tcx (ingress, egress) hooks of `ifname`.
    pub fn tcx_link_ids(&self, ifname: &str) -> (Vec<u32>, Vec<u32>) {
        let (i, e) = self.tcx(ifname);
        (
            i.iter().map(|p| p.link_id).collect(),
            e.iter().map(|p| p.link_id).collect(),
        )
    }
}

/// A unique bpffs pin directory, removed on drop.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/furrow-test-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // Maps go with their last reference (filters die with their netns).
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;

pub fn eth_header(dst: [u8; 6], src: [u8; 6], proto: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&proto.to_be_bytes());
    f
}

/// RFC 1071 checksum of `data` (0 when `data` holds a valid checksum).
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv4 + UDP frame with a valid header checksum. `options`
/// (a multiple of 4 bytes) go after the 20-byte header.
pub fn ipv4_udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = 5 + options.len() / 4;
    let udp_len = 8 + payload.len();
    let tot_len = ihl * 4 + udp_len;
    let mut ip = vec![
        0x40 | ihl as u8,
        0,
        (tot_len >> 8) as u8,
        tot_len as u8,
        0x12,
        0x34,
        0x40, // DF
        0,
        ttl,
        17,
        0,
        0,
    ];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(options);
    let csum = inet_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());

    let mut f = eth_header(dst_mac, src_mac, ETH_P_IP);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&7u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed for IPv4)
    f.extend_from_slice(payload);
    f
}

/// A unique scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("furrow-test-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process started inside a namespace, stopped (SIGTERM, then
/// SIGKILL) and reaped on drop, also when a test panics.
pub struct Proc {
    child: Option<Child>,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends `sig` and waits up to 5 s for the process to exit (SIGKILL
    /// after that). Returns whether it exited by itself.
    pub fn stop(&mut self, sig: i32) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(child.id() as i32, sig) };
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM);
    }
}

impl NetNs {
    /// Starts `prog args` inside the namespace, stdout and stderr appended
    /// to `log`.
    pub fn spawn(&self, prog: &str, args: &[String], log: &std::path::Path) -> Proc {
        let out = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        let child = self.run(|| {
            Command::new(prog)
                .args(args)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {prog}: {e}"))
        });
        Proc {
            child: Some(child),
            name: prog.to_owned(),
        }
    }
}

/// A switch fixture: a node namespace holding host veths `names` (up;
/// their peers `p<name>`, up, in a second namespace), a datapath on a
/// fresh pin directory, and the veths' ifindexes in the order given.
pub fn veth_switch(names: &[&str]) -> (NetNs, NetNs, PinDir, furrow_ebpf::Datapath, Vec<u32>) {
    let node = NetNs::new();
    let peers = NetNs::new();
    for n in names {
        let peer = format!("p{n}");
        node.veth_to(n, &peer, &peers, &peer);
        node.ip(&format!("link set {n} up"));
        peers.ip(&format!("link set {peer} up"));
    }
    let pins = PinDir::new();
    let dp = furrow_ebpf::Datapath::open(furrow_ebpf::DatapathConfig::new(&pins.0)).unwrap();
    let idx = names.iter().map(|n| node.ifindex(n)).collect();
    (node, peers, pins, dp, idx)
}
