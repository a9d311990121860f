//! Caps on open WebSocket connections per user and per source address, so one user (or one
//! host) cannot take every connection the server can hold. A slot is taken before the
//! connection is served and given back when its [`Slot`] drops.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

/// Counts per key, bounded by `max` (0: no cap). Keys with no open connection are removed.
#[derive(Debug)]
pub struct Counter<K: Eq + Hash> {
    max: usize,
    open: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone + Send + 'static> Counter<K> {
    pub fn new(max: usize) -> Arc<Counter<K>> {
        Arc::new(Counter { max, open: Mutex::new(HashMap::new()) })
    }

    /// Takes a slot for `key`, or `None` when `key` already has `max` open.
    pub fn take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        if self.max == 0 {
            return Some(Slot { counter: self.clone(), key: None });
        }
        let mut open = self.open.lock();
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot { counter: self.clone(), key: Some(key) })
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// One open connection's place in a [`Counter`]; given back on drop.
#[derive(Debug)]
pub struct Slot<K: Eq + Hash> {
    counter: Arc<Counter<K>>,
    key: Option<K>,
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut open = self.counter.open.lock();
        if let Some(n) = open.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&key);
            }
        }
    }
}

/// The two caps of a server.
#[derive(Debug)]
pub struct ConnCaps {
    /// Keyed by (app, user).
    pub per_user: Arc<Counter<(String, String)>>,
    pub per_addr: Arc<Counter<IpAddr>>,
}

impl ConnCaps {
    pub fn new(per_user: usize, per_addr: usize) -> ConnCaps {
        ConnCaps { per_user: Counter::new(per_user), per_addr: Counter::new(per_addr) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_key_and_given_back() {
        let c = Counter::new(2);
        let a1 = c.take("a").expect("first");
        let _a2 = c.take("a").expect("second");
        assert!(c.take("a").is_none(), "third over the cap");
        let _b = c.take("b").expect("another key");
        drop(a1);
        let _a3 = c.take("a").expect("a slot was given back");
        let unlimited = Counter::new(0);
        let _all: Vec<_> = (0..1000).map(|_| unlimited.take("a").expect("no cap")).collect();
        assert!(unlimited.open.lock().is_empty(), "no bookkeeping without a cap");
    }
}
