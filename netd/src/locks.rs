//! Per-key async locks: operations on one attachment are serialised,
//! operations on different attachments run in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Holds one key's lock; owns what it needs, so it can move into a
/// background task that finishes the operation.
pub struct KeyedGuard {
    owner: Arc<KeyedLocks>,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub async fn lock(self: &Arc<Self>, key: &str) -> KeyedGuard {
        let m = {
            let mut map = self.map.lock().expect("lock map poisoned");
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = m.lock_owned().await;
        KeyedGuard {
            owner: self.clone(),
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("lock map poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyedGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.owner.map.lock().expect("lock map poisoned");
        // Only the map still refers to it: nobody holds or waits; forget it.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn same_key_is_exclusive_and_entries_are_pruned() {
        let locks = Arc::new(KeyedLocks::default());
        let inside = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (l, i) = (locks.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = l.lock("k").await;
                assert_eq!(i.fetch_add(1, Ordering::SeqCst), 0);
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                i.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(locks.is_empty());
    }
}
