//! Times stored in records: milliseconds since the epoch, on a wall clock
//! that an operator or NTP may step. A stored time is trusted only up to
//! the longest wait the options allow ahead of now: past that, the clock
//! was stepped back since it was written, and the time is read as long
//! past. So no wait outlasts the longest one, however the clock moves, and
//! no load moves a stored time (a cap that moved on every load would never
//! be reached).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest wait the options allow (3600 s), in ms.
pub const MAX_WAIT_MS: u64 = 3_600_000;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// A deadline `wait` from now.
pub fn deadline(wait: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

/// Whether a stored time lies further ahead of `now_ms` than any wait.
fn beyond_reach(at_ms: u64, now_ms: u64) -> bool {
    at_ms > now_ms.saturating_add(MAX_WAIT_MS)
}

/// A stored deadline as a run trusts it: one beyond reach has passed (0).
pub fn trusted_deadline(deadline_ms: u64, now_ms: u64) -> u64 {
    if beyond_reach(deadline_ms, now_ms) {
        0
    } else {
        deadline_ms
    }
}

/// A stored moment (when something happened) as a run trusts it: one
/// beyond reach is long past (0). One a little ahead is kept: what waits
/// for it waits at most the longest wait more.
pub fn trusted_moment(at_ms: u64, now_ms: u64) -> u64 {
    trusted_deadline(at_ms, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_beyond_the_longest_wait_is_past_and_stays_so() {
        let now = 10 * MAX_WAIT_MS;
        // Within reach: kept as written, whenever it is read.
        assert_eq!(trusted_deadline(now + MAX_WAIT_MS, now), now + MAX_WAIT_MS);
        assert_eq!(trusted_moment(now + 5, now), now + 5);
        assert_eq!(trusted_deadline(now - 5, now), now - 5);
        // The clock was stepped back a day: past, and read again an hour
        // later (after a save that wrote 0), still past.
        let stepped = now + 24 * MAX_WAIT_MS;
        assert_eq!(trusted_deadline(stepped, now), 0);
        assert_eq!(trusted_deadline(0, now + MAX_WAIT_MS), 0);
        assert_eq!(trusted_moment(u64::MAX, now), 0);
        assert!(deadline(Duration::from_secs(1)) > now_ms());
    }
}
