//! The base guest image: a Debian cloud kernel and a busybox initramfs
//! holding the kernel modules Furrow needs, built from Debian packages on
//! first use and cached under `<cargo target dir>/furrow-guest/`
//! (`$FURROW_GUEST_DIR` overrides).
//!
//! Layout of the cache:
//!
//! ```text
//! furrow-guest/
//!   .lock                         flock: one builder at a time
//!   debs/                         downloaded kernel packages (reused)
//!   <release>_<pkg version>_r<recipe>-<hash>/   one finished image
//!     vmlinuz  initrd.gz  image.txt
//!   ft<pid>x<n>build/             a build in progress (swept when its owner is dead)
//! ```
//!
//! A build happens in a temporary directory and is renamed into place,
//! under an exclusive lock, so parallel test processes build once and a
//! killed builder leaves nothing that looks finished. The key holds the
//! kernel package version and the recipe (the module list, the init
//! script and [`RECIPE`]), so a change to either rebuilds.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

use crate::names;
use crate::netns::sh;

/// Bump when the way the image is built changes in a way the hash below
/// does not see.
pub const RECIPE: u32 = 1;

/// Modules copied into the image, with everything they depend on.
/// `virtio_pci` is built into Debian's cloud kernels; built-in names are
/// fine here.
pub const MODULES: &[&str] = &[
    // the guest NIC
    "virtio_pci",
    "virtio_net",
    // L2: Harvester-style bridge with VLAN filtering, 802.1Q, bonds
    "bridge",
    "8021q",
    "bonding",
    // links the lab and netd create
    "veth",
    "tun",
    "dummy",
    "macvlan",
    "ipvlan",
    "vxlan",
    // tc BPF datapath (clsact lives in sch_ingress)
    "sch_ingress",
    "cls_bpf",
    "act_mirred",
    // netd's masquerade
    "nf_tables",
    "nf_conntrack",
    "nf_nat",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_ct",
];

/// Module options of the guest (Debian ships the same ones in
/// /lib/modprobe.d): no bond0/dummy0 appear just because a module loads.
const MODPROBE_CONF: &str = "options bonding max_bonds=0\noptions dummy numdummies=0\n";

pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// The Debian package name pattern of cloud kernels.
fn is_cloud_kernel_package(name: &str) -> bool {
    name.strip_prefix("linux-image-")
        .and_then(|r| r.strip_suffix("-cloud-amd64"))
        // "6.1.0-56", "6.12.117+deb12"; not the "6.12" meta package
        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()) && v.matches('.').count() >= 2)
}

/// A finished, cached image.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    /// gzip-compressed newc cpio, zero-padded to a multiple of 4 bytes so
    /// that another archive can be appended.
    pub initrd: PathBuf,
    pub package: String,
    pub package_version: String,
    /// `uname -r` in the guest.
    pub release: String,
    /// Set when this process built the image.
    pub build_time: Option<Duration>,
}

static CACHED: Mutex<Option<Image>> = Mutex::new(None);

/// `<cargo target dir>/furrow-guest`, or `$FURROW_GUEST_DIR`.
pub fn cache_root() -> PathBuf {
    if let Ok(d) = std::env::var("FURROW_GUEST_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test binary> or target/<profile>/<binary>
    let exe = std::env::current_exe().expect("current_exe");
    let mut d = exe.parent().expect("exe dir").to_path_buf();
    if d.ends_with("deps") {
        d.pop();
    }
    d.pop();
    d.join("furrow-guest")
}

/// FNV-1a, stable across Rust releases (unlike `DefaultHasher`).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.iter().chain(&[0xffu8]) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

fn busybox_path() -> anyhow::Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).is_file() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("busybox is not installed (Debian package busybox-static; see scripts/deps.sh)")
}

fn busybox_version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "busybox-static"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn recipe_hash() -> String {
    let modules = MODULES.join(",");
    let recipe = RECIPE.to_string();
    let bb = busybox_version();
    let h = fnv1a(&[
        recipe.as_bytes(),
        modules.as_bytes(),
        INIT_SCRIPT.as_bytes(),
        MODPROBE_CONF.as_bytes(),
        bb.as_bytes(),
    ]);
    format!("r{RECIPE}-{:08x}", h as u32)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `dpkg --compare-versions a gt b`
fn version_gt(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success())
}

