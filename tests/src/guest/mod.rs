//! Real VMs with a full kernel, under QEMU's software emulation (TCG).
//!
//! The host kernel the lab runs on has no 802.1Q, no bridge VLAN
//! filtering, no bonding and no modules; a guest running Debian's cloud
//! kernel has all of them. Two uses:
//! - KubeVirt-style VMs on Furrow networks: [`Nic::kubevirt_bridge`]
//!   bridges a pod's CNI interface to the VM's tap inside the pod netns;
//! - full-kernel "nodes": [`Nic::tap`] puts taps into a namespace the test
//!   wires to its fabric.
//!
//! A boot: the cached base image ([`image::Image`]: kernel + busybox
//! initramfs with modules), plus a per-boot archive ([`Overlay`]) holding
//! `/furrow/payload.sh`, `/furrow/boot.conf` and any extra files (host
//! binaries with their libraries). The guest's init runs the payload
//! between `FURROW-BEGIN` and `FURROW-EXIT <code>` on the serial console
//! and powers off; [`Guest::boot`] returns the code and the output.
//!
//! ```no_run
//! use furrow_tests::guest::{Guest, GuestConfig};
//! let mut cfg = GuestConfig::new("modprobe 8021q && echo ok");
//! cfg.files.add_host_tools(&["ip"]).unwrap();
//! let run = Guest::boot(cfg).unwrap();
//! assert_eq!(run.exit_code, 0, "{}", run.console);
//! ```
//!
//! Inside the guest (what a payload can rely on):
//! - `/bin/sh` is busybox ash; proc, sysfs, devtmpfs, devpts, bpffs
//!   (`/sys/fs/bpf`), cgroup2, tmpfs on `/run` and `/tmp` are mounted;
//!   `/run/netns` exists (`ip netns add` works); `lo` is up.
//! - `modprobe` (busybox) loads any module of [`image::MODULES`] and its
//!   dependencies; the kernel also autoloads them (nf_tables for netd).
//! - host binaries added with [`Overlay::add_binary`] land in
//!   `/usr/local/bin`, first on PATH; since busybox prefers its own
//!   applets, the payload gets shell functions so that e.g. `ip` is
//!   iproute2's. Use full paths in `sh -c` and in busybox applets that run
//!   commands (`timeout`, `xargs`).
//! - stdout and stderr of the payload go to the serial console, which is
//!   slow under TCG: keep output to kilobytes, write bulk data to files.
//! - our debug binaries are stripped of DWARF when copied (netd: 160 MB ->
//!   32 MB); the initramfs lives in guest RAM, memory defaults to 512 MiB
//!   and grows with the per-boot files.
//! - a Rust test binary runs as is: add `std::env::current_exe()` and run
//!   `<it> --exact <test> --ignored --nocapture` in the payload, the test
//!   checking [`in_guest`].
//!
//! Every guest has a run directory under the lab state root named with
//! the test's pid, QEMU gets `-name <that name>` and dies with the thread
//! that started it (PR_SET_PDEATHSIG) and, failing everything, powers
//! itself off after a watchdog delay; [`sweep`] kills QEMUs of dead
//! test processes.

pub mod files;
pub mod image;
pub mod nic;

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub use files::Overlay;
pub use image::Image;
pub use nic::{Nic, NicKind, NicSetup};

use crate::janitor::STATE_ROOT;
use crate::names;

pub const BEGIN_MARKER: &str = "FURROW-BEGIN";
pub const EXIT_MARKER: &str = "FURROW-EXIT";
pub const QEMU: &str = "qemu-system-x86_64";

/// Whether this process runs inside a Furrow guest (for test binaries run
/// there: see [`Overlay::add_binary`] with `std::env::current_exe()`).
pub fn in_guest() -> bool {
    fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.split(' ').any(|w| w == "furrow.guest=1"))
}

/// One boot's settings.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// Tag in the guest's unique name (`ft<pid>x<n><tag>`).
    pub tag: String,
    /// Guest memory; default: 512 MiB, more when the per-boot files are
    /// large (the initramfs lives in RAM twice while it unpacks).
    pub memory_mib: Option<u32>,
    /// Appended to the kernel command line.
    pub cmdline: String,
    /// A `/bin/sh` script (busybox ash); its exit code is the result.
    pub payload: String,
    /// Extra files for this boot.
    pub files: Overlay,
    /// Modules `modprobe`d before the payload (`virtio_net` is added when
    /// there are NICs).
    pub modules: Vec<String>,
    pub nics: Vec<Nic>,
    /// From QEMU's start to the payload's end.
    pub timeout: Duration,
}

