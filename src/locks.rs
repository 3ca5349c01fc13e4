//! Async locks by key, for work that must run in order per key (one socket's
//! messages, one channel's deliveries) while other keys interleave freely.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use futures::lock::{Mutex, OwnedMutexGuard};

/// One lock per key, created on first use and dropped when nobody holds or
/// waits for it.
#[derive(Default)]
pub struct KeyedLocks {
    locks: RefCell<HashMap<String, Arc<Mutex<()>>>>,
}

/// Held while the work of one key runs.
pub struct KeyGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits until `key` is free, then holds it until the guard is dropped.
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let mutex = Arc::clone(self.locks.borrow_mut().entry(key.to_owned()).or_default());
        let guard = mutex.lock_owned().await;
        KeyGuard {
            owner: self,
            key: key.to_owned(),
            guard: Some(guard),
        }
    }

    /// Whether anyone holds or waits for `key`.
    pub fn is_busy(&self, key: &str) -> bool {
        self.locks.borrow().contains_key(key)
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.owner.locks.borrow_mut();
        if locks
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            locks.remove(&self.key);
        }
    }
}
