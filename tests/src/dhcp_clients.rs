//! Real DHCP clients no one here wrote, run inside a VM namespace: busybox
//! udhcpc and ISC dhclient. Each runs with a hook script that records
//! every event (with the options it got) in a file and applies address,
//! MTU and routes the way a distribution's script would, so a test sees
//! both what the client was told and what it did with it. The scripts
//! never touch files outside the test's directory (no resolv.conf).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{names, Netns};

/// One hook invocation: the event and the variables the client set.
pub type Event = BTreeMap<String, String>;

const UDHCPC: &str = "/usr/sbin/udhcpc";
const DHCLIENT: &str = "/usr/sbin/dhclient";

fn require(bin: &str, package: &str) -> anyhow::Result<()> {
    if !Path::new(bin).exists() {
        bail!("{bin} is missing: install the Debian package {package} (scripts/deps.sh)");
    }
    Ok(())
}

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> anyhow::Result<Dir> {
        let p = std::env::temp_dir().join(names::unique(tag));
        std::fs::create_dir_all(&p)?;
        Ok(Dir(p))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_script(path: &Path, body: &str) -> anyhow::Result<()> {
    std::fs::write(path, body)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Events recorded by a hook: blocks of `key=value` lines, each ended by
/// a line `end`.
fn read_events(path: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut cur = Event::new();
    for line in text.lines() {
        if line == "end" {
            out.push(std::mem::take(&mut cur));
        } else if let Some((k, v)) = line.split_once('=') {
            cur.insert(k.to_string(), v.to_string());
        }
    }
    out
}

fn wait_event(
    what: &str,
    path: &Path,
    timeout: Duration,
    pred: impl Fn(&Event) -> bool,
    skip: usize,
) -> anyhow::Result<Event> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(e) = read_events(path).into_iter().skip(skip).find(|e| pred(e)) {
            return Ok(e);
        }
        if Instant::now() >= end {
            bail!(
                "{what}: not within {timeout:?}; events so far: {:?}",
                read_events(path)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// busybox udhcpc in the foreground on one interface.
pub struct Udhcpc {
    child: Child,
    events: PathBuf,
    _dir: Dir,
}

impl Udhcpc {
    /// Starts udhcpc on `ifname` in `ns`, asking for MTU and classless
    /// routes, sending `hostname`.
    pub fn start(ns: &Netns, ifname: &str, hostname: &str) -> anyhow::Result<Udhcpc> {
        Self::start_with(ns, ifname, hostname, &[])
    }

    /// Like [`start`](Self::start) with extra udhcpc arguments.
    pub fn start_with(
        ns: &Netns,
        ifname: &str,
        hostname: &str,
        extra: &[&str],
    ) -> anyhow::Result<Udhcpc> {
        require(UDHCPC, "udhcpc")?;
        let dir = Dir::new("udhcpc")?;
        let events = dir.0.join("events");
        let script = dir.0.join("hook.sh");
        write_script(
            &script,
            &format!(
                r#"#!/bin/sh
event="$1"
case "$1" in
  deconfig) ip addr flush dev "$interface" ;;
  bound|renew)
    ip addr replace "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "${{router%% *}}" dev "$interface"
    fi
    ;;
esac
# Logged last: whoever sees the event also sees what was applied.
{{ echo "event=$event"; env | grep -E '^(ip|mask|subnet|router|dns|mtu|staticroutes|lease|serverid|domain|search|hostname|ntpsrv|siaddr|boot_file)='; echo end; }} >> {out}
exit 0
"#,
                out = events.display()
            ),
        )?;
        let mut args: Vec<String> = [
            "-f",
            "-i",
            ifname,
            "-s",
            &script.display().to_string(),
            "-O",
            "mtu",
            "-O",
            "staticroutes",
            "-O",
            "search",
            "-O",
            "ntpsrv",
            "-t",
            "10",
            "-T",
            "1",
            "-A",
            "1",
            "-x",
            &format!("hostname:{hostname}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = ns
            .cmd(UDHCPC)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting udhcpc")?;
        Ok(Udhcpc {
            child,
            events,
            _dir: dir,
        })
    }

    pub fn events(&self) -> Vec<Event> {
        read_events(&self.events)
    }

    /// Waits for the first `bound` event.
    pub fn bound(&self, timeout: Duration) -> anyhow::Result<Event> {
        wait_event(
            "udhcpc bound",
            &self.events,
            timeout,
            |e| e["event"] == "bound",
            0,
        )
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> anyhow::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)?;
        Ok(())
    }

    /// SIGUSR1: renew now (a unicast REQUEST from the bound address); the
    /// resulting `renew` event.
    pub fn renew(&self, timeout: Duration) -> anyhow::Result<Event> {
        let seen = self.events().len();
        self.signal(nix::sys::signal::Signal::SIGUSR1)?;
        wait_event(
            "udhcpc renew",
            &self.events,
            timeout,
            |e| e["event"] == "renew" || e["event"] == "bound",
            seen,
        )
    }

    /// SIGUSR2: release the lease (udhcpc then waits, deconfigured).
    pub fn release(&self, timeout: Duration) -> anyhow::Result<()> {
        let seen = self.events().len();
        self.signal(nix::sys::signal::Signal::SIGUSR2)?;
        wait_event(
            "udhcpc deconfig after release",
            &self.events,
            timeout,
            |e| e["event"] == "deconfig",
            seen,
        )
        .map(drop)
    }
}

impl Drop for Udhcpc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One DISCOVER..ACK attempt of udhcpc that quits: `Ok(None)` when no
/// lease came (`-n`), the bound event otherwise.
pub fn udhcpc_once(ns: &Netns, ifname: &str, tries: u32) -> anyhow::Result<Option<Event>> {
    let mut c = Udhcpc::start_with(ns, ifname, "once", &["-n", "-q", "-t", &tries.to_string()])?;
    let status = c.child.wait()?;
    let ev = c.events().into_iter().find(|e| e["event"] == "bound");
    if status.success() != ev.is_some() {
        bail!("udhcpc exited {status} with events {:?}", c.events());
    }
    Ok(ev)
}

/// ISC dhclient in the foreground on one interface, with its own lease
/// and pid files.
pub struct Dhclient {
    child: Option<Child>,
    ns_path: PathBuf,
    ifname: String,
    events: PathBuf,
    dir: Dir,
}

impl Dhclient {
    pub fn start(ns: &Netns, ifname: &str, hostname: &str) -> anyhow::Result<Dhclient> {
        require(DHCLIENT, "isc-dhcp-client")?;
        let dir = Dir::new("dhclient")?;
        let events = dir.0.join("events");
        write_script(
            &dir.0.join("hook.sh"),
            &format!(
                r#"#!/bin/sh
case "$reason" in
  PREINIT) ip link set dev "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
    [ -n "$new_interface_mtu" ] && ip link set dev "$interface" mtu "$new_interface_mtu"
    for r in $new_routers; do ip route replace default via "$r" dev "$interface"; break; done
    ;;
  RELEASE|EXPIRE|STOP) ip addr flush dev "$interface" ;;
esac
# Logged last: whoever sees the event also sees what was applied.
{{ echo "event=$reason"; env | grep -E '^new_'; echo end; }} >> {out}
exit 0
"#,
                out = events.display()
            ),
        )?;
        std::fs::write(
            dir.0.join("dhclient.conf"),
            format!(
                "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\n\
                 send host-name \"{hostname}\";\n\
                 request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers,\n\
                 \x20 domain-search, ntp-servers, interface-mtu, rfc3442-classless-static-routes;\n"
            ),
        )?;
        let mut d = Dhclient {
            child: None,
            ns_path: ns.path(),
            ifname: ifname.to_string(),
            events,
            dir,
        };
        let child = d
            .command(&["-d", "-1", "-v"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dhclient")?;
        d.child = Some(child);
        Ok(d)
    }

    fn command(&self, extra: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new("nsenter");
        c.arg(format!("--net={}", self.ns_path.display()))
            .arg("--")
            .arg(DHCLIENT)
            .args(extra);
        for (flag, f) in [
            ("-cf", "dhclient.conf"),
            ("-sf", "hook.sh"),
            ("-lf", "leases"),
            ("-pf", "pid"),
        ] {
            c.arg(flag).arg(self.dir.0.join(f));
        }
        c.arg(&self.ifname);
        c
    }

    pub fn events(&self) -> Vec<Event> {
        read_events(&self.events)
    }

    pub fn bound(&self, timeout: Duration) -> anyhow::Result<Event> {
        wait_event(
            "dhclient BOUND",
            &self.events,
            timeout,
            |e| e["event"] == "BOUND",
            0,
        )
    }

    /// Waits for dhclient's own renewal at T1.
    pub fn renewed(&self, timeout: Duration) -> anyhow::Result<Event> {
        wait_event(
            "dhclient RENEW",
            &self.events,
            timeout,
            |e| e["event"] == "RENEW",
            0,
        )
    }

    /// `dhclient -r`: sends RELEASE and stops the running dhclient.
    pub fn release(&mut self) -> anyhow::Result<()> {
        let out = self.command(&["-r", "-v"]).output()?;
        if !out.status.success() {
            bail!(
                "dhclient -r failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }
}

impl Drop for Dhclient {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An AF_PACKET socket inside a VM namespace for sending hand-made
/// Ethernet frames (malformed DHCP, a rogue server's replies).
pub struct RawSender {
    fd: std::os::fd::OwnedFd,
}

impl RawSender {
    pub fn open(ns: &Netns, ifname: &str) -> anyhow::Result<RawSender> {
        let ifname = ifname.to_string();
        let fd = ns.enter(move || -> anyhow::Result<std::os::fd::OwnedFd> {
            use std::os::fd::FromRawFd;
            let name = std::ffi::CString::new(ifname.clone())?;
            // SAFETY: plain libc calls; the descriptor is owned at once.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                bail!("no interface {ifname}");
            }
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if raw < 0 {
                bail!("socket: {}", std::io::Error::last_os_error());
            }
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = index as i32;
            let r = unsafe {
                libc::bind(
                    raw,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if r < 0 {
                bail!("bind: {}", std::io::Error::last_os_error());
            }
            Ok(fd)
        })??;
        Ok(RawSender { fd })
    }

    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: `frame` is a valid buffer of the length passed.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            bail!("send: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}
