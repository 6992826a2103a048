//! Many VM ports on many VLANs on one node: shared by the scale test and
//! the scale benchmark. The VMs are "quiet": IPv6 is off in their
//! namespace before their interface arrives and they have no address, so
//! they send nothing on their own and every frame a port receives can be
//! accounted for.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cni::{self, Attachment};
use crate::lab::vlan_nad;
use crate::{names, Netns, Pod};

/// A quiet VM attached to `vlan` of cluster network `cn` through the netd
/// behind `socket`; returns it and how long the CNI ADD took.
pub fn quiet_vm(cn: &str, vlan: u16, socket: &Path, tag: &str) -> anyhow::Result<(Pod, Duration)> {
    let ns = Netns::new(&names::unique(tag))?;
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
    ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
    let config = vlan_nad(&format!("vlan{vlan}"), cn, vlan, socket);
    let container_id = format!("{}-c0ffee", ns.name);
    let mut att = Attachment::new(&container_id, &ns.path_str(), "eth0");
    att.args = Some(format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=lab;K8S_POD_NAME={tag}"
    ));
    let started = Instant::now();
    let out = cni::add(&att, &config);
    let took = started.elapsed();
    if !out.success() {
        bail!("ADD on VLAN {vlan} failed: {}\n{}", out.stdout, out.stderr);
    }
    Ok((
        Pod {
            result: out.json(),
            ns,
            container_id,
            ifname: "eth0".into(),
            config,
        },
        took,
    ))
}

/// A VM of the scale set: its VLAN and the ADD's latency.
pub struct QuietVm {
    pub vlan: u16,
    pub pod: Pod,
    pub add_latency: Duration,
}

/// `per_vlan` quiet VMs on each of `vlans`, added by `threads` runtimes at
/// once (as kubelet starts pods in parallel).
pub fn quiet_vms(
    cn: &str,
    vlans: &[u16],
    per_vlan: usize,
    socket: &Path,
    threads: usize,
) -> anyhow::Result<Vec<QuietVm>> {
    let work: Vec<u16> = vlans
        .iter()
        .flat_map(|v| std::iter::repeat_n(*v, per_vlan))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(work.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(vlan) = work.get(i).copied() else {
                    return;
                };
                let r = quiet_vm(cn, vlan, socket, "q")
                    .with_context(|| format!("quiet VM {i}"))
                    .map(|(pod, add_latency)| QuietVm {
                        vlan,
                        pod,
                        add_latency,
                    });
                let failed = r.is_err();
                results.lock().expect("results").push(r);
                if failed {
                    // Stop everyone: the first error is the story.
                    next.store(usize::MAX / 2, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            });
        }
    });
    results.into_inner().expect("results").into_iter().collect()
}

/// Sends `count` copies of an Ethernet broadcast frame (local experimental
/// EtherType 0x88b5, `marker` in the payload) out of `ifname` in `ns`.
pub fn send_broadcast(ns: &Netns, ifname: &str, count: usize, marker: u32) -> anyhow::Result<()> {
    let ifname = ifname.to_string();
    ns.enter(move || -> anyhow::Result<()> {
        // SAFETY: plain socket calls on a socket this function owns.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let cname = std::ffi::CString::new(ifname.clone())?;
            let ifindex = libc::if_nametoindex(cname.as_ptr());
            // The interface's own MAC as the source (sysfs would show the
            // namespace it was mounted in, not this thread's).
            let mut req: libc::ifreq = std::mem::zeroed();
            for (d, s) in req.ifr_name.iter_mut().zip(cname.as_bytes()) {
                *d = *s as libc::c_char;
            }
            if libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) < 0 {
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                bail!("SIOCGIFHWADDR on {ifname}: {e}");
            }
            let mut frame = vec![0xffu8; 6];
            frame.extend(
                req.ifr_ifru.ifru_hwaddr.sa_data[..6]
                    .iter()
                    .map(|b| *b as u8),
            );
            frame.extend_from_slice(&[0x88, 0xb5]);
            frame.extend_from_slice(&marker.to_be_bytes());
            frame.resize(60, 0);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            for _ in 0..count {
                let n = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    std::ptr::addr_of!(addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    libc::close(fd);
                    bail!("sendto on {ifname}: {e}");
                }
            }
            libc::close(fd);
        }
        Ok(())
    })?
}

/// Frames delivered to each port (by container id), from netd's view.
pub fn delivered(socket: &Path) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    let ports: Vec<furrow_api::wire::PortInfo> = furrow_api::client::Client::new(socket)
        .with_timeout(Duration::from_secs(60))
        .get("/v1/ports")?;
    Ok(ports
        .into_iter()
        .filter_map(|p| Some((p.container_id, p.counters?.rx_packets)))
        .collect())
}
