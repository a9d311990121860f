//! The REST rate limit: a token bucket per (app, user), the REST counterpart of the WebSocket's
//! per-connection bucket. A REST caller has no connection to hang a bucket on, so the bucket
//! belongs to the token's user: every REST call of that user, from any client, draws on it.
//!
//! Memory stays bounded by the users recently active: a bucket that has been idle long enough
//! to refill completely says nothing a fresh bucket would not, so it is dropped. Dropping
//! happens in a sweep when the table has doubled since the last one, which keeps the cost of
//! a call O(1) amortized and the table at most about twice the users seen within one refill
//! time (`burst / rate` seconds, 2 s with the defaults).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The table is never swept below this many entries: sweeping a small table buys nothing.
const MIN_SWEEP: usize = 1024;

/// Per-user token buckets for REST calls.
#[derive(Debug)]
pub struct RestLimiter {
    /// Tokens per second; 0 disables the limit.
    rate: f64,
    burst: f64,
    /// A bucket idle this long is full again, so it can be forgotten.
    refill: Duration,
    // A std-style (parking_lot) mutex, not an async one: it is held for a map lookup and a
    // little arithmetic, never across an `.await`.
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    /// app -> user -> bucket; nested so a lookup borrows the caller's `&str`s, allocating only
    /// for a user not seen recently.
    apps: HashMap<String, HashMap<String, Bucket>>,
    len: usize,
    next_sweep: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RestLimiter {
    /// `rate_per_sec` sustained, `burst` at once (at least 1); a rate of 0 disables the limit.
    pub fn new(rate_per_sec: u32, burst: u32) -> RestLimiter {
        let rate = f64::from(rate_per_sec);
        let burst = f64::from(burst.max(1));
        let refill = if rate_per_sec == 0 { Duration::ZERO } else { Duration::from_secs_f64(burst / rate) };
        RestLimiter {
            rate,
            burst,
            refill,
            table: Mutex::new(Table { apps: HashMap::new(), len: 0, next_sweep: MIN_SWEEP }),
        }
    }

    /// Takes one token from the bucket of `user` in `app`, or says in how many milliseconds
    /// one will be available.
    pub fn check(&self, app: &str, user: &str) -> Result<(), u64> {
        self.check_at(app, user, Instant::now())
    }

    /// [`RestLimiter::check`] at a given instant (tests pass their own clock).
    pub fn check_at(&self, app: &str, user: &str, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut t = self.table.lock();
        if t.len >= t.next_sweep {
            self.sweep(&mut t, now);
        }
        let bucket = match t.apps.get_mut(app).and_then(|users| users.get_mut(user)) {
            Some(b) => b,
            None => {
                t.len += 1;
                t.apps
                    .entry(app.to_owned())
                    .or_default()
                    .entry(user.to_owned())
                    .or_insert(Bucket { tokens: self.burst, last: now })
            }
        };
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - bucket.tokens) / self.rate) * 1000.0).ceil().max(1.0) as u64)
        }
    }

    /// How many users have a bucket (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.table.lock().len
    }

    /// Drops every bucket that has refilled completely, then lets the table double before the
    /// next sweep.
    fn sweep(&self, t: &mut Table, now: Instant) {
        let refill = self.refill;
        let mut len = 0;
        t.apps.retain(|_, users| {
            users.retain(|_, b| now.saturating_duration_since(b.last) < refill);
            len += users.len();
            !users.is_empty()
        });
        t.len = len;
        t.next_sweep = (len * 2).max(MIN_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses_with_the_wait_until_the_next_token() {
        let l = RestLimiter::new(2, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at("default", "ada", t0), Ok(()));
        }
        // Empty: one token comes back after 1/2 s.
        assert_eq!(l.check_at("default", "ada", t0), Err(500));
        assert_eq!(l.check_at("default", "ada", t0 + Duration::from_millis(250)), Err(250));
        assert_eq!(l.check_at("default", "ada", t0 + Duration::from_millis(500)), Ok(()));
        // Another user, and the same id in another app, have buckets of their own.
        assert_eq!(l.check_at("default", "bob", t0), Ok(()));
        assert_eq!(l.check_at("other", "ada", t0), Ok(()));
    }

    #[test]
    fn a_rate_of_zero_disables_the_limit_and_tracks_nobody() {
        let l = RestLimiter::new(0, 0);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(l.check_at("default", "ada", t0), Ok(()));
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn idle_users_are_forgotten_so_memory_stays_bounded() {
        // Refill time: 10 / 10 = 1 s.
        let l = RestLimiter::new(10, 10);
        let t0 = Instant::now();
        // Waves of distinct users, each wave after everyone before it has refilled.
        for wave in 0..20u64 {
            let now = t0 + Duration::from_secs(2 * wave);
            for i in 0..1000 {
                assert_eq!(l.check_at("default", &format!("u{wave}-{i}"), now), Ok(()));
            }
            assert!(l.tracked() <= 2 * 1000 + MIN_SWEEP, "wave {wave}: {} tracked", l.tracked());
        }
        // A user still inside its refill window is kept, with its bucket as it was.
        let now = t0 + Duration::from_secs(100);
        for _ in 0..10 {
            assert_eq!(l.check_at("default", "busy", now), Ok(()));
        }
        for i in 0..(2 * MIN_SWEEP) {
            assert_eq!(l.check_at("default", &format!("late-{i}"), now), Ok(()));
        }
        assert!(l.check_at("default", "busy", now).is_err(), "a sweep must not refill an active bucket");
    }
}
