//! Small values every store module shares. A leaf: it uses no other store module.

use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time as milliseconds since the Unix epoch, as stored in `records.received_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The current wall-clock time.
    pub fn now() -> UnixMillis {
        UnixMillis::from(SystemTime::now())
    }
}

impl From<SystemTime> for UnixMillis {
    /// Truncates to whole milliseconds; times before 1970 are negative.
    fn from(t: SystemTime) -> UnixMillis {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => UnixMillis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => UnixMillis(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

/// Sequence numbers are stored as SQLite integers and are never negative (a CHECK enforces it).
pub(super) fn seq_u64(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}
