//! [`Backoff`]: bounded, jittered exponential delays between attempts.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// Delays that double from `min` up to `max`, each drawn uniformly from its upper half ("equal
/// jitter"), so that depots that lost the same server do not come back in lockstep.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub(super) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        jitter(base)
    }

    /// The longest delay, for failures that retrying soon will not fix.
    pub(super) fn longest(&mut self) -> Duration {
        self.current = self.max;
        jitter(self.max)
    }

    /// Back to the shortest delay, after a success.
    pub(super) fn reset(&mut self) {
        self.current = self.min;
    }
}

/// A duration in `[base/2, base]`.
fn jitter(base: Duration) -> Duration {
    // RandomState is seeded from the OS: enough randomness for spreading retries.
    let random = RandomState::new().hash_one(std::time::Instant::now());
    let half = base / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(if nanos == 0 { 0 } else { random % (nanos + 1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_bounds_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(30));
        let mut b = Backoff::new(min, max);
        let mut ceiling = min;
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(max);
        }
        assert!(b.next_delay() >= max / 2);
        b.reset();
        assert!(b.next_delay() <= min);
        assert!(b.longest() >= max / 2);
        let spread: std::collections::BTreeSet<_> = (0..20).map(|_| jitter(max)).collect();
        assert!(spread.len() > 10, "no jitter: {spread:?}");
    }
}
