//! The floating-VIP failover benchmark (issue 6): how long a client that
//! probes a VIP every 10 ms goes unanswered when the VIP's holder is lost
//! or stopped, for Furrow and, as the anchor in the same run, keepalived.
//!
//! - Furrow: three nodes sharing a real 3-member etcd at its default
//!   settings (the lab's control-plane host), netd at its default VIP
//!   timings, one VirtualIP in ARP mode on the uplinks.
//! - keepalived (Debian, VRRPv3, otherwise defaults: advert_int 1 s, GARP
//!   defaults, preemption): three more nodes on the same fabric, one
//!   keepalived each, the same kind of VIP on the same interface.
//!   Priorities 150/100/50 (keepalived's default is 100: the node that
//!   takes over runs at the default); equal priorities would let both
//!   backups become master at the same instant.
//!
//! Failure actions, each trial starting from a steady state (one known
//! holder, every node up, the client answered by the holder alone):
//! - node loss: the holder's daemon SIGKILLed (keepalived: its whole
//!   process group, parent and VRRP child) and its uplink set down at the
//!   same moment (one `kill` and one ioctl on a socket opened beforehand
//!   in the node's namespace). Then the node comes back as after a reboot
//!   (no VIP address left on it, uplink up, daemon started) and the next
//!   trial waits for a steady state again;
//! - graceful stop (Furrow): netd gets SIGTERM; it is started again after
//!   the measurement.
//!
//! The probe: ICMP echo to the VIP from the lab's external host, a fresh
//! echo with its own sequence number every 10 ms from a raw socket (so the
//! external host's kernel routes and resolves the neighbour as for any
//! client; nothing is flushed, the client's neighbour cache follows the
//! gratuitous ARPs). Replies are read from a packet socket on the same
//! interface, which tells which node (source MAC) answered. Failover time
//! = from the failure action to the first reply, from a node other than
//! the old holder, to a probe sent after the action.
//!
//! BGP (a second lab, `scenario::vip::BgpLab`: three nodes, BIRD 2 as
//! their router): the VIP's route as BIRD sees it, polled every few ms
//! with birdc: appearing after the VirtualIP is applied, withdrawn after
//! it is deleted, and moving to another node after the holder's SIGTERM.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};

use crate::lab::EXTERNAL_IP;
use crate::{names, Lab, Netns};

/// Furrow's VIP and keepalived's (same fabric, one at a time measured).
pub const FURROW_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const KEEPALIVED_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
/// How often the client probes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// A trial whose VIP has not answered again by then counts as missed.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// After the first reply, how long losses are still counted (flapping).
const AFTER_WINDOW: Duration = Duration::from_secs(1);
/// A steady state: every probe of this window answered by the holder alone.
const STEADY_WINDOW: Duration = Duration::from_millis(500);
/// How long a steady state may take to come back after a trial.
const STEADY_TIMEOUT: Duration = Duration::from_secs(40);
/// keepalived priorities of its three nodes (the first is master in a
/// steady state, the second, at keepalived's default, takes over).
const KEEPALIVED_PRIORITIES: [u8; 3] = [150, 100, 50];
/// keepalived restarted on a returning node: the longest it takes to
/// settle (a backup's master-down interval is 3 x advert_int + skew <
/// 4 s; the returning top-priority node then preempts).
const KEEPALIVED_SETTLE: Duration = Duration::from_secs(5);
const UPLINK: &str = "uplink0";
/// After a steady state, each failure waits a random time in [0, this):
/// failures strike at any phase of the daemons' timers (keepalived's
/// 1 s adverts, netd's 100 ms heartbeats), not at one tied to when the
/// previous trial restarted them.
const PHASE_JITTER: Duration = Duration::from_millis(1000);

/// The BGP scenarios, as BIRD sees the VIP's route.
pub const BGP_SCENARIOS: [&str; 3] = [
    "BGP appear (applied)",
    "BGP withdraw (deleted)",
    "BGP move (SIGTERM)",
];
/// The BGP VIP.
const BGP_VIP: &str = "198.19.100.10";

// ---------------------------------------------------------------------
// The probe

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const PAYLOAD_MAGIC: &[u8; 8] = b"FURROWVB";
const ETH_P_IP: u16 = 0x0800;
/// Linux's ICMP_FILTER option of raw ICMP sockets (SOL_RAW).
const ICMP_FILTER: libc::c_int = 1;

/// One reply the client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The probe's number (its index in [`ProbeLog::sent`]).
    pub seq: u64,
    pub at: Instant,
    /// Source MAC of the reply: the node that answered.
    pub mac: [u8; 6],
}

/// Everything the probe sent and got, in time order.
#[derive(Debug, Default)]
pub struct ProbeLog {
    /// When probe `n` was sent.
    pub sent: Vec<Instant>,
    pub replies: Vec<Reply>,
    pub error: Option<String>,
}

/// What one failure did to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Failure action to the first reply from another node.
    pub failover: Duration,
    pub new_mac: [u8; 6],
    /// Replies from the old holder to probes sent after the action.
    pub old_after: usize,
    /// Probes sent after the action answered by two nodes.
    pub dup: usize,
    /// Probes lost within [`AFTER_WINDOW`] after the first good one.
    pub lost_after: usize,
}

impl ProbeLog {
    /// The first reply from a node other than `old` to a probe sent at or
    /// after `t0`.
    pub fn first_reply_after(&self, t0: Instant, old: [u8; 6]) -> Option<Reply> {
        let s0 = self.sent.partition_point(|t| *t < t0) as u64;
        let r0 = self.replies.partition_point(|r| r.at < t0);
        self.replies[r0..]
            .iter()
            .find(|r| r.seq >= s0 && r.mac != old)
            .copied()
    }