/// What apt knows, in brief: names, sizes and times of its package
/// lists (and the kernel override), to tell whether a cached choice of
/// kernel still holds.
fn apt_fingerprint() -> String {
    let mut parts = vec![std::env::var("FURROW_GUEST_KERNEL").unwrap_or_default()];
    if let Ok(entries) = fs::read_dir("/var/lib/apt/lists") {
        let mut v: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                let t = m
                    .modified()
                    .ok()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?;
                Some(format!(
                    "{}:{}:{}",
                    e.file_name().to_string_lossy(),
                    m.len(),
                    t.as_nanos()
                ))
            })
            .collect();
        v.sort();
        parts.extend(v);
    }
    format!(
        "{:016x}",
        fnv1a(&parts.iter().map(|p| p.as_bytes()).collect::<Vec<_>>())
    )
}

/// [`newest_kernel`], remembered in `<root>/kernel-choice` until apt's
/// lists change (asking apt costs about a second).
fn chosen_kernel(root: &Path) -> anyhow::Result<(String, String)> {
    let file = root.join("kernel-choice");
    let fp = apt_fingerprint();
    if let Ok(s) = fs::read_to_string(&file) {
        let l: Vec<&str> = s.lines().collect();
        if l.len() == 3 && l[0] == fp {
            return Ok((l[1].to_string(), l[2].to_string()));
        }
    }
    let (p, v) = newest_kernel()?;
    let tmp = root.join(format!("{}choice", names::unique("")));
    fs::write(&tmp, format!("{fp}\n{p}\n{v}\n"))?;
    fs::rename(&tmp, &file)?;
    Ok((p, v))
}

/// The newest cloud kernel apt can download: (package, version).
/// `$FURROW_GUEST_KERNEL` names a package to use instead.
pub fn newest_kernel() -> anyhow::Result<(String, String)> {
    let names: Vec<String> = match std::env::var("FURROW_GUEST_KERNEL") {
        Ok(p) => vec![p],
        Err(_) => {
            let out = sh(Command::new("apt-cache").args(["pkgnames", "linux-image-"]))?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|n| is_cloud_kernel_package(n))
                .map(str::to_string)
                .collect()
        }
    };
    if names.is_empty() {
        bail!("apt knows no linux-image-*-cloud-amd64 package (run apt-get update)");
    }
    let out = sh(Command::new("apt-cache").arg("policy").args(&names))?;
    let mut best: Option<(String, String)> = None;
    let mut current: Option<String> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            current = Some(line.trim_end_matches(':').to_string());
        } else if let Some(v) = line.trim().strip_prefix("Candidate:") {
            let v = v.trim();
            if v == "(none)" {
                continue;
            }
            if let Some(pkg) = current.take() {
                if best.as_ref().is_none_or(|(_, bv)| version_gt(v, bv)) {
                    best = Some((pkg, v.to_string()));
                }
            }
        }
    }
    best.context("no cloud kernel package has an installable candidate")
}

impl Image {
    /// The cached image for the newest kernel, built if missing. Cheap
    /// after the first call in a process.
    pub fn get() -> anyhow::Result<Image> {
        let mut cached = CACHED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(img) = cached.as_ref() {
            return Ok(img.clone());
        }
        let img = Image::get_uncached(&cache_root())?;
        *cached = Some(img.clone());
        Ok(img)
    }

    /// [`Image::get`] in a given cache directory, without the per-process
    /// memo.
    pub fn get_uncached(root: &Path) -> anyhow::Result<Image> {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let recipe = recipe_hash();
        let (package, version) = match chosen_kernel(root) {
            Ok(k) => k,
            Err(e) => {
                // No apt metadata (offline): the newest image of this recipe.
                return Image::newest_cached(root, &recipe).with_context(|| {
                    format!("no kernel to build a guest image from ({e:#}) and none cached")
                });
            }
        };
        let key = format!("{}_{}", sanitize(&package), sanitize(&version));
        let dir = root.join(format!("{key}_{recipe}"));
        if let Ok(img) = Image::load(&dir) {
            return Ok(img);
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(".lock"))?;
        let _lock = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking the guest image cache: {e}"))?;
        // Someone else may have built it while we waited.
        if let Ok(img) = Image::load(&dir) {
            return Ok(img);
        }
        super::sweep_cache(root);
        let started = Instant::now();
        let tmp = root.join(names::unique("build"));
        let result = build(root, &tmp, &package, &version, &dir);
        let _ = fs::remove_dir_all(&tmp);
        result?;
        let mut img = Image::load(&dir)?;
        img.build_time = Some(started.elapsed());
        eprintln!(
            "furrow guest image: built {} in {:.1?} (initramfs {} KiB)",
            img.dir.display(),
            started.elapsed(),
            img.initrd_size() / 1024
        );
        // Older images (other kernels or recipes) are dead weight now.
        if let Ok(entries) = fs::read_dir(root) {
            for e in entries.flatten() {
                let p = e.path();
                if p != dir && p.join("image.txt").is_file() {
                    let _ = fs::remove_dir_all(&p);
                }
            }
        }
        Ok(img)
    }

