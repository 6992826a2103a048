//! The per-boot overlay: files that go into one guest on top of the base
//! image, written as an uncompressed `newc` cpio archive that is appended
//! to the base initramfs (the kernel unpacks concatenated archives in
//! order, later entries replacing earlier ones).
//!
//! Host binaries run in the guest when their shared libraries and the
//! dynamic loader come along: [`Overlay::add_binary`] asks `ldd` and copies
//! every library to the path `ldd` names, so the loader finds it where the
//! binary was linked to look.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Where [`Overlay::add_binary`] puts binaries (first on the guest's PATH).
pub const GUEST_BIN_DIR: &str = "/usr/local/bin";

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    Bytes {
        data: Vec<u8>,
        mode: u32,
    },
    File {
        src: PathBuf,
        mode: u32,
        strip_debug: bool,
    },
    Symlink(String),
}

/// Files for one boot, keyed by their absolute path in the guest.
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    entries: BTreeMap<String, Entry>,
}

fn guest_key(guest_path: &str) -> anyhow::Result<String> {
    let p = guest_path.trim_end_matches('/');
    if !p.starts_with('/') || p.len() < 2 {
        bail!("guest path {guest_path:?} must be absolute and not /");
    }
    if p.split('/').any(|c| c == ".." || c == ".") {
        bail!("guest path {guest_path:?} must not hold . or ..");
    }
    Ok(p.to_string())
}

impl Overlay {
    pub fn new() -> Self {
        Self::default()
    }

