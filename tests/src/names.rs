//! Unique, short names for lab objects: `ft<pid>x<n><tag>`. The pid lets
//! the janitor tell a live test's objects from a dead one's. The demo
//! switches to fixed names (`fdemo-<n><tag>`) that outlive its process and
//! that the janitor never touches.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

static COUNTER: AtomicU32 = AtomicU32::new(0);
static FIXED: OnceLock<String> = OnceLock::new();

pub const PREFIX: &str = "ft";
pub const DEMO_PREFIX: &str = "fdemo-";

/// Makes every later name `<prefix><n><tag>` instead of pid-based.
pub fn use_fixed_prefix(prefix: &str) {
    let _ = FIXED.set(prefix.to_string());
}

/// A fresh name, unique on this machine while this process lives.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    match FIXED.get() {
        Some(p) => format!("{p}{n}{tag}"),
        None => format!("{PREFIX}{}x{n}{tag}", std::process::id()),
    }
}

/// The pid embedded in a lab name, if it is one.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() || !rest[digits.len()..].starts_with('x') {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_carry_the_pid() {
        let n = super::unique("node");
        assert_eq!(super::owner_pid(&n), Some(std::process::id()));
        assert_eq!(super::owner_pid("ftabc"), None);
        assert_eq!(super::owner_pid("fdemo-3n1"), None);
        assert_eq!(super::owner_pid("other"), None);
    }
}
