//! Per (user, channel) throttles for the ops that are cheap to send and dear to serve: `typing`
//! fans out to every member, and `read` is a durable write. Time comes from the engine's clock.

use parking_lot::Mutex;
use std::collections::HashMap;

/// What the throttle says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Pass,
    /// Too soon after the last one: retry after this many milliseconds.
    Wait(u64),
}

/// (app, user, channel).
type Key = (String, String, String);

/// At most one request per `interval_ms` per key; the map forgets keys idle for longer than
/// that, so it holds only the keys active in the last interval.
#[derive(Debug)]
pub struct Throttle {
    interval_ms: i64,
    /// Key → (time of the last request let through, its state).
    last: Mutex<HashMap<Key, (i64, u64)>>,
}

/// Keys kept before idle ones are swept.
const SWEEP_AT: usize = 4096;

impl Throttle {
    /// `interval_ms` of 0 lets everything pass.
    pub fn new(interval_ms: u64) -> Throttle {
        Throttle { interval_ms: interval_ms.min(i64::MAX as u64) as i64, last: Mutex::new(HashMap::new()) }
    }

    /// Checks `(app, user, channel)` at `now_ms`. `state` distinguishes requests that always
    /// pass when it changes (typing started vs stopped).
    pub fn check(&self, app: &str, user: &str, channel: &str, state: u64, now_ms: i64) -> Verdict {
        if self.interval_ms == 0 {
            return Verdict::Pass;
        }
        let mut last = self.last.lock();
        if last.len() >= SWEEP_AT {
            let horizon = now_ms - self.interval_ms;
            last.retain(|_, (t, _)| *t > horizon);
        }
        let key = (app.to_owned(), user.to_owned(), channel.to_owned());
        match last.get_mut(&key) {
            Some((t, s)) if *s == state && now_ms - *t < self.interval_ms => {
                Verdict::Wait((self.interval_ms - (now_ms - *t)).max(1) as u64)
            }
            Some(entry) => {
                *entry = (now_ms, state);
                Verdict::Pass
            }
            None => {
                last.insert(key, (now_ms, state));
                Verdict::Pass
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_per_key_and_a_changed_state_passes() {
        let t = Throttle::new(1000);
        assert_eq!(t.check("a", "ada", "c", 1, 0), Verdict::Pass);
        assert_eq!(t.check("a", "ada", "c", 1, 400), Verdict::Wait(600));
        assert_eq!(t.check("a", "bob", "c", 1, 400), Verdict::Pass, "another user");
        assert_eq!(t.check("a", "ada", "d", 1, 400), Verdict::Pass, "another channel");
        assert_eq!(t.check("a", "ada", "c", 0, 500), Verdict::Pass, "stopped typing");
        assert_eq!(t.check("a", "ada", "c", 0, 1499), Verdict::Wait(1));
        assert_eq!(t.check("a", "ada", "c", 0, 1500), Verdict::Pass);
        assert_eq!(Throttle::new(0).check("a", "ada", "c", 1, 0), Verdict::Pass);
    }

    #[test]
    fn idle_keys_are_swept() {
        let t = Throttle::new(10);
        for i in 0..SWEEP_AT {
            t.check("a", &i.to_string(), "c", 0, 0);
        }
        t.check("a", "late", "c", 0, 100);
        assert_eq!(t.last.lock().len(), 1);
    }
}
