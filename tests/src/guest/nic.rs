//! Guest NICs: taps in a network namespace the test owns, QEMU started in
//! that namespace and opening the tap by name.
//!
//! [`Nic::kubevirt_bridge`] reproduces KubeVirt's bridge binding inside a
//! pod's namespace: the CNI interface (say `eth1`) loses its addresses and
//! its MAC (which the VM gets, unless a MAC is given), a bridge
//! `k6t-eth1` joins it to a tap `tap<n>`, and the VM's virtio NIC sits on
//! the tap. [`Nic::tap`] is the plain building block for full-kernel
//! "node" guests: a tap in a namespace, optionally enslaved to a bridge
//! there, that the test wires to its fabric.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::netns::sh;

#[derive(Debug, Clone)]
pub enum NicKind {
    /// KubeVirt bridge binding of the pod interface `pod_iface`.
    KubevirtBridge { pod_iface: String },
    /// A tap named `tap`, enslaved to `master` (a bridge that exists in
    /// the namespace) when given.
    Tap { tap: String, master: Option<String> },
}

#[derive(Debug, Clone)]
pub struct Nic {
    /// The namespace the tap lives in (and QEMU runs in): a path such as
    /// `/run/netns/<name>` (see `Netns::path`).
    pub netns: PathBuf,
    pub kind: NicKind,
    /// The guest NIC's MAC. Default: the pod interface's MAC (KubeVirt
    /// style), or a random locally administered one for a plain tap.
    pub mac: Option<String>,
    /// MTU of the tap and of the guest NIC (virtio `host_mtu`). Default:
    /// the pod interface's MTU, or 1500.
    pub mtu: Option<u32>,
}

impl Nic {
    pub fn kubevirt_bridge(pod_netns: impl Into<PathBuf>, pod_iface: &str) -> Nic {
        Nic {
            netns: pod_netns.into(),
            kind: NicKind::KubevirtBridge {
                pod_iface: pod_iface.to_string(),
            },
            mac: None,
            mtu: None,
        }
    }

    pub fn tap(netns: impl Into<PathBuf>, tap: &str) -> Nic {
        Nic {
            netns: netns.into(),
            kind: NicKind::Tap {
                tap: tap.to_string(),
                master: None,
            },
            mac: None,
            mtu: None,
        }
    }

    /// Enslaves a [`Nic::tap`] to a bridge of its namespace.
    pub fn master(mut self, bridge: &str) -> Nic {
        if let NicKind::Tap { master, .. } = &mut self.kind {
            *master = Some(bridge.to_string());
        }
        self
    }

    pub fn mac(mut self, mac: &str) -> Nic {
        self.mac = Some(mac.to_string());
        self
    }

    pub fn mtu(mut self, mtu: u32) -> Nic {
        self.mtu = Some(mtu);
        self
    }
}