    fn newest_cached(root: &Path, recipe: &str) -> anyhow::Result<Image> {
        let mut best: Option<(std::time::SystemTime, Image)> = None;
        for e in fs::read_dir(root)?.flatten() {
            if !e.file_name().to_string_lossy().ends_with(recipe) {
                continue;
            }
            if let Ok(img) = Image::load(&e.path()) {
                let t = e.metadata()?.modified()?;
                if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                    best = Some((t, img));
                }
            }
        }
        best.map(|(_, i)| i).context("no cached guest image")
    }

    fn load(dir: &Path) -> anyhow::Result<Image> {
        let meta = fs::read_to_string(dir.join("image.txt"))?;
        let field = |k: &str| -> anyhow::Result<String> {
            meta.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
                .with_context(|| format!("{}: no {k}", dir.display()))
        };
        let img = Image {
            dir: dir.to_path_buf(),
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.gz"),
            package: field("package")?,
            package_version: field("version")?,
            release: field("release")?,
            build_time: None,
        };
        if !img.kernel.is_file() || !img.initrd.is_file() {
            bail!("{} is incomplete", dir.display());
        }
        Ok(img)
    }

    /// Size of the compressed base initramfs in bytes.
    pub fn initrd_size(&self) -> u64 {
        fs::metadata(&self.initrd).map(|m| m.len()).unwrap_or(0)
    }
}

/// The kernel package, downloaded once into `<root>/debs`.
fn kernel_deb(root: &Path, tmp: &Path, package: &str, version: &str) -> anyhow::Result<PathBuf> {
    let debs = root.join("debs");
    fs::create_dir_all(&debs)?;
    let wanted = format!("{}_{}", sanitize(package), sanitize(version));
    let cached = debs.join(format!("{wanted}.deb"));
    if cached.is_file() {
        return Ok(cached);
    }
    let dl = tmp.join("download");
    fs::create_dir_all(&dl)?;
    sh(Command::new("apt-get")
        .current_dir(&dl)
        .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
        .arg(format!("{package}={version}")))
    .context("downloading the guest kernel")?;
    let deb = fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download produced no .deb")?;
    // Old kernels are not needed any more.
    for e in fs::read_dir(&debs)?.flatten() {
        let _ = fs::remove_file(e.path());
    }
    fs::rename(&deb, &cached)?;
    Ok(cached)
}

