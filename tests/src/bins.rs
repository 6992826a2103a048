//! Where the built binaries are: $FURROW_BIN_DIR, else the cargo target
//! directory the running test binary lives in (target/<profile>/deps/..).

use std::path::PathBuf;

pub fn dir() -> PathBuf {
    if let Ok(d) = std::env::var("FURROW_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut d = exe.parent().expect("exe dir").to_path_buf();
    if d.ends_with("deps") {
        d.pop();
    }
    d
}

pub fn path(name: &str) -> PathBuf {
    let p = dir().join(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (or set FURROW_BIN_DIR)",
        p.display()
    );
    p
}

pub fn netd() -> PathBuf {
    path("netd")
}

pub fn furrow() -> PathBuf {
    path("furrow")
}

pub fn netctl() -> PathBuf {
    path("netctl")
}