/// `ip` inside a namespace given by path.
pub fn ip_in(netns: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = sh(Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg("ip")
        .args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[0] = (b[0] & 0xfc) | 0x02;
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

/// What one NIC's setup created; undone on drop (after QEMU is gone).
#[derive(Debug)]
pub struct NicSetup {
    pub netns: PathBuf,
    /// The tap QEMU opens.
    pub tap: String,
    /// The bridge created for a KubeVirt-style NIC.
    pub bridge: Option<String>,
    /// The guest NIC's MAC.
    pub mac: String,
    pub mtu: u32,
    /// Links to delete, in order.
    created: Vec<String>,
    /// (interface, original MAC) to put back.
    restore_mac: Option<(String, String)>,
}

fn link_info(netns: &Path, ifname: &str) -> anyhow::Result<(String, u32)> {
    let out = ip_in(netns, &["-j", "link", "show", "dev", ifname])
        .with_context(|| format!("interface {ifname} in {}", netns.display()))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let l = &v[0];
    let mac = l["address"]
        .as_str()
        .context("interface has no MAC")?
        .to_string();
    let mtu = l["mtu"].as_u64().context("interface has no MTU")? as u32;
    Ok((mac, mtu))
}

impl NicSetup {
    /// Creates the tap (and bridge) of NIC number `index`.
    pub fn create(nic: &Nic, index: usize) -> anyhow::Result<NicSetup> {
        if let Some(m) = &nic.mac {
            if !valid_mac(m) {
                bail!("{m:?} is not a unicast MAC address");
            }
        }
        let ns = nic.netns.as_path();
        if !ns.exists() {
            bail!("network namespace {} does not exist", ns.display());
        }
        let mut s = NicSetup {
            netns: ns.to_path_buf(),
            tap: String::new(),
            bridge: None,
            mac: String::new(),
            mtu: 1500,
            created: Vec::new(),
            restore_mac: None,
        };
        // On error, `s` drops and removes what was created so far.
        match &nic.kind {
            NicKind::KubevirtBridge { pod_iface } => {
                let bridge = format!("k6t-{pod_iface}");
                if bridge.len() > 15 {
                    bail!("pod interface name {pod_iface:?} is too long for k6t-<name>");
                }
                let tap = format!("tap{index}");
                let (pod_mac, pod_mtu) = link_info(ns, pod_iface)?;
                s.mtu = nic.mtu.unwrap_or(pod_mtu);
                s.mac = match &nic.mac {
                    Some(m) => m.clone(),
                    None => {
                        // The VM takes the pod interface's MAC; the pod
                        // interface gets another one.
                        ip_in(ns, &["link", "set", pod_iface, "down"])?;
                        ip_in(ns, &["link", "set", pod_iface, "address", &random_mac()])?;
                        s.restore_mac = Some((pod_iface.clone(), pod_mac.clone()));
                        pod_mac
                    }
                };
                ip_in(ns, &["addr", "flush", "dev", pod_iface])?;
                ip_in(ns, &["link", "add", &bridge, "type", "bridge"])?;
                s.created.push(bridge.clone());
                s.add_tap(&tap)?;
                ip_in(ns, &["link", "set", pod_iface, "master", &bridge])?;
                ip_in(ns, &["link", "set", &tap, "master", &bridge])?;
                ip_in(ns, &["link", "set", pod_iface, "up"])?;
                ip_in(ns, &["link", "set", &tap, "up"])?;
                ip_in(ns, &["link", "set", &bridge, "up"])?;
                s.bridge = Some(bridge);
            }
            NicKind::Tap { tap, master } => {
                s.mtu = nic.mtu.unwrap_or(1500);
                s.mac = nic.mac.clone().unwrap_or_else(random_mac);
                s.add_tap(tap)?;
                if let Some(m) = master {
                    ip_in(ns, &["link", "set", tap, "master", m])?;
                }
                ip_in(ns, &["link", "set", tap, "up"])?;
            }
        }
        Ok(s)
    }

    fn add_tap(&mut self, tap: &str) -> anyhow::Result<()> {
        let ns = self.netns.clone();
        ip_in(&ns, &["tuntap", "add", "dev", tap, "mode", "tap"])?;
        self.created.insert(0, tap.to_string());
        self.tap = tap.to_string();
        ip_in(&ns, &["link", "set", tap, "mtu", &self.mtu.to_string()])?;
        Ok(())
    }
}

impl Drop for NicSetup {
    fn drop(&mut self) {
        if !self.netns.exists() {
            return;
        }
        for l in &self.created {
            let _ = ip_in(&self.netns, &["link", "del", l]);
        }
        if let Some((iface, mac)) = &self.restore_mac {
            let _ = ip_in(&self.netns, &["link", "set", iface, "address", mac]);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn macs() {
        let m = super::random_mac();
        assert!(super::valid_mac(&m), "{m}");
        assert_ne!(m, super::random_mac());
        assert!(super::valid_mac("52:54:00:12:34:56"));
        assert!(!super::valid_mac("01:00:5e:00:00:01"));
        assert!(!super::valid_mac("52:54:00:12:34"));
    }
}