    /// A file with the given contents.
    pub fn add_bytes(
        &mut self,
        guest_path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> anyhow::Result<()> {
        let data = data.into();
        self.entries
            .insert(guest_key(guest_path)?, Entry::Bytes { data, mode });
        Ok(())
    }

    /// A text file, mode 0644.
    pub fn add_text(&mut self, guest_path: &str, text: &str) -> anyhow::Result<()> {
        self.add_bytes(guest_path, text.as_bytes(), 0o644)
    }

    /// A copy of a host file (read when the boot starts; symlinks are
    /// followed), keeping its permission bits.
    pub fn add_file(&mut self, guest_path: &str, host_path: &Path) -> anyhow::Result<()> {
        let meta = std::fs::metadata(host_path)
            .with_context(|| format!("guest file source {}", host_path.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", host_path.display());
        }
        self.entries.insert(
            guest_key(guest_path)?,
            Entry::File {
                src: host_path.to_path_buf(),
                mode: meta.permissions().mode() & 0o7777,
                strip_debug: false,
            },
        );
        Ok(())
    }

    pub fn add_dir(&mut self, guest_path: &str) -> anyhow::Result<()> {
        self.entries.insert(guest_key(guest_path)?, Entry::Dir);
        Ok(())
    }

    pub fn add_symlink(&mut self, guest_path: &str, target: &str) -> anyhow::Result<()> {
        self.entries
            .insert(guest_key(guest_path)?, Entry::Symlink(target.to_string()));
        Ok(())
    }

    /// A host executable as `/usr/local/bin/<file name>` plus every shared
    /// library `ldd` reports and the dynamic loader. Debug info is
    /// stripped from the copy (`objcopy --strip-debug`; our debug builds
    /// are mostly DWARF). Returns the guest path.
    pub fn add_binary(&mut self, host_path: &Path) -> anyhow::Result<String> {
        let name = host_path
            .file_name()
            .with_context(|| format!("{} has no file name", host_path.display()))?
            .to_string_lossy()
            .into_owned();
        let guest = format!("{GUEST_BIN_DIR}/{name}");
        self.add_binary_at(&guest, host_path)?;
        Ok(guest)
    }

    /// [`Overlay::add_binary`] at a chosen guest path.
    pub fn add_binary_at(&mut self, guest_path: &str, host_path: &Path) -> anyhow::Result<()> {
        let host_path = std::fs::canonicalize(host_path)
            .with_context(|| format!("binary {}", host_path.display()))?;
        for lib in shared_libraries(&host_path)? {
            let key = guest_key(&lib.display().to_string())?;
            self.entries.entry(key).or_insert(Entry::File {
                src: lib,
                mode: 0o755,
                strip_debug: false,
            });
        }
        self.entries.insert(
            guest_key(guest_path)?,
            Entry::File {
                src: host_path,
                mode: 0o755,
                strip_debug: true,
            },
        );
        Ok(())
    }

    /// Several binaries found on the host's PATH (e.g. `ip`, `nsenter`).
    pub fn add_host_tools(&mut self, names: &[&str]) -> anyhow::Result<Vec<String>> {
        names
            .iter()
            .map(|n| {
                let p = which(n).with_context(|| format!("{n} is not on the host's PATH"))?;
                self.add_binary(&p)
            })
            .collect()
    }

    /// Adds every entry of `other` (its entries win).
    pub fn merge(&mut self, other: &Overlay) {
        for (k, v) in &other.entries {
            self.entries.insert(k.clone(), v.clone());
        }
    }

    pub fn contains(&self, guest_path: &str) -> bool {
        guest_key(guest_path).is_ok_and(|k| self.entries.contains_key(&k))
    }

    /// Guest paths of all entries (parents not listed).
    pub fn paths(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Writes the overlay as a newc cpio archive (with every parent
    /// directory, which the kernel does not create by itself). `scratch`
    /// is a directory for stripped copies. Returns the bytes written.
    pub fn write_cpio(&self, out: &mut impl Write, scratch: &Path) -> anyhow::Result<u64> {
        let mut all: BTreeMap<String, &Entry> = BTreeMap::new();
        for (path, e) in &self.entries {
            let mut p = Path::new(path).parent();
            while let Some(dir) = p {
                let d = dir.display().to_string();
                if d == "/" {
                    break;
                }
                all.entry(d).or_insert(&Entry::Dir);
                p = dir.parent();
            }
            all.insert(path.clone(), e);
        }
        let mut w = CpioWriter::new(out);
        for (n, (path, e)) in all.iter().enumerate() {
            let name = path.trim_start_matches('/');
            match e {
                Entry::Dir => w.entry(name, 0o040755, &mut io::empty(), 0)?,
                Entry::Symlink(t) => w.entry(name, 0o120777, &mut t.as_bytes(), t.len() as u64)?,
                Entry::Bytes { data, mode } => w.entry(
                    name,
                    0o100000 | mode,
                    &mut data.as_slice(),
                    data.len() as u64,
                )?,
                Entry::File {
                    src,
                    mode,
                    strip_debug,
                } => {
                    let src = if *strip_debug {
                        strip_copy(src, &scratch.join(format!("strip{n}")))?
                    } else {
                        src.clone()
                    };
                    let mut f =
                        File::open(&src).with_context(|| format!("reading {}", src.display()))?;
                    let len = f.metadata()?.len();
                    w.entry(name, 0o100000 | mode, &mut f, len)?;
                }
            }
        }
        w.finish()
    }
}

/// `objcopy --strip-debug` into `dst`; the original when that fails
/// (not an ELF file, say).
fn strip_copy(src: &Path, dst: &Path) -> anyhow::Result<PathBuf> {
    let st = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(src)
        .arg(dst)
        .output();
    match st {
        Ok(o) if o.status.success() => Ok(dst.to_path_buf()),
        _ => {
            let _ = std::fs::remove_file(dst);
            Ok(src.to_path_buf())
        }
    }
}

/// A program on the host's PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The shared libraries and the loader `ldd` reports for a binary (none
/// for a static one).
pub fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {err}{text}", binary.display());
    }
    parse_ldd(&text).with_context(|| format!("libraries of {}", binary.display()))
}

fn parse_ldd(text: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.contains("statically linked") {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("library {} not found", name.trim());
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        // linux-vdso.so.1 and friends come from the kernel.
        if target.starts_with('/') {
            libs.push(PathBuf::from(target));
        }
    }
    Ok(libs)
}

/// A minimal writer of the `newc` cpio format (what the kernel's
/// initramfs unpacker reads).
pub struct CpioWriter<'a, W: Write> {
    out: &'a mut W,
    written: u64,
    ino: u32,
}

impl<'a, W: Write> CpioWriter<'a, W> {
    pub fn new(out: &'a mut W) -> Self {
        CpioWriter {
            out,
            written: 0,
            ino: 1,
        }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    /// One entry; `name` is relative (no leading '/').
    pub fn entry(
        &mut self,
        name: &str,
        mode: u32,
        data: &mut impl io::Read,
        len: u64,
    ) -> anyhow::Result<()> {
        if len > u32::MAX as u64 {
            bail!("{name} is too large for newc cpio");
        }
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            len,
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        let copied = io::copy(&mut io::Read::take(data, len), self.out)?;
        if copied != len {
            bail!("{name}: expected {len} bytes, read {copied}");
        }
        self.written += len;
        self.pad()?;
        Ok(())
    }

    /// The trailer; returns the archive's size.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        self.entry("TRAILER!!!", 0, &mut io::empty(), 0)?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let t = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                 \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                 \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(t).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn cpio_archive_lists_parents_first_and_is_aligned() {
        let mut o = Overlay::new();
        o.add_text("/furrow/a/b.txt", "hello").unwrap();
        o.add_symlink("/x/l", "/furrow/a/b.txt").unwrap();
        assert!(o.add_text("relative", "x").is_err());
        assert!(o.add_text("/a/../b", "x").is_err());
        let dir = std::env::temp_dir();
        let mut buf = Vec::new();
        let n = o.write_cpio(&mut buf, &dir).unwrap();
        assert_eq!(n as usize, buf.len());
        assert_eq!(buf.len() % 4, 0);
        let s = String::from_utf8_lossy(&buf);
        let names: Vec<usize> = ["furrow\0", "furrow/a\0", "furrow/a/b.txt\0", "x/l\0"]
            .iter()
            .map(|n| s.find(n).unwrap_or_else(|| panic!("{n} missing")))
            .collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert!(s.contains("TRAILER!!!"));
        assert!(s.contains("hello"));
    }
}