impl GuestConfig {
    pub fn new(payload: &str) -> GuestConfig {
        GuestConfig {
            tag: "vm".to_string(),
            memory_mib: None,
            cmdline: String::new(),
            payload: payload.to_string(),
            files: Overlay::new(),
            modules: Vec::new(),
            nics: Vec::new(),
            timeout: Duration::from_secs(120),
        }
    }

    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.to_string();
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = Some(mib);
        self
    }

    pub fn cmdline(mut self, extra: &str) -> Self {
        self.cmdline = extra.to_string();
        self
    }

    pub fn module(mut self, name: &str) -> Self {
        self.modules.push(name.to_string());
        self
    }

    pub fn nic(mut self, nic: Nic) -> Self {
        self.nics.push(nic);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// The outcome of a boot that reached `FURROW-EXIT`.
#[derive(Debug, Clone)]
pub struct GuestRun {
    pub exit_code: i32,
    /// What the payload printed (stdout and stderr, between the markers).
    pub output: String,
    /// The whole serial console (CR removed).
    pub console: String,
    /// QEMU start to `FURROW-BEGIN` (host clock, 50 ms resolution): kernel
    /// boot, init, module loading.
    pub boot_time: Duration,
    /// `FURROW-BEGIN` to `FURROW-EXIT`.
    pub payload_time: Duration,
    /// QEMU start to QEMU exit.
    pub total_time: Duration,
    /// The guest NICs' MACs, in order (eth0, eth1, ...).
    pub macs: Vec<String>,
}

impl GuestRun {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// A running (or finished) guest. Dropping it kills QEMU and removes its
/// taps, bridges and run directory.
pub struct Guest {
    pub name: String,
    pub dir: PathBuf,
    pub console_path: PathBuf,
    pub macs: Vec<String>,
    pub memory_mib: u32,
    child: Option<Child>,
    started: Instant,
    deadline: Instant,
    begin_at: Option<Instant>,
    exit_at: Option<Instant>,
    nics: Vec<NicSetup>,
    keep: bool,
}

/// The text after `BEGIN` and before `EXIT`, and the exit code.
pub fn parse_console(console: &str) -> Option<(i32, String)> {
    let begin = console.find(BEGIN_MARKER)?;
    let body_start = console[begin..].find('\n').map(|i| begin + i + 1)?;
    let exit = console[body_start..]
        .rfind(&format!("\n{EXIT_MARKER} "))
        .map(|i| body_start + i)?;
    let code: i32 = console[exit + 1 + EXIT_MARKER.len() + 1..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // The newline before the marker is init's (an `echo`).
    Some((code, console[body_start..exit].to_string()))
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Guest {
    /// Boots, runs the payload and waits for the power-off.
    pub fn boot(config: GuestConfig) -> anyhow::Result<GuestRun> {
        Guest::start(config)?.wait()
    }

    /// Starts QEMU and returns while the guest runs (wait for its output
    /// with [`Guest::wait_for_output`], for its end with [`Guest::wait`]).
    /// Must be dropped on the thread that started it: QEMU dies with that
    /// thread.
    pub fn start(config: GuestConfig) -> anyhow::Result<Guest> {
        // Also sweeps stray guests (janitor::sweep calls guest::sweep).
        crate::janitor::sweep();
        let img = Image::get()?;
        let name = names::unique(&config.tag);
        let dir = PathBuf::from(STATE_ROOT).join(&name);
        fs::create_dir_all(&dir)?;
        let mut g = Guest {
            console_path: dir.join("console.log"),
            name,
            dir,
            macs: Vec::new(),
            memory_mib: 0,
            child: None,
            started: Instant::now(),
            deadline: Instant::now() + config.timeout,
            begin_at: None,
            exit_at: None,
            nics: Vec::new(),
            keep: false,
        };
        let initrd = g.write_initrd(&img, &config)?;
        let initrd_mib = (fs::metadata(&initrd)?.len() >> 20) as u32;
        g.memory_mib = config
            .memory_mib
            .unwrap_or_else(|| 512.max(256 + 3 * initrd_mib));

        // NICs: all in one namespace, where QEMU runs.
        let netns = match config.nics.first() {
            Some(n) => {
                if config.nics.iter().any(|m| m.netns != n.netns) {
                    bail!("all NICs of a guest must be in one network namespace (QEMU runs there)");
                }
                Some(n.netns.clone())
            }
            None => None,
        };
        for (i, nic) in config.nics.iter().enumerate() {
            let s = NicSetup::create(nic, i)?;
            g.macs.push(s.mac.clone());
            g.nics.push(s);
        }

        let mut cmd = match &netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(QEMU);
                c
            }
            None => Command::new(QEMU),
        };
        let append = format!(
            "console=ttyS0 panic=-1 quiet rdinit=/init furrow.guest=1 mitigations=off {}",
            config.cmdline
        );
        cmd.args(["-name", &g.name])
            .args(["-accel", "tcg", "-smp", "1"])
            .args(["-m", &g.memory_mib.to_string()])
            // No default devices: in particular no user-mode network.
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-no-reboot", "-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", g.console_path.display()))
            .arg("-kernel")
            .arg(&img.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", append.trim_end()]);
        for (i, s) in g.nics.iter().enumerate() {
            cmd.arg("-netdev").arg(format!(
                "tap,id=n{i},ifname={},script=no,downscript=no",
                s.tap
            ));
            cmd.arg("-device").arg(format!(
                "virtio-net-pci,netdev=n{i},mac={},host_mtu={},romfile=,addr={:#x}",
                s.mac,
                s.mtu,
                4 + i
            ));
        }
        let log = File::create(g.dir.join("qemu.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs in the
        // child before exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        g.started = Instant::now();
        g.deadline = g.started + config.timeout;
        g.child = Some(cmd.spawn().context("starting qemu-system-x86_64")?);
        Ok(g)
    }

    /// The per-boot initramfs: the base image followed by this boot's
    /// archive.
    fn write_initrd(&self, img: &Image, config: &GuestConfig) -> anyhow::Result<PathBuf> {
        let mut ov = config.files.clone();
        let mut modules = config.modules.clone();
        if !config.nics.is_empty() && !modules.iter().any(|m| m == "virtio_net") {
            modules.insert(0, "virtio_net".to_string());
        }
        for m in &modules {
            if m.is_empty()
                || !m
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
            {
                bail!("bad module name {m:?}");
            }
        }
        let watchdog = config.timeout.as_secs() + 30;
        ov.add_text(
            "/furrow/boot.conf",
            &format!(
                "FURROW_MODULES=\"{}\"\nFURROW_WATCHDOG={watchdog}\nFURROW_NAME={}\n",
                modules.join(" "),
                self.name
            ),
        )?;
        let payload = format!("{}{}", shadow_functions(&ov), config.payload);
        ov.add_bytes("/furrow/payload.sh", payload.as_bytes(), 0o755)?;
        let path = self.dir.join("initrd.img");
        let mut out = BufWriter::new(File::create(&path)?);
        let mut base = File::open(&img.initrd)?;
        std::io::copy(&mut base, &mut out)?;
        ov.write_cpio(&mut out, &self.dir)?;
        out.flush()?;
        Ok(path)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The serial console so far (CR removed).
    pub fn console(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.console_path) {
            let mut b = Vec::new();
            let _ = f.read_to_end(&mut b);
            s = String::from_utf8_lossy(&b).replace('\r', "");
        }
        s
    }

    /// Polls the console: notes when the markers appear. Returns whether
    /// QEMU has exited.
    fn poll(&mut self) -> anyhow::Result<bool> {
        let exited = match self.child.as_mut() {
            Some(c) => c.try_wait()?.is_some(),
            None => true,
        };
        if self.begin_at.is_none() || self.exit_at.is_none() {
            let c = self.console();
            if self.begin_at.is_none() && c.contains(BEGIN_MARKER) {
                self.begin_at = Some(Instant::now());
            }
            if self.exit_at.is_none() && c.contains(&format!("\n{EXIT_MARKER} ")) {
                self.exit_at = Some(Instant::now());
            }
        }
        Ok(exited)
    }

    /// Waits until the console holds `needle` (the payload printed it),
    /// while the guest runs.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.poll()?;
            if self.console().contains(needle) {
                return Ok(());
            }
            if exited {
                bail!(
                    "guest {} ended before printing {needle:?}:\n{}",
                    self.name,
                    self.failure_context()
                );
            }
            if Instant::now() > deadline.min(self.deadline) {
                bail!(
                    "guest {} did not print {needle:?} within {timeout:?}:\n{}",
                    self.name,
                    self.failure_context()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the power-off (killing QEMU at the timeout) and parses
    /// the console.
    pub fn wait(mut self) -> anyhow::Result<GuestRun> {
        loop {
            if self.poll()? {
                break;
            }
            if Instant::now() > self.deadline {
                self.kill();
                bail!(
                    "guest {} timed out after {:.1?} (killed):\n{}",
                    self.name,
                    self.started.elapsed(),
                    self.failure_context()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let total_time = self.started.elapsed();
        let status = self.child.take().map(|mut c| c.wait()).transpose()?;
        let console = self.console();
        let Some((exit_code, output)) = parse_console(&console) else {
            bail!(
                "guest {} ended ({}) without {EXIT_MARKER}:\n{}",
                self.name,
                status.map(|s| s.to_string()).unwrap_or_default(),
                self.failure_context()
            );
        };
        let begin = self.begin_at.unwrap_or(self.started);
        let exit = self.exit_at.unwrap_or_else(Instant::now);
        Ok(GuestRun {
            exit_code,
            output,
            console,
            boot_time: begin - self.started,
            payload_time: exit.saturating_duration_since(begin),
            total_time,
            macs: self.macs.clone(),
        })
    }

    /// The console's tail and QEMU's own messages.
    fn failure_context(&self) -> String {
        let qemu = fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
        format!(
            "--- console (last 40 lines) ---\n{}\n--- qemu ---\n{}",
            tail(&self.console(), 40),
            tail(&qemu, 20)
        )
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Moves the timeout: QEMU is killed `from_now` from now. (The guest's
    /// own watchdog still powers it off 30 s after the configured
    /// timeout: configure a long timeout for a long-lived guest.)
    pub fn set_deadline(&mut self, from_now: Duration) {
        self.deadline = Instant::now() + from_now;
    }

    /// Leaves the run directory (console log, initrd) in place.
    pub fn keep_dir(&mut self) {
        self.keep = true;
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
        // Taps and bridges after QEMU let go of the taps.
        self.nics.clear();
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Debian's static busybox prefers its applets to anything on PATH
/// (FEATURE_SH_STANDALONE): `ip` in the payload would be busybox's even
/// with iproute2's in /usr/local/bin. Shell functions win over applets,
/// so the payload starts with one per binary of the overlay's bin
/// directories. (They do not reach `sh -c` children or applets that exec
/// others, like busybox `timeout` or `xargs`: use full paths there.)
fn shadow_functions(ov: &Overlay) -> String {
    let mut s = String::new();
    for p in ov.paths() {
        let Some((dir, name)) = p.rsplit_once('/') else {
            continue;
        };
        let ident = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ident && ["/usr/local/bin", "/usr/local/sbin"].contains(&dir) {
            s.push_str(&format!("{name}() {{ {p} \"$@\"; }}\n"));
        }
    }
    s
}

/// The `-name` of a QEMU process, if it is one.
fn qemu_name(pid: &str) -> Option<String> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if !args.first()?.ends_with(QEMU) {
        return None;
    }
    let i = args.iter().position(|a| a == "-name")?;
    args.get(i + 1).cloned()
}

fn dead_owner(name: &str) -> bool {
    names::owner_pid(name).is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
}

/// Kills QEMU processes of dead test processes and removes their
/// unfinished image builds. (Their run directories are under the lab
/// state root, which `janitor::sweep` cleans.)
pub fn sweep() {
    if let Ok(procs) = fs::read_dir("/proc") {
        for p in procs.flatten() {
            let pid = p.file_name().to_string_lossy().into_owned();
            let Ok(n) = pid.parse::<i32>() else { continue };
            if qemu_name(&pid).is_some_and(|name| dead_owner(&name)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(n),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    sweep_cache(&image::cache_root());
}

/// Unfinished builds of dead builders in an image cache.
pub(crate) fn sweep_cache(root: &Path) {
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            if dead_owner(&e.file_name().to_string_lossy()) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_console, shadow_functions, Overlay};

    #[test]
    fn overlay_binaries_shadow_busybox_applets() {
        let mut o = Overlay::new();
        o.add_text("/usr/local/bin/ip", "").unwrap();
        o.add_text("/usr/local/bin/furrow-lab", "").unwrap();
        o.add_text("/etc/x", "").unwrap();
        assert_eq!(shadow_functions(&o), "ip() { /usr/local/bin/ip \"$@\"; }\n");
    }

    #[test]
    fn console_markers() {
        let c = "boot noise\nFURROW-BEGIN uptime=1.2\nhello\nworld\n\nFURROW-EXIT 3 uptime=2.0\n[ 2.1] reboot: Power down\n";
        assert_eq!(parse_console(c), Some((3, "hello\nworld\n".to_string())));
        let c = "FURROW-BEGIN uptime=1\nno newline\nFURROW-EXIT 0 uptime=2\n";
        assert_eq!(parse_console(c), Some((0, "no newline".to_string())));
        assert_eq!(parse_console("FURROW-BEGIN uptime=1\nhello\n"), None);
        assert_eq!(parse_console("nothing\n"), None);
    }
}
