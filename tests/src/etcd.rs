//! A real etcd (Debian's /usr/bin/etcd) for tests: one or more members on
//! loopback, on ports nobody else holds, in a fresh data directory, gone
//! again when the handle drops (also on panic, and — through
//! PR_SET_PDEATHSIG — when the test process itself is killed).
//!
//! ```ignore
//! let mut etcd = EtcdCluster::start(3);
//! etcd.kill(0);                               // SIGKILL one member
//! etcd.restart(0);                            // same name, ports and data
//! etcd.wait_healthy(Duration::from_secs(20));
//! ```
//!
//! Shared by every test that needs etcd (netd's store tests, the lab's
//! multi-node tests); it only depends on std and libc.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// How long a fresh cluster may take to elect a leader and serve on a
/// busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP /health and /metrics, also when clients speak TLS.
    metrics_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct EtcdCluster {
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
    tls: Option<TlsFiles>,
    /// Members run inside this network namespace and listen on `ip`
    /// (the lab's control-plane host on the fabric); None: host loopback.
    place: Option<(PathBuf, std::net::Ipv4Addr)>,
}

/// PEM files of a throwaway CA, the members' server certificate and a
/// client certificate, made with the openssl command.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn free_port() -> u16 {
    // The kernel hands out a port nobody holds; etcd binds it a moment
    // later. Another process taking it in between makes etcd exit, which
    // `start` notices and retries with new ports.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

fn unique_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("furrow-etcd-{}-{n}-{nanos:x}", std::process::id()))
}

