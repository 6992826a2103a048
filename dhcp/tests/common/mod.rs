//! A two-namespace lab for the interop tests: "srv" and "cli" joined by a
//! veth pair (s0 <-> c0). Names carry the pid (`ft<pid>x<n>...`, the
//! pattern the workspace janitor sweeps) so parallel test processes never
//! collide; everything is removed on drop, also when a test panics.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use furrow_dhcp::frame::{self, ParseOptions};
use furrow_dhcp::server::{decide, MemoryLeases, Reason, ServerConfig};
use furrow_dhcp::socket::{PacketSocket, Role};
use furrow_dhcp::MacAddr;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("ft{}x{n}{tag}", std::process::id())
}

pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails the test with a clear message when a client binary is missing.
pub fn require(bin: &str, package: &str) {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: install the Debian package {package}"
    );
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        sh(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub fn ip(&self, args: &[&str]) -> String {
        sh(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command run inside the namespace (nsenter: `ip netns exec`
    /// remounts /sys).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    pub fn ifindex(&self, dev: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        out.split(':').next().unwrap().trim().parse().unwrap()
    }

    /// Runs `f` on a thread inside the namespace, with a tokio runtime.
    pub fn block_on<T, F>(&self, f: impl FnOnce() -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T>,
    {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn enter(path: &Path) {
    let f = File::open(path).unwrap();
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// srv:s0 <-> cli:c0.
pub struct Lab {
    pub srv: Netns,
    pub cli: Netns,
    pub dir: TempDir,
}

pub const CLIENT_MAC: &str = "52:54:00:aa:00:01";

impl Lab {
    pub fn new(server_mac: &str, server_cidr: &str) -> Self {
        let srv = Netns::new("s");
        let cli = Netns::new("c");
        srv.ip(&[
            "link", "add", "s0", "address", server_mac, "type", "veth", "peer", "name", "c0",
            "address", CLIENT_MAC, "netns", &cli.name,
        ]);
        srv.ip(&["addr", "add", server_cidr, "dev", "s0"]);
        srv.ip(&["link", "set", "s0", "up"]);
        cli.ip(&["link", "set", "c0", "up"]);
        Lab {
            srv,
            cli,
            dir: TempDir::new(),
        }
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(unique("dhcp"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn join(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Self {
        Proc(
            cmd.stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}")),
        )
    }
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), sig).unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The events a client's hook script logged: `event=<name>` then `k=v`
/// lines, closed by `end`.
pub fn events(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut cur: Option<BTreeMap<String, String>> = None;
    for line in text.lines() {
        if line == "end" {
            out.extend(cur.take());
        } else if let Some((k, v)) = line.split_once('=') {
            cur.get_or_insert_with(BTreeMap::new)
                .insert(k.to_string(), v.to_string());
        }
    }
    out
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What the harness server did, message type and decision reason.
#[derive(Debug, Clone)]
pub struct Logged {
    pub mac: Option<MacAddr>,
    pub msg_type: Option<u8>,
    pub reason: Reason,
}

/// The test's DHCP server: an AF_PACKET loop in the server namespace
/// around `decide`, with leases in memory. It answers the way netd would:
/// parse, decide, commit (here: apply), then send.
pub struct Harness {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub leases: Arc<Mutex<MemoryLeases>>,
    pub log: Arc<Mutex<Vec<Logged>>>,
}

impl Harness {
    pub fn start(ns: &Netns, dev: &str, cfg: ServerConfig, leases: MemoryLeases) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let leases = Arc::new(Mutex::new(leases));
        let log = Arc::new(Mutex::new(Vec::new()));
        let ifindex = ns.ifindex(dev);
        let path = ns.path();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (s, l, g) = (stop.clone(), leases.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            enter(&path);
            // Keeps the kernel from answering client datagrams to port 67
            // with ICMP port unreachable (the raw socket sees them anyway).
            let _sink = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 67)).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(ifindex, cfg, s, l, g, ready_tx));
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("harness server did not start");
        Harness {
            stop,
            thread: Some(thread),
            leases,
            log,
        }
    }

    pub fn reasons(&self) -> Vec<Reason> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.reason.clone())
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    ifindex: u32,
    cfg: ServerConfig,
    stop: Arc<AtomicBool>,
    leases: Arc<Mutex<MemoryLeases>>,
    log: Arc<Mutex<Vec<Logged>>>,
    ready: std::sync::mpsc::Sender<()>,
) {
    let sock = PacketSocket::open(ifindex, Role::Server).unwrap();
    ready.send(()).unwrap();
    let mut buf = vec![0u8; 9216];
    while !stop.load(Ordering::SeqCst) {
        let Ok(r) = tokio::time::timeout(Duration::from_millis(100), sock.recv(&mut buf)).await
        else {
            continue;
        };
        let r = r.unwrap();
        let opts = ParseOptions {
            udp_checksum_partial: r.checksum_partial,
            ..ParseOptions::to_server()
        };
        let pkt = match frame::parse(&buf[..r.len], opts) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("harness: dropping a frame: {e}");
                continue;
            }
        };
        let d = {
            let mut store = leases.lock().unwrap();
            let d = decide(&cfg, &*store, &pkt.message, now(), "test-node");
            if let Some(c) = &d.change {
                store.apply(c);
            }
            d
        };
        eprintln!(
            "harness: {:?} from {:?}: {}",
            furrow_dhcp::codec::msg_type(&pkt.message),
            furrow_dhcp::codec::ethernet_chaddr(&pkt.message).map(MacAddr),
            d.reason
        );
        log.lock().unwrap().push(Logged {
            mac: furrow_dhcp::codec::ethernet_chaddr(&pkt.message).map(MacAddr),
            msg_type: furrow_dhcp::codec::msg_type(&pkt.message).map(u8::from),
            reason: d.reason.clone(),
        });
        if let Some(reply) = &d.reply {
            let f = reply.to_frame(cfg.server_addr(), &pkt.addr).unwrap();
            sock.send(&f).await.unwrap();
        }
    }
}