    /// Whether every probe sent in the `window` before `now` (less a grace
    /// for replies in flight) was answered, and by `mac` alone.
    pub fn steady(&self, mac: [u8; 6], now: Instant, window: Duration) -> bool {
        let grace = Duration::from_millis(50);
        let Some(end) = now.checked_sub(grace) else {
            return false;
        };
        let Some(start) = end.checked_sub(window) else {
            return false;
        };
        let first = self.sent.partition_point(|t| *t < start);
        let last = self.sent.partition_point(|t| *t <= end);
        let expected = (window.as_micros() / PROBE_INTERVAL.as_micros()) as usize;
        // The probe itself must have kept up (a stalled probe proves nothing).
        if last - first < expected * 8 / 10 {
            return false;
        }
        let mut answered = vec![false; last - first];
        let r0 = self.replies.partition_point(|r| r.at < start);
        for r in &self.replies[r0..] {
            let s = r.seq as usize;
            if s < first || s >= last {
                continue;
            }
            if r.mac != mac {
                return false;
            }
            answered[s - first] = true;
        }
        answered.iter().all(|a| *a)
    }

    /// The outcome of a failure at `t0` that ended with `first`, looking
    /// `after` past it.
    pub fn outcome(&self, t0: Instant, old: [u8; 6], first: Reply, after: Duration) -> Outcome {
        let s0 = self.sent.partition_point(|t| *t < t0);
        let first_sent = self.sent[first.seq as usize];
        let until = self.sent.partition_point(|t| *t < first_sent + after);
        let r0 = self.replies.partition_point(|r| r.at < t0);
        let mut macs: std::collections::HashMap<u64, Vec<[u8; 6]>> = Default::default();
        for r in &self.replies[r0..] {
            if (r.seq as usize) < s0 || (r.seq as usize) >= until {
                continue;
            }
            let m = macs.entry(r.seq).or_default();
            if !m.contains(&r.mac) {
                m.push(r.mac);
            }
        }
        let old_after = macs.values().filter(|m| m.contains(&old)).count();
        let dup = macs.values().filter(|m| m.len() > 1).count();
        let lost_after = (first.seq..until as u64)
            .filter(|s| !macs.contains_key(s))
            .count();
        Outcome {
            failover: first.at.saturating_duration_since(t0),
            new_mac: first.mac,
            old_after,
            dup,
            lost_after,
        }
    }
}

/// The client: ICMP echo to `target` every [`PROBE_INTERVAL`] from a
/// thread inside the client's namespace, until dropped.
pub struct Probe {
    pub target: Ipv4Addr,
    log: Arc<Mutex<ProbeLog>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct ProbeSockets {
    send: OwnedFd,
    recv: OwnedFd,
}

fn last_os_error(what: &str) -> anyhow::Error {
    anyhow!("{what}: {}", std::io::Error::last_os_error())
}

impl ProbeSockets {
    /// Opens both sockets in the calling thread's namespace.
    fn open(ifname: &str) -> anyhow::Result<ProbeSockets> {
        // SAFETY: plain libc calls on values we own; every fd is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if raw < 0 {
            return Err(last_os_error("raw ICMP socket"));
        }
        let send = unsafe { OwnedFd::from_raw_fd(raw) };
        // Sending only: the packet socket reads the replies.
        let all: u32 = !0;
        if unsafe {
            libc::setsockopt(
                send.as_raw_fd(),
                libc::SOL_RAW,
                ICMP_FILTER,
                (&all as *const u32).cast(),
                4,
            )
        } < 0
        {
            return Err(last_os_error("ICMP_FILTER"));
        }
        let recv = crate::arp::packet_socket(ifname, ETH_P_IP)?;
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(recv.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
            return Err(last_os_error("O_NONBLOCK on the packet socket"));
        }
        Ok(ProbeSockets { send, recv })
    }
}

