//! Compiles the C eBPF programs under bpf/ with clang into OUT_DIR; src/object.rs embeds them.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

/// Objects to build: (source under bpf/, object file name in OUT_DIR).
const OBJECTS: &[(&str, &str)] = &[
    ("mgmt.bpf.c", "mgmt.bpf.o"),
    ("l2.bpf.c", "l2.bpf.o"),
    ("vip_fence.bpf.c", "vip_fence.bpf.o"),
];

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            // cargo shows build-script stderr on failure; keep it readable.
            eprintln!("\nfurrow-ebpf: cannot build the eBPF programs:\n  {msg}\n");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let bpf_dir = manifest.join("bpf");

    println!("cargo:rerun-if-env-changed=FURROW_BPF_CLANG");
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    rerun_for_sources(&bpf_dir)?;

    let clang = find_clang()?;
    let sys_include = Path::new("/usr/include");
    if !sys_include.join("bpf/bpf_helpers.h").exists() {
        return Err(
            "libbpf headers not found (/usr/include/bpf/bpf_helpers.h): install libbpf-dev \
             (apt-get install libbpf-dev)"
                .into(),
        );
    }
    // -target bpf does not add the multiarch directory that holds <asm/types.h>.
    let multiarch = sys_include.join(multiarch_triple());
    if !multiarch.join("asm/types.h").exists() {
        return Err(format!(
            "{}/asm/types.h not found: install linux-libc-dev",
            multiarch.display()
        ));
    }

    for (src, obj) in OBJECTS {
        let src_path = bpf_dir.join(src);
        let obj_path = out.join(obj);
        let output = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{}", bpf_dir.display()))
            .arg(format!("-I{}", multiarch.display()))
            .arg("-c")
            .arg(&src_path)
            .arg("-o")
            .arg(&obj_path)
            .output()
            .map_err(|e| format!("running {clang}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{clang} failed on {} ({}):\n{}",
                src_path.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    Ok(())
}

/// clang from $FURROW_BPF_CLANG, else `clang`, else `clang-14`.
fn find_clang() -> Result<String, String> {
    let candidates: Vec<String> = match env::var("FURROW_BPF_CLANG") {
        Ok(c) if !c.is_empty() => vec![c],
        _ => vec!["clang".into(), "clang-14".into()],
    };
    for c in &candidates {
        if let Ok(out) = Command::new(c).arg("--version").output() {
            if out.status.success() {
                return Ok(c.clone());
            }
        }
    }
    Err(format!(
        "no working clang found (tried {}): install Debian's clang (apt-get install clang \
         libbpf-dev) or set FURROW_BPF_CLANG to a clang that supports -target bpf",
        candidates.join(", ")
    ))
}

fn rerun_for_sources(dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            rerun_for_sources(&path)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("c") | Some("h")
        ) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Ok(())
}

/// Debian multiarch directory for the target we build for.
fn multiarch_triple() -> String {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    match arch.as_str() {
        "x86" => "i386-linux-gnu".into(),
        "arm" => "arm-linux-gnueabihf".into(),
        "powerpc64" => "powerpc64le-linux-gnu".into(),
        other => format!("{other}-linux-gnu"),
    }
}
