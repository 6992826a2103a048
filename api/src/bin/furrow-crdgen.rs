//! Writes the CRDs generated from furrow-api's types to manifests/crds/
//! (or to the directory given), removing generated files of kinds that no
//! longer exist. `--check` writes nothing and exits 1 when a file differs.
//!
//!   cargo run -p furrow-api --features schema --bin furrow-crdgen [-- --check] [DIR]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: furrow-crdgen [--check] [DIR (default: manifests/crds)]");
                return ExitCode::SUCCESS;
            }
            _ if dir.is_none() && !a.starts_with('-') => dir = Some(PathBuf::from(a)),
            _ => {
                eprintln!("furrow-crdgen: unexpected argument {a:?} (see --help)");
                return ExitCode::from(2);
            }
        }
    }
    // The crate lives in api/; manifests/ is beside it.
    let dir =
        dir.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds"));
    match run(&dir, check) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => {
            eprintln!(
                "furrow-crdgen: {n} file(s) in {} out of date",
                dir.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("furrow-crdgen: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// Returns how many files differ (in check mode) or 0 once written.
fn run(dir: &Path, check: bool) -> std::io::Result<usize> {
    let want = furrow_api::crd::all();
    let mut differ = 0;
    if !check {
        std::fs::create_dir_all(dir)?;
    }
    for (name, text) in &want {
        let path = dir.join(name);
        let have = std::fs::read_to_string(&path).ok();
        if have.as_deref() == Some(text.as_str()) {
            continue;
        }
        if check {
            eprintln!("differs: {}", path.display());
            differ += 1;
        } else {
            std::fs::write(&path, text)?;
            println!("wrote {}", path.display());
        }
    }
    // A generated file (it carries the header) of a kind that is gone.
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let generated =
            std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(furrow_api::crd::HEADER));
        if generated && !want.iter().any(|(n, _)| n == name) {
            if check {
                eprintln!("stale: {}", path.display());
                differ += 1;
            } else {
                std::fs::remove_file(&path)?;
                println!("removed {}", path.display());
            }
        }
    }
    Ok(differ)
}