/// RFC 1071 checksum.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request: identifier `id`, the probe number in the payload (the
/// 16-bit sequence field wraps within a long run).
pub fn echo_request(id: u16, seq: u64) -> Vec<u8> {
    let mut p = vec![ICMP_ECHO_REQUEST, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&(seq as u16).to_be_bytes());
    p.extend_from_slice(PAYLOAD_MAGIC);
    p.extend_from_slice(&seq.to_be_bytes());
    let c = inet_checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// The probe number and source MAC of an Ethernet frame if it is an echo
/// reply from `target` to one of our probes (identifier `id`).
pub fn parse_reply(frame: &[u8], target: Ipv4Addr, id: u16) -> Option<(u64, [u8; 6])> {
    if frame.len() < 34 || frame[12..14] != ETH_P_IP.to_be_bytes() {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 1 || ip[12..16] != target.octets() {
        return None;
    }
    let icmp = ip.get(ihl..)?;
    if icmp.len() < 24
        || icmp[0] != ICMP_ECHO_REPLY
        || icmp[4..6] != id.to_be_bytes()
        || &icmp[8..16] != PAYLOAD_MAGIC
    {
        return None;
    }
    let seq = u64::from_be_bytes(icmp[16..24].try_into().ok()?);
    let mac: [u8; 6] = frame[6..12].try_into().ok()?;
    Some((seq, mac))
}

impl Probe {
    /// Starts probing `target` out of `ifname` in `ns`.
    pub fn start(ns: &Netns, ifname: &str, target: Ipv4Addr) -> anyhow::Result<Probe> {
        let file = File::open(ns.path())?;
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let ifname = ifname.to_string();
        let (log2, stop2) = (log.clone(), stop.clone());
        static IDS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let id = (std::process::id() as u16) ^ IDS.fetch_add(0x5a5, Ordering::SeqCst);
        let thread = std::thread::Builder::new()
            .name("vip-probe".into())
            .spawn(move || {
                if let Err(e) = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
                    let _ = tx.send(Err(anyhow!("setns: {e}")));
                    return;
                }
                let socks = match ProbeSockets::open(&ifname) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(()));
                if let Err(e) = probe_loop(&socks, target, id, &log2, &stop2) {
                    log2.lock().expect("probe log").error = Some(format!("{e:#}"));
                }
            })?;
        rx.recv_timeout(Duration::from_secs(10))
            .context("the probe thread did not start")??;
        Ok(Probe {
            target,
            log,
            stop,
            thread: Some(thread),
        })
    }

    /// Looks at the log (briefly: the probe waits meanwhile).
    pub fn with_log<T>(&self, f: impl FnOnce(&ProbeLog) -> T) -> T {
        f(&self.log.lock().expect("probe log"))
    }

    fn check(&self) -> anyhow::Result<()> {
        if let Some(e) = &self.log.lock().expect("probe log").error {
            bail!("the probe of {} failed: {e}", self.target);
        }
        Ok(())
    }

    /// Waits for the first reply from a node other than `old` to a probe
    /// sent at or after `t0`.
    pub fn wait_failover(
        &self,
        t0: Instant,
        old: [u8; 6],
        timeout: Duration,
    ) -> anyhow::Result<Option<Reply>> {
        loop {
            self.check()?;
            if let Some(r) = self.with_log(|l| l.first_reply_after(t0, old)) {
                return Ok(Some(r));
            }
            if t0.elapsed() > timeout {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn probe_loop(
    socks: &ProbeSockets,
    target: Ipv4Addr,
    id: u16,
    log: &Mutex<ProbeLog>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut dst: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    dst.sin_family = libc::AF_INET as libc::sa_family_t;
    dst.sin_addr.s_addr = u32::from_ne_bytes(target.octets());
    let mut next = Instant::now();
    let mut seq: u64 = 0;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            let pkt = echo_request(id, seq);
            log.lock().expect("probe log").sent.push(Instant::now());
            // SAFETY: a valid buffer and address. Errors (no route or
            // neighbour for a moment, full queue) are lost probes, as for
            // any client.
            unsafe {
                libc::sendto(
                    socks.send.as_raw_fd(),
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    libc::MSG_DONTWAIT,
                    (&dst as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            seq += 1;
            next += PROBE_INTERVAL;
            if next < now {
                // Fell behind (the machine stalled): keep the pace, no burst.
                next = now + PROBE_INTERVAL;
            }
        }
        let wait = next.saturating_duration_since(Instant::now());
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        let mut pfd = libc::pollfd {
            fd: socks.recv.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            bail!("ppoll: {e}");
        }
        if n == 0 {
            continue;
        }
        loop {
            // SAFETY: reading into our buffer.
            let got = unsafe {
                libc::recv(
                    socks.recv.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if got <= 0 {
                break;
            }
            let at = Instant::now();
            if let Some((s, mac)) = parse_reply(&buf[..got as usize], target, id) {
                if s < seq {
                    log.lock()
                        .expect("probe log")
                        .replies
                        .push(Reply { seq: s, at, mac });
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Cutting a node's uplink at the moment its daemon is killed

/// A socket opened inside a node's namespace: interface flags changed
/// through it apply there, from any thread, in one system call.
pub struct LinkSwitch {
    fd: OwnedFd,
}

impl LinkSwitch {
    pub fn open(ns: &Netns) -> anyhow::Result<LinkSwitch> {
        let fd = ns.enter(|| -> anyhow::Result<OwnedFd> {
            // SAFETY: a plain socket, owned at once.
            let raw =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if raw < 0 {
                return Err(last_os_error("socket"));
            }
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        })??;
        Ok(LinkSwitch { fd })
    }

    /// `ip link set <ifname> up|down`, as one ioctl pair.
    pub fn set(&self, ifname: &str, up: bool) -> anyhow::Result<()> {
        // SAFETY: ifreq is plain data; the name fits (checked).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if ifname.len() >= req.ifr_name.len() {
            bail!("interface name {ifname} too long");
        }
        for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
            return Err(last_os_error("SIOCGIFFLAGS"));
        }
        unsafe {
            let up_flag = libc::IFF_UP as libc::c_short;
            if up {
                req.ifr_ifru.ifru_flags |= up_flag;
            } else {
                req.ifr_ifru.ifru_flags &= !up_flag;
            }
        }
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
            return Err(last_os_error("SIOCSIFFLAGS"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------
// keepalived

/// One keepalived (parent and VRRP child, in their own process group)
/// inside a node namespace; killed whole on drop.
pub struct Keepalived {
    child: Option<Child>,
    dir: PathBuf,
    pub started: Instant,
}

/// keepalived's configuration: VRRPv3, everything else at its defaults
/// but the priority.
pub fn keepalived_conf(router_id: &str, priority: u8, vip: Ipv4Addr) -> String {
    format!(
        "global_defs {{
  router_id {router_id}
  vrrp_version 3
}}
vrrp_instance furrow_bench {{
  interface {UPLINK}
  virtual_router_id 51
  priority {priority}
  virtual_ipaddress {{
    {vip}
  }}
}}
"
    )
}

impl Keepalived {
    pub fn start(
        ns: &Netns,
        dir: &Path,
        name: &str,
        priority: u8,
        vip: Ipv4Addr,
    ) -> anyhow::Result<Keepalived> {
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("keepalived.conf");
        std::fs::write(&conf, keepalived_conf(name, priority, vip))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("keepalived.log"))?;
        let mut cmd = ns.cmd("keepalived");
        cmd.args([
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
        ])
        .arg("--use-file")
        .arg(&conf)
        .arg("--pid")
        .arg(dir.join("keepalived.pid"))
        .arg("--vrrp_pid")
        .arg(dir.join("vrrp.pid"))
        .arg("--checkers_pid")
        .arg(dir.join("checkers.pid"))
        .arg("--bfd_pid")
        .arg(dir.join("bfd.pid"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own group: node loss kills parent and VRRP child at
        // once (the child alone, orphaned, would step down
        // gracefully with priority 0).
        .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec. Dies with this process even if Drop never runs;
        // its VRRP child follows its parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .context("starting keepalived (Debian package keepalived)")?;
        Ok(Keepalived {
            child: Some(child),
            dir: dir.to_path_buf(),
            started: Instant::now(),
        })
    }

    /// SIGKILL to the whole process group, without waiting: the moment of
    /// a node loss.
    pub fn kill_now(&self) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Kills everything and reaps the parent.
    pub fn kill(&mut self) {
        self.kill_now();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The VRRP child is in the group; in case it left it, by its pid file.
        if let Ok(p) = std::fs::read_to_string(self.dir.join("vrrp.pid")) {
            if let Ok(pid) = p.trim().parse::<i32>() {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let ours =
                    String::from_utf8_lossy(&cmdline).contains(&self.dir.display().to_string());
                if ours {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let l = std::fs::read_to_string(self.dir.join("keepalived.log")).unwrap_or_default();
        let v: Vec<&str> = l.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill();
    }
}

/// keepalived's version line (`Keepalived v2.2.7 (01/16,2022)`).
pub fn keepalived_version() -> String {
    std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            );
            text.lines()
                .find(|l| l.starts_with("Keepalived"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "keepalived (version unknown)".into())
}

/// Sleeps a uniformly random time below [`PHASE_JITTER`] (xorshift seeded
/// from the clock; no need for a good generator).
fn random_phase() {
    use std::sync::atomic::AtomicU64;
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    let us = x % PHASE_JITTER.as_micros() as u64;
    std::thread::sleep(Duration::from_micros(us));
}

// ---------------------------------------------------------------------
// Figures

/// One trial of one scenario.
#[derive(Debug, Clone, Default)]
pub struct Trial {
    /// None: the VIP did not answer again within the timeout.
    pub failover: Option<Duration>,
    pub from: String,
    pub to: String,
    pub old_after: usize,
    pub dup: usize,
    pub lost_after: usize,
    /// Furrow: the new holder's "VIP taken" log line, after the failure.
    pub taken: Option<Duration>,
    /// Graceful stop: the old holder's "VIP given up", after SIGTERM.
    pub released: Option<Duration>,
    /// Node loss: when the lost node's VIP address was gone (Furrow: its
    /// kernel lifetime; keepalived: removed as a reboot would).
    pub stale_gone: Option<Duration>,
    /// Node loss: when the uplink was down (the kill comes first).
    pub cut: Option<Duration>,
}

impl Trial {
    fn line(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_string(), |d| {
                format!("{:.0} ms", d.as_secs_f64() * 1e3)
            })
        };
        let mut s = format!(
            "{} -> {}: {}",
            self.from,
            if self.to.is_empty() { "?" } else { &self.to },
            ms(self.failover)
        );
        if self.taken.is_some() {
            s += &format!(", taken (new holder's log) {}", ms(self.taken));
        }
        if self.released.is_some() {
            s += &format!(", given up (old holder's log) {}", ms(self.released));
        }
        if self.stale_gone.is_some() {
            s += &format!(", stale address gone {}", ms(self.stale_gone));
        }
        s += &format!(
            ", old holder answered {}, answered twice {}, lost after recovery {}",
            self.old_after, self.dup, self.lost_after
        );
        s
    }
}

/// Median, p90 and max of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub median: Duration,
    pub p90: Duration,
    pub max: Duration,
}

/// Median (mean of the middle two for an even count), p90 (nearest rank)
/// and max; None for no samples.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort();
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    let rank = (n * 9).div_ceil(10).max(1);
    Some(Summary {
        median,
        p90: v[rank - 1],
        max: v[n - 1],
    })
}

/// A scenario's trials.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub trials: Vec<Trial>,
    /// Trials planned.
    pub planned: usize,
}

impl Scenario {
    fn new(name: &'static str, planned: usize) -> Scenario {
        Scenario {
            name,
            trials: Vec::new(),
            planned,
        }
    }

    pub fn failovers(&self) -> Vec<Duration> {
        self.trials.iter().filter_map(|t| t.failover).collect()
    }

    pub fn summary(&self) -> Option<Summary> {
        summarize(&self.failovers())
    }

    fn mean_of(&self, f: impl Fn(&Trial) -> Option<Duration>) -> Option<Duration> {
        let v: Vec<Duration> = self.trials.iter().filter_map(f).collect();
        if v.is_empty() {
            None
        } else {
            Some(v.iter().sum::<Duration>() / v.len() as u32)
        }
    }

    fn record(&mut self, t: Trial) {
        eprintln!(
            "  {} {}/{}: {}",
            self.name,
            self.trials.len() + 1,
            self.planned,
            t.line()
        );
        self.trials.push(t);
    }
}

// ---------------------------------------------------------------------
// Parsing netd's JSON log timestamps (tracing's RFC 3339, UTC)

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-23T01:05:57.123456Z` as a time.
pub fn parse_rfc3339_utc(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let days = days_from_civil(num(0..4)?, num(5..7)?, num(8..10)?);
    let secs = days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    let mut nanos: u64 = 0;
    let rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !rest[1 + digits.len()..].starts_with('Z') {
            return None;
        }
        let mut d = digits;
        d.truncate(9);
        while d.len() < 9 {
            d.push('0');
        }
        nanos = d.parse().ok()?;
    } else if !rest.starts_with('Z') {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(u64::try_from(secs).ok()?, nanos as u32))
}

/// The first line of a netd JSON log containing `needle` logged at or
/// after `after`: how long after `after`.
pub fn log_event_after(log: &str, needle: &str, after: SystemTime) -> Option<Duration> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            let i = l.find("\"timestamp\":\"")? + 13;
            let j = l[i..].find('"')? + i;
            parse_rfc3339_utc(&l[i..j])
        })
        .find_map(|t| t.duration_since(after).ok())
}

// ---------------------------------------------------------------------
// The scenarios

fn has_addr(ns: &Netns, vip: Ipv4Addr) -> bool {
    ns.ip(&["-4", "addr", "show", "dev", UPLINK])
        .map(|o| o.contains(&format!("inet {vip}/32")))
        .unwrap_or(false)
}

fn holders(lab: &Lab, nodes: std::ops::Range<usize>, vip: Ipv4Addr) -> Vec<usize> {
    nodes.filter(|i| has_addr(&lab.node(*i).ns, vip)).collect()
}

/// The node a MAC belongs to.
fn node_of(lab: &Lab, macs: &[[u8; 6]], mac: [u8; 6]) -> String {
    macs.iter()
        .position(|m| *m == mac)
        .map(|i| lab.node(i).name.clone())
        .unwrap_or_else(|| format!("{mac:02x?}"))
}

/// A node back as after a reboot: uplink up with its default route.
fn uplink_up(lab: &Lab, switches: &[LinkSwitch], i: usize) -> anyhow::Result<()> {
    switches[i].set(UPLINK, true)?;
    lab.node(i).ns.ip(&[
        "route",
        "replace",
        "default",
        "via",
        &EXTERNAL_IP.to_string(),
    ])?;
    Ok(())
}

/// Furrow's steady state: one node holds the address and every netd
/// agrees, sees all three nodes as candidates and is not fenced; the
/// client is answered by that node alone. Returns the holder.
fn furrow_steady(lab: &Lab, probe: &Probe, macs: &[[u8; 6]]) -> anyhow::Result<usize> {
    let end = Instant::now() + STEADY_TIMEOUT;
    let mut last = String::new();
    loop {
        probe.check()?;
        match holders(lab, 0..3, FURROW_VIP).as_slice() {
            [h] => {
                let holder = lab.node(*h).name.clone();
                let mut agreed = true;
                for i in 0..3 {
                    let view: Vec<furrow_api::wire::VipInfo> =
                        match lab.node(i).netd.client().get("/v1/vips") {
                            Ok(v) => v,
                            Err(e) => {
                                last = format!("{}: {e}", lab.node(i).name);
                                agreed = false;
                                break;
                            }
                        };
                    let Some(v) = view.first() else {
                        last = format!("{}: no VIP", lab.node(i).name);
                        agreed = false;
                        break;
                    };
                    let role_ok = if i == *h {
                        v.role == "holder"
                    } else {
                        v.role == "standby"
                    };
                    if v.holder.as_deref() != Some(holder.as_str())
                        || !role_ok
                        || v.candidates.len() != 3
                    {
                        last = format!("{}: {v:?}", lab.node(i).name);
                        agreed = false;
                        break;
                    }
                }
                if agreed {
                    if probe.with_log(|l| l.steady(macs[*h], Instant::now(), STEADY_WINDOW)) {
                        return Ok(*h);
                    }
                    last = format!("{holder} holds it; the client is not answered by it alone");
                }
            }
            other => last = format!("address on nodes {other:?}"),
        }
        if Instant::now() > end {
            bail!("Furrow: no steady state within {STEADY_TIMEOUT:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to `timeout`) for the address to leave node `i`; how long
/// after `t0` it was gone.
fn wait_addr_gone(
    lab: &Lab,
    i: usize,
    vip: Ipv4Addr,
    t0: Instant,
    timeout: Duration,
) -> Option<Duration> {
    while t0.elapsed() < timeout {
        if !has_addr(&lab.node(i).ns, vip) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Measures after a failure at `t0`: the first reply from another node,
/// then [`AFTER_WINDOW`] more.
fn measure(
    lab: &Lab,
    probe: &Probe,
    macs: &[[u8; 6]],
    from: usize,
    t0: Instant,
) -> anyhow::Result<Trial> {
    let old = macs[from];
    let mut t = Trial {
        from: lab.node(from).name.clone(),
        ..Trial::default()
    };
    if let Some(first) = probe.wait_failover(t0, old, FAILOVER_TIMEOUT)? {
        let wait = (first.at + AFTER_WINDOW + Duration::from_millis(100))
            .saturating_duration_since(Instant::now());
        std::thread::sleep(wait);
        let o = probe.with_log(|l| l.outcome(t0, old, first, AFTER_WINDOW));
        t.failover = Some(o.failover);
        t.to = node_of(lab, macs, o.new_mac);
        t.old_after = o.old_after;
        t.dup = o.dup;
        t.lost_after = o.lost_after;
    }
    Ok(t)
}

fn furrow_node_loss(
    lab: &mut Lab,
    probe: &Probe,
    macs: &[[u8; 6]],
    switches: &[LinkSwitch],
    sc: &mut Scenario,
) -> anyhow::Result<()> {
    let h = furrow_steady(lab, probe, macs)?;
    random_phase();
    let pid = lab
        .node(h)
        .netd
        .pid()
        .context("the holder's netd is not running")?;
    let wall0 = SystemTime::now();
    let t0 = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    switches[h].set(UPLINK, false)?;
    let cut = t0.elapsed();
    lab.node_mut(h).netd.kill(); // reaps it
    let mut t = measure(lab, probe, macs, h, t0)?;
    t.cut = Some(cut);
    if let Some(to) = (0..3).find(|i| lab.node(*i).name == t.to) {
        t.taken = log_event_after(&lab.node(to).netd.log(), "\"VIP taken\"", wall0);
    }
    // The node comes back as after a reboot: without the address. netd
    // gave it a kernel lifetime; it must have expired by itself.
    t.stale_gone = wait_addr_gone(lab, h, FURROW_VIP, t0, Duration::from_secs(10));
    if t.stale_gone.is_none() {
        eprintln!(
            "  warning: the VIP address outlived netd on {} by 10 s; removing it",
            lab.node(h).name
        );
        let _ = lab
            .node(h)
            .ns
            .ip(&["addr", "del", &format!("{FURROW_VIP}/32"), "dev", UPLINK]);
    }
    uplink_up(lab, switches, h)?;
    lab.node_mut(h).netd.start()?;
    sc.record(t);
    Ok(())
}

fn furrow_graceful(
    lab: &mut Lab,
    probe: &Probe,
    macs: &[[u8; 6]],
    sc: &mut Scenario,
) -> anyhow::Result<()> {
    let h = furrow_steady(lab, probe, macs)?;
    random_phase();
    let wall0 = SystemTime::now();
    let t0 = Instant::now();
    if !lab.node_mut(h).netd.stop()? {
        eprintln!(
            "  warning: netd on {} exited non-zero after SIGTERM",
            lab.node(h).name
        );
    }
    let mut t = measure(lab, probe, macs, h, t0)?;
    t.released = log_event_after(&lab.node(h).netd.log(), "\"VIP given up\"", wall0);
    if let Some(to) = (0..3).find(|i| lab.node(*i).name == t.to) {
        t.taken = log_event_after(&lab.node(to).netd.log(), "\"VIP taken\"", wall0);
    }
    lab.node_mut(h).netd.start()?;
    sc.record(t);
    Ok(())
}

/// keepalived's steady state: every keepalived running and settled, one
/// node holding the address, the client answered by it alone.
fn keepalived_steady(
    lab: &Lab,
    probe: &Probe,
    macs: &[[u8; 6]],
    kas: &mut [Keepalived],
    base: usize,
) -> anyhow::Result<usize> {
    let end = Instant::now() + STEADY_TIMEOUT + KEEPALIVED_SETTLE;
    let mut last = String::new();
    loop {
        probe.check()?;
        for (k, ka) in kas.iter_mut().enumerate() {
            if !ka.running() {
                bail!(
                    "keepalived on {} exited:\n{}",
                    lab.node(base + k).name,
                    ka.log_tail(30)
                );
            }
        }
        let settled = kas.iter().all(|k| k.started.elapsed() >= KEEPALIVED_SETTLE);
        if settled {
            match holders(lab, base..base + kas.len(), KEEPALIVED_VIP).as_slice() {
                [h] => {
                    if probe.with_log(|l| l.steady(macs[*h], Instant::now(), STEADY_WINDOW)) {
                        return Ok(*h);
                    }
                    last = format!(
                        "{} holds it; the client is not answered by it alone",
                        lab.node(*h).name
                    );
                }
                other => last = format!("address on nodes {other:?}"),
            }
        }
        if Instant::now() > end {
            bail!("keepalived: no steady state: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[allow(clippy::too_many_arguments)]
fn keepalived_node_loss(
    lab: &Lab,
    probe: &Probe,
    macs: &[[u8; 6]],
    switches: &[LinkSwitch],
    kas: &mut [Keepalived],
    dirs: &[PathBuf],
    base: usize,
    sc: &mut Scenario,
) -> anyhow::Result<()> {
    let h = keepalived_steady(lab, probe, macs, kas, base)?;
    random_phase();
    let k = h - base;
    let t0 = Instant::now();
    kas[k].kill_now();
    switches[h].set(UPLINK, false)?;
    let cut = t0.elapsed();
    kas[k].kill(); // reaps it
    let mut t = measure(lab, probe, macs, h, t0)?;
    t.cut = Some(cut);
    // Back as after a reboot: SIGKILL left keepalived's address (it has no
    // lifetime), a rebooted node has none.
    let _ = lab.node(h).ns.ip(&[
        "addr",
        "del",
        &format!("{KEEPALIVED_VIP}/32"),
        "dev",
        UPLINK,
    ]);
    uplink_up(lab, switches, h)?;
    kas[k] = Keepalived::start(
        &lab.node(h).ns,
        &dirs[k],
        &lab.node(h).name,
        KEEPALIVED_PRIORITIES[k],
        KEEPALIVED_VIP,
    )?;
    sc.record(t);
    Ok(())
}

/// Everything one run measured.
pub struct Report {
    pub trials: usize,
    pub scenarios: Vec<Scenario>,
    pub keepalived: String,
    /// Samples of each of [`BGP_SCENARIOS`].
    pub bgp: Vec<Vec<Duration>>,
}

fn furrow_vip_yaml() -> String {
    format!(
        "apiVersion: network.furrow.io/v1alpha1
kind: VirtualIP
metadata: {{name: bench-vip}}
spec:
  address: {FURROW_VIP}
  interface: {UPLINK}
  mode: arp
"
    )
}

/// Runs every scenario, `trials` times each, and prints the figures.
pub fn bench(trials: usize) -> anyhow::Result<()> {
    let trials = trials.max(1);
    println!(
        "VIP failover: a client on the fabric probes the VIP every {} ms (ICMP echo); failover = failure -> first reply from another node; {trials} trials per scenario",
        PROBE_INTERVAL.as_millis()
    );
    let report = run(trials)?;
    print_report(&report);
    Ok(())
}

/// Temporary directories removed on drop.
struct TempDirs(Vec<PathBuf>);

impl Drop for TempDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The measurements, without printing the table. With
/// `FURROW_BENCH_LOGS=<dir>`, every netd's and keepalived's log is copied
/// there at the end (also after a failure).
pub fn run(trials: usize) -> anyhow::Result<Report> {
    let version = keepalived_version();
    let mut lab = Lab::shared(3)?;
    for n in ["vf1", "vf2", "vf3"] {
        lab.add_node(n)?;
    }
    let base = lab.nodes.len();
    for n in ["vk1", "vk2", "vk3"] {
        lab.add_node_with(n, false)?;
    }
    let macs: Vec<[u8; 6]> = (0..lab.nodes.len())
        .map(|i| crate::arp::link_mac(&lab.node(i).ns, UPLINK))
        .collect::<anyhow::Result<_>>()?;
    let switches: Vec<LinkSwitch> = (0..lab.nodes.len())
        .map(|i| LinkSwitch::open(&lab.node(i).ns))
        .collect::<anyhow::Result<_>>()?;
    let ka_dirs = TempDirs(
        (0..3)
            .map(|_| std::env::temp_dir().join(names::unique("keepalived")))
            .collect(),
    );
    let result = measure_all(&mut lab, trials, &macs, &switches, &ka_dirs.0, base);
    if let Some(dest) = std::env::var_os("FURROW_BENCH_LOGS") {
        let dest = PathBuf::from(dest);
        let _ = std::fs::create_dir_all(&dest);
        for n in &lab.nodes {
            let _ = std::fs::copy(&n.netd.log_path, dest.join(format!("{}-netd.log", n.name)));
        }
        for (k, d) in ka_dirs.0.iter().enumerate() {
            let _ = std::fs::copy(
                d.join("keepalived.log"),
                dest.join(format!("{}-keepalived.log", lab.node(base + k).name)),
            );
        }
        eprintln!("logs copied to {}", dest.display());
    }
    let scenarios = result?;
    drop(lab);
    Ok(Report {
        trials,
        scenarios,
        keepalived: version,
        bgp: measure_bgp(trials)?,
    })
}

/// BGP mode: route appearance, withdrawal and move as BIRD sees them.
fn measure_bgp(trials: usize) -> anyhow::Result<Vec<Vec<Duration>>> {
    use crate::scenario::vip::{bgp_vip_yaml, BgpLab};
    let mut b = BgpLab::build()?;
    b.lab.node(0).apply(&b.peers_yaml(3))?;
    let prefix = format!("{BGP_VIP}/32");
    let timeout = Duration::from_secs(20);
    let mut out = vec![Vec::new(); BGP_SCENARIOS.len()];
    for _ in 0..trials {
        wait_sessions(&b, timeout)?;
        let t = Instant::now();
        b.lab
            .node(0)
            .apply(&bgp_vip_yaml("bench-bgp", BGP_VIP, ""))?;
        let (holder, _) = b.wait_routed(&prefix, None, timeout);
        out[0].push(t.elapsed());

        let pid = b.lab.node(holder).netd.pid().context("holder's netd")?;
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        b.wait_routed(&prefix, Some(holder), timeout);
        out[2].push(t.elapsed());

        let other = b.lab.node((holder + 1) % 3).netd.client();
        let t = Instant::now();
        let _: serde_json::Value = other.delete("/v1/resources/virtualips/bench-bgp")?;
        while b.bird.route(&prefix).is_some() {
            if t.elapsed() > timeout {
                bail!("route for {prefix} still at BIRD {timeout:?} after the delete");
            }
        }
        out[1].push(t.elapsed());
        // The stopped node back before the next trial.
        b.lab.node_mut(holder).netd.stop()?;
        b.lab.node_mut(holder).netd.start()?;
    }
    Ok(out)
}

/// Every node's BGP sessions established.
fn wait_sessions(b: &crate::scenario::vip::BgpLab, timeout: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while (0..b.lab.nodes.len()).any(|i| {
        b.bgp(i)
            .map(|x| x.peers.iter().any(|p| p.state != "Established"))
            .unwrap_or(true)
    }) {
        if t0.elapsed() > timeout {
            bail!("BGP sessions not established within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn measure_all(
    lab: &mut Lab,
    trials: usize,
    macs: &[[u8; 6]],
    switches: &[LinkSwitch],
    ka_dirs: &[PathBuf],
    base: usize,
) -> anyhow::Result<Vec<Scenario>> {
    let mut scenarios = Vec::new();
    // Furrow, node loss then graceful stop.
    lab.node(0).apply(&furrow_vip_yaml())?;
    {
        let probe = Probe::start(&lab.external, "eth0", FURROW_VIP)?;
        let mut loss = Scenario::new("furrow node loss", trials);
        for _ in 0..trials {
            furrow_node_loss(lab, &probe, macs, switches, &mut loss)?;
        }
        scenarios.push(loss);
        let mut graceful = Scenario::new("furrow graceful stop", trials);
        for _ in 0..trials {
            furrow_graceful(lab, &probe, macs, &mut graceful)?;
        }
        scenarios.push(graceful);
    }

    // keepalived, node loss, on its own three nodes (killed on every
    // exit path: `kas` drops).
    let mut kas = Vec::new();
    for (k, dir) in ka_dirs.iter().enumerate() {
        kas.push(Keepalived::start(
            &lab.node(base + k).ns,
            dir,
            &lab.node(base + k).name,
            KEEPALIVED_PRIORITIES[k],
            KEEPALIVED_VIP,
        )?);
    }
    let probe = Probe::start(&lab.external, "eth0", KEEPALIVED_VIP)?;
    let mut sc = Scenario::new("keepalived node loss", trials);
    for _ in 0..trials {
        keepalived_node_loss(
            lab, &probe, macs, switches, &mut kas, ka_dirs, base, &mut sc,
        )?;
    }
    scenarios.push(sc);

    Ok(scenarios)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

pub fn print_report(r: &Report) {
    println!(
        "Furrow: 3 nodes, etcd 3 members at default settings, netd VIP defaults (heartbeat 100 ms, takeover 1000 ms); {}: 3 nodes, VRRPv3, advert_int 1 s, priorities {:?}",
        r.keepalived, KEEPALIVED_PRIORITIES
    );
    println!(
        "\n{:<24} {:>7} {:>10} {:>10} {:>10}",
        "scenario", "trials", "median", "p90", "max"
    );
    for s in &r.scenarios {
        let n = format!("{}/{}", s.failovers().len(), s.trials.len());
        match s.summary() {
            Some(x) => println!(
                "{:<24} {n:>7} {:>10} {:>10} {:>10}",
                s.name,
                ms(x.median),
                ms(x.p90),
                ms(x.max)
            ),
            None => println!("{:<24} {n:>7} {:>10}", s.name, "no failover"),
        }
    }
    let get = |name: &str| r.scenarios.iter().find(|s| s.name == name);
    let (fl, fg, kl) = (
        get("furrow node loss").and_then(Scenario::summary),
        get("furrow graceful stop").and_then(Scenario::summary),
        get("keepalived node loss").and_then(Scenario::summary),
    );
    if let (Some(f), Some(k)) = (fl, kl) {
        let ratio = |a: Duration, b: Duration| format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64());
        println!(
            "{:<24} {:>7} {:>10} {:>10} {:>10}",
            "node loss furrow/keepalived",
            "",
            ratio(f.median, k.median),
            ratio(f.p90, k.p90),
            ratio(f.max, k.max)
        );
    }
    for (name, samples) in BGP_SCENARIOS.iter().zip(&r.bgp) {
        let n = format!("{}/{}", samples.len(), r.trials);
        match summarize(samples) {
            Some(x) => println!(
                "{name:<24} {n:>7} {:>10} {:>10} {:>10}",
                ms(x.median),
                ms(x.p90),
                ms(x.max)
            ),
            None => println!("{name:<24} {n:>7} {:>10}", "no sample"),
        }
    }

    println!("\nwhere the time goes (means over the trials):");
    for s in &r.scenarios {
        let mut parts = Vec::new();
        if let Some(d) = s.mean_of(|t| t.released) {
            parts.push(format!("old holder gave it up (its log) {}", ms(d)));
        }
        if let Some(d) = s.mean_of(|t| t.taken) {
            parts.push(format!("new holder took it (its log) {}", ms(d)));
        }
        if let Some(d) = s.mean_of(|t| t.stale_gone) {
            parts.push(format!("lost node's address gone {}", ms(d)));
        }
        if let Some(d) = s.trials.iter().filter_map(|t| t.cut).max() {
            parts.push(format!(
                "uplink down after the kill within {:.1} ms",
                d.as_secs_f64() * 1e3
            ));
        }
        let sum = |f: fn(&Trial) -> usize| s.trials.iter().map(f).sum::<usize>();
        parts.push(format!(
            "probes answered by the old holder after the failure (in flight) {}, by two nodes {}, lost after the first reply {}",
            sum(|t| t.old_after),
            sum(|t| t.dup),
            sum(|t| t.lost_after)
        ));
        println!("  {}: {}", s.name, parts.join("; "));
    }

    let verdict = |s: Option<Summary>, limit: Duration| match s {
        Some(x) if x.median <= limit => "met",
        Some(_) => "MISSED",
        None => "no figure",
    };
    let bgp_worst = r
        .bgp
        .iter()
        .filter_map(|v| summarize(v))
        .max_by_key(|x| x.median);
    println!(
        "\n(targets: furrow node-loss median <= 1500 ms with etcd at its defaults: {}; graceful median <= 300 ms: {}; BGP advertise/withdraw within 1 s: {}. Anchor measured earlier on this machine: keepalived node loss 3.05 s median)",
        verdict(fl, Duration::from_millis(1500)),
        verdict(fg, Duration::from_millis(300)),
        verdict(bgp_worst, Duration::from_millis(1000)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let ms = Duration::from_millis;
        let v: Vec<Duration> = (1..=20).map(ms).collect();
        let s = summarize(&v).unwrap();
        assert_eq!(
            (s.median, s.p90, s.max),
            (ms(10) + ms(1) / 2, ms(18), ms(20))
        );
        let s = summarize(&[ms(5), ms(1), ms(3)]).unwrap();
        assert_eq!((s.median, s.p90, s.max), (ms(3), ms(5), ms(5)));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn echo_round_trip() {
        let req = echo_request(0x1234, 70_000);
        assert_eq!(inet_checksum(&req), 0);
        // The reply a kernel would send: type 0, same id and payload.
        let target = Ipv4Addr::new(198, 18, 0, 100);
        let mut icmp = req.clone();
        icmp[0] = ICMP_ECHO_REPLY;
        let mut frame = vec![0xaa; 6];
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 7]);
        frame.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        ip.extend_from_slice(&target.octets());
        ip.extend_from_slice(&[198, 18, 0, 254]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&icmp);
        assert_eq!(
            parse_reply(&frame, target, 0x1234),
            Some((70_000, [2, 0, 0, 0, 0, 7]))
        );
        assert_eq!(parse_reply(&frame, target, 0x1235), None);
        assert_eq!(parse_reply(&frame, Ipv4Addr::new(1, 2, 3, 4), 0x1234), None);
    }

    #[test]
    fn outcome_of_a_failover() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        let (a, b, c) = ([1; 6], [2; 6], [3; 6]);
        let mut log = ProbeLog::default();
        for s in 0..200u64 {
            log.sent.push(at(s * 10));
        }
        let mut push = |seq: u64, mac| {
            log.replies.push(Reply {
                seq,
                at: at(seq * 10 + 1),
                mac,
            })
        };
        // Steady on a, failure at 500 ms (probe 50), a answers probe 50 in
        // flight, silence, b from probe 120, c also answers 121, 125 lost.
        for s in 0..=50 {
            push(s, a);
        }
        for s in 120..200 {
            if s != 125 {
                push(s, b);
            }
            if s == 121 {
                push(s, c);
            }
        }
        assert!(log.steady(a, at(400), Duration::from_millis(300)));
        assert!(!log.steady(b, at(400), Duration::from_millis(300)));
        assert!(!log.steady(a, at(800), Duration::from_millis(300)));
        let first = log.first_reply_after(at(500), a).unwrap();
        assert_eq!((first.seq, first.mac), (120, b));
        let o = log.outcome(at(500), a, first, Duration::from_millis(500));
        assert_eq!(o.failover, Duration::from_millis(701));
        assert_eq!((o.old_after, o.dup, o.lost_after), (1, 1, 1));
        assert!(log.first_reply_after(at(1995), a).is_none());
    }

    #[test]
    fn netd_log_timestamps() {
        let t = parse_rfc3339_utc("2026-11-23T01:05:57.123456Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        // date -u -d 2026-11-23T01:05:57Z +%s
        assert_eq!(d.as_secs(), 1_795_395_957);
        assert_eq!(d.subsec_micros(), 123_456);
        assert!(parse_rfc3339_utc("yesterday").is_none());
        let log = "{\"timestamp\":\"2026-11-23T01:05:57.5Z\",\"message\":\"VIP taken\"}\n\
                   {\"timestamp\":\"2026-11-23T01:05:59.25Z\",\"message\":\"VIP taken\"}\n";
        let after = UNIX_EPOCH + Duration::from_secs(1_795_395_958);
        assert_eq!(
            log_event_after(log, "VIP taken", after),
            Some(Duration::from_millis(1250))
        );
    }
}
