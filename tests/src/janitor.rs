//! Sweeps what killed test processes left behind: namespaces, netd
//! processes, bpffs pins and state directories whose names carry a pid
//! that no longer runs.

use std::path::{Path, PathBuf};

use crate::names;

pub const STATE_ROOT: &str = "/tmp/furrow-lab";
pub const BPF_ROOT: &str = "/sys/fs/bpf/furrow";

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn dead_owner(name: &str) -> bool {
    names::owner_pid(name).is_some_and(|p| !alive(p))
}

/// Removes leftovers of dead lab owners. Cheap; run at every lab start.
pub fn sweep() {
    // netd processes first, so their sockets and pins are free.
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if let Some(i) = args.iter().position(|a| a == "--instance") {
                if args.get(i + 1).is_some_and(|inst| dead_owner(inst)) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
    for dir in ["/run/netns"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if dead_owner(&n) {
                    crate::netns::Netns::delete(&n);
                }
            }
        }
    }
    for root in [STATE_ROOT, BPF_ROOT] {
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if dead_owner(&n) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    crate::guest::sweep();
}

/// Everything this machine holds that looks like a lab object (for the
/// leak checks of tests and the demo's teardown).
pub fn lab_objects() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in ["/run/netns", STATE_ROOT, BPF_ROOT] {
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                if names::owner_pid(&e.file_name().to_string_lossy()).is_some() {
                    out.push(e.path());
                }
            }
        }
    }
    out
}