fn build(root: &Path, tmp: &Path, package: &str, version: &str, dest: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(tmp)?;
    let deb = kernel_deb(root, tmp, package, version)?;
    let kroot = tmp.join("kernel");
    sh(Command::new("dpkg").arg("-x").arg(&deb).arg(&kroot))?;
    let release = fs::read_dir(kroot.join("lib/modules"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("the kernel package has no lib/modules/<release>")?;
    let vmlinuz = kroot.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} is missing", vmlinuz.display());
    }
    sh(Command::new("depmod").arg("-b").arg(&kroot).arg(&release))?;

    // The modules and their dependencies, as modprobe resolves them (with
    // no configuration from the host).
    let noconf = tmp.join("modprobe.d");
    fs::create_dir_all(&noconf)?;
    let out = sh(Command::new("modprobe")
        .arg("-d")
        .arg(&kroot)
        .args(["-S", &release])
        .arg("-C")
        .arg(&noconf)
        .args(["-a", "--show-depends"])
        .args(MODULES))
    .context("resolving module dependencies")?;
    let mut modules: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("insmod "))
        .filter_map(|l| l.split_whitespace().next())
        .map(PathBuf::from)
        .collect();
    modules.sort();
    modules.dedup();

    // The root file system.
    let st = tmp.join("root");
    let moddir = format!("lib/modules/{release}");
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "usr/local/bin",
        "usr/local/sbin",
        "lib",
        "lib64",
        "etc/modprobe.d",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var",
        "root",
        "furrow",
        &moddir,
    ] {
        fs::create_dir_all(st.join(d))?;
    }
    std::os::unix::fs::symlink("../run", st.join("var/run"))?;
    let bb = busybox_path()?;
    fs::copy(&bb, st.join("bin/busybox"))?;
    let list = sh(Command::new(&bb).arg("--list-full"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let p = st.join(applet.trim_start_matches('/'));
        if !p.exists() && p.parent().is_some_and(|d| d.is_dir()) {
            std::os::unix::fs::symlink("/bin/busybox", &p)?;
        }
    }
    let init = st.join("init");
    fs::write(&init, INIT_SCRIPT)?;
    set_mode(&init, 0o755)?;
    fs::write(st.join("etc/modprobe.d/furrow.conf"), MODPROBE_CONF)?;
    fs::write(st.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(st.join("etc/group"), "root:x:0:\n")?;
    fs::write(st.join("etc/hosts"), "127.0.0.1 localhost furrow-guest\n")?;
    fs::write(
        st.join("furrow/image.txt"),
        format!("package={package}\nversion={version}\nrelease={release}\n"),
    )?;

    let src_mods = kroot.join(&moddir);
    let mut compressed = Vec::new();
    for m in &modules {
        let rel = m
            .strip_prefix(&src_mods)
            .with_context(|| format!("module {} outside {}", m.display(), src_mods.display()))?;
        let dst = st.join(&moddir).join(rel);
        fs::create_dir_all(dst.parent().unwrap())?;
        fs::copy(m, &dst)?;
        if dst.extension().is_some_and(|x| x == "xz") {
            compressed.push(dst);
        }
    }
    // busybox modprobe loads plain .ko files most reliably.
    if !compressed.is_empty() {
        sh(Command::new("xz").arg("-d").args(&compressed))?;
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let s = src_mods.join(f);
        if s.is_file() {
            fs::copy(&s, st.join(&moddir).join(f))?;
        }
    }
    sh(Command::new("depmod").arg("-b").arg(&st).arg(&release))?;

    // Pack: cpio | gzip, then pad to a multiple of 4 for appended archives.
    let out_dir = tmp.join("out");
    fs::create_dir_all(&out_dir)?;
    fs::copy(&vmlinuz, out_dir.join("vmlinuz"))?;
    let initrd = out_dir.join("initrd.gz");
    let packed = Command::new("bash")
        .current_dir(&st)
        .arg("-c")
        .arg("set -o pipefail; find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6")
        .stdout(File::create(&initrd)?)
        .stderr(Stdio::piped())
        .output()?;
    if !packed.status.success() {
        bail!(
            "packing the initramfs failed: {}",
            String::from_utf8_lossy(&packed.stderr)
        );
    }
    let len = fs::metadata(&initrd)?.len();
    let pad = (4 - (len % 4) as usize) % 4;
    OpenOptions::new()
        .append(true)
        .open(&initrd)?
        .write_all(&[0u8; 4][..pad])?;
    fs::write(
        out_dir.join("image.txt"),
        format!(
            "package={package}\nversion={version}\nrelease={release}\nrecipe={}\nmodules={}\n",
            recipe_hash(),
            modules
                .iter()
                .filter_map(|m| m.file_name())
                .map(|n| n.to_string_lossy().trim_end_matches(".xz").to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    )?;
    fs::rename(&out_dir, dest)
        .with_context(|| format!("moving the image to {}", dest.display()))?;
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cloud_kernel_package_names() {
        assert!(super::is_cloud_kernel_package(
            "linux-image-6.1.0-56-cloud-amd64"
        ));
        assert!(super::is_cloud_kernel_package(
            "linux-image-6.12.117+deb12-cloud-amd64"
        ));
        assert!(!super::is_cloud_kernel_package("linux-image-cloud-amd64"));
        assert!(!super::is_cloud_kernel_package(
            "linux-image-6.12-cloud-amd64"
        ));
        assert!(!super::is_cloud_kernel_package(
            "linux-image-6.12-cloud-amd64-dbg"
        ));
        assert!(!super::is_cloud_kernel_package(
            "linux-image-6.1.0-56-cloud-amd64-unsigned"
        ));
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(super::fnv1a(&[b"a"]), super::fnv1a(&[b"a"]));
        assert_ne!(super::fnv1a(&[b"a", b"b"]), super::fnv1a(&[b"ab"]));
    }
}