/// Removes the directories of test processes that died without running
/// Drop (killed by a timeout): their etcds died with them (PDEATHSIG),
/// the files did not.
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("furrow-etcd-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl EtcdCluster {
    /// Starts an `n`-member cluster and waits until every member is
    /// healthy (has a leader and serves reads). Panics with the members'
    /// log tails if it does not come up.
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, false, None)
    }

    /// Starts an `n`-member cluster inside the network namespace `netns`,
    /// listening on `ip` there: the lab runs etcd on a control-plane host of
    /// its fabric, so nodes reach it over their uplinks (and lose it when
    /// their uplink is cut, as a lost node would).
    pub fn start_in(n: usize, netns: &Path, ip: std::net::Ipv4Addr) -> EtcdCluster {
        EtcdCluster::start_with(n, false, Some((netns.to_path_buf(), ip)))
    }

    /// Like [`start`](Self::start), but clients must speak TLS and show a
    /// certificate signed by the cluster's CA ([`tls`](Self::tls)).
    pub fn start_tls(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, true, None)
    }

    fn start_with(
        n: usize,
        tls: bool,
        place: Option<(PathBuf, std::net::Ipv4Addr)>,
    ) -> EtcdCluster {
        assert!(n >= 1);
        let mut last = String::new();
        for _ in 0..3 {
            let mut c = EtcdCluster::create(n);
            c.place = place.clone();
            if tls {
                c.tls = Some(make_certs(&c.dir));
            }
            for i in 0..n {
                c.spawn(i);
            }
            match c.try_wait_healthy(START_TIMEOUT) {
                Ok(()) => return c,
                // Most likely a port taken between picking and binding:
                // new ports, new directory.
                Err(e) => last = e,
            }
        }
        panic!("etcd cluster of {n} did not start: {last}");
    }

    fn create(n: usize) -> EtcdCluster {
        sweep_stale_dirs();
        let dir = unique_dir();
        std::fs::create_dir_all(&dir).expect("creating the etcd test directory");
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                data_dir: dir.join(format!("m{i}.etcd")),
                log: dir.join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let token = dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        EtcdCluster {
            dir,
            token,
            members,
            tls: None,
            place: None,
        }
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://{}:{}", m.name, self.ip(), m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The address members listen on.
    fn ip(&self) -> std::net::Ipv4Addr {
        self.place
            .as_ref()
            .map(|(_, ip)| *ip)
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST)
    }

    fn spawn(&mut self, i: usize) {
        let ip = self.ip();
        let place = self.place.clone();
        let initial = self.initial_cluster();
        let token = self.token.clone();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let tls = self.tls.clone();
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} already runs", m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("opening the etcd log");
        let client = format!("{scheme}://{ip}:{}", m.client_port);
        let peer = format!("http://{ip}:{}", m.peer_port);
        let metrics = format!("http://127.0.0.1:{}", m.metrics_port);
        let mut cmd = match &place {
            Some((ns, _)) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .arg("--")
                    .arg(ETCD_BIN);
                c
            }
            None => Command::new(ETCD_BIN),
        };
        cmd.env_clear()
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            // Ignored once the data dir exists, so restarts rejoin.
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            .args(["--listen-metrics-urls", &metrics])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        if let Some(t) = &tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Dies with the test process even if Drop never runs
                // (nextest's timeout kill). The signal follows the
                // spawning *thread*: spawn from the test's own thread, not
                // from spawn_blocking threads that come and go.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        m.child = Some(cmd.spawn().expect("starting /usr/bin/etcd"));
    }

    /// The number of members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.ip(), self.members[i].client_port)
    }

    /// The certificates of a cluster started with [`start_tls`](Self::start_tls).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// SIGKILLs member `i` (no goodbye to its peers) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts member `i` again: same name, ports and data.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(i);
            }
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// `GET /health` of member `i`: true once it has a leader and serves.
    pub fn healthy(&self, i: usize) -> bool {
        http_get(
            self.place.as_ref().map(|(p, _)| p.as_path()),
            self.members[i].metrics_port,
            "/health",
        )
        .map(|b| b.contains("\"health\":\"true\""))
        .unwrap_or(false)
    }

    /// Waits until every running member is healthy.
    pub fn wait_healthy(&mut self, timeout: Duration) {
        if let Err(e) = self.try_wait_healthy(timeout) {
            panic!("{e}");
        }
    }

    fn try_wait_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            for m in &mut self.members {
                if let Some(c) = &mut m.child {
                    if let Ok(Some(status)) = c.try_wait() {
                        m.child = None;
                        return Err(format!(
                            "etcd member {} exited ({status}):\n{}",
                            m.name,
                            tail(&m.log)
                        ));
                    }
                }
            }
            let all = (0..self.members.len())
                .filter(|&i| self.members[i].child.is_some())
                .all(|i| self.healthy(i));
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {}:\n{}", m.name, tail(&m.log)))
                    .collect();
                return Err(format!(
                    "etcd not healthy within {timeout:?}:\n{}",
                    logs.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the member that leads right now, if a running one
    /// says so (`GET /v2/...` is gone in 3.4; the metrics page has it).
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| {
            self.members[i].child.is_some()
                && http_get(
                    self.place.as_ref().map(|(p, _)| p.as_path()),
                    self.members[i].metrics_port,
                    "/metrics",
                )
                .map(|b| b.lines().any(|l| l.trim() == "etcd_server_is_leader 1"))
                .unwrap_or(false)
        })
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() {
            // Keep the logs for the post-mortem, not the data (etcd
            // preallocates 64 MiB of WAL per member).
            for m in &self.members {
                let _ = std::fs::remove_dir_all(&m.data_dir);
            }
            eprintln!("etcd logs kept in {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate
/// (P-256, valid for a day) in `dir`.
fn make_certs(dir: &Path) -> TlsFiles {
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=furrow-test-ca"];
    ca.extend(key);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("writing the extension file");
        let (k, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subj = format!("/CN={name}");
        let mut req = vec!["req", "-subj", &subj, "-keyout", &k, "-out", &csr];
        req.extend(key);
        openssl(dir, &req);
        let extfile = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &pem,
                "-extfile",
                &extfile,
            ],
        );
    }
    TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A minimal HTTP/1.0 GET on loopback (etcd's /health and /metrics), so
/// the harness needs no HTTP client.
fn http_get(netns: Option<&Path>, port: u16, path: &str) -> Option<String> {
    if let Some(ns) = netns {
        // Connect from inside the namespace, on a thread of its own.
        let file = std::fs::File::open(ns).ok()?;
        let path = path.to_string();
        return std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            http_get(None, port, &path)
        })
        .join()
        .ok()
        .flatten();
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.").then_some(body)
}
