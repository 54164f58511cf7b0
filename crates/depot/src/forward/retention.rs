//! [`Retention`]: how long delivered records stay in the local store.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::store::{Prune, UnixMillis};

/// The `retain_delivered` setting: keep delivered records for a time (`"7d"`, `"12h"`, `"30m"`,
/// `"90s"`; by when depot received them) or keep a number of the newest per stream (`100000`).
/// Unset keeps everything. Records not yet delivered are never deleted, nor is a stream's newest
/// record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Delete delivered records received longer ago than this.
    Age(Duration),
    /// Keep only this many delivered records per stream.
    Count(u64),
}

/// A `retain_delivered` age that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{}", match problem {
    Problem::NoUnit => format!("{text:?} needs a unit: s, m, h, d or w (e.g. \"7d\")"),
    Problem::NotANumber => format!("{text:?} is not a whole number followed by a unit"),
    Problem::Unit(unit) => format!("unknown unit {unit:?} in {text:?}; use s, m, h, d or w"),
})]
struct RetentionError {
    text: String,
    problem: Problem,
}

#[derive(Debug)]
enum Problem {
    NoUnit,
    NotANumber,
    Unit(String),
}

impl Retention {
    /// The rule to apply at `now`.
    pub fn rule(self, now: UnixMillis) -> Prune {
        match self {
            Retention::Count(n) => Prune::KeepNewest(n),
            Retention::Age(age) => Prune::ReceivedBefore(UnixMillis(
                now.0
                    .saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)),
            )),
        }
    }

    fn parse(text: &str) -> Result<Retention, RetentionError> {
        let text = text.trim();
        let bad = |problem| RetentionError {
            text: text.to_owned(),
            problem,
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| bad(Problem::NoUnit))?;
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().map_err(|_| bad(Problem::NotANumber))?;
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            other => return Err(bad(Problem::Unit(other.to_owned()))),
        };
        Ok(Retention::Age(Duration::from_secs(
            n.saturating_mul(seconds),
        )))
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Retention::Count(n) => write!(f, "{n}"),
            Retention::Age(age) => {
                let s = age.as_secs();
                let (n, unit) = [(604_800, "w"), (86_400, "d"), (3600, "h"), (60, "m")]
                    .into_iter()
                    .find(|(u, _)| s % u == 0 && s > 0)
                    .map_or((s, "s"), |(u, unit)| (s / u, unit));
                write!(f, "{n}{unit}")
            }
        }
    }
}

impl Serialize for Retention {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Retention::Count(n) => serializer.serialize_u64(n),
            Retention::Age(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Retention, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Retention;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"7d\" or a number of records per stream")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Retention, E> {
                Ok(Retention::Count(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Retention, E> {
                u64::try_from(n)
                    .map(Retention::Count)
                    .map_err(|_| E::custom("a number of records cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Retention, E> {
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                    return text.parse().map(Retention::Count).map_err(E::custom);
                }
                Retention::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_counts() {
        let parse = |t: &str| {
            toml::from_str::<toml::Table>(&format!("v = {t}")).unwrap()["v"]
                .clone()
                .try_into::<Retention>()
        };
        assert_eq!(
            parse("\"7d\"").unwrap(),
            Retention::Age(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            parse("\"90s\"").unwrap(),
            Retention::Age(Duration::from_secs(90))
        );
        assert_eq!(parse("1000").unwrap(), Retention::Count(1000));
        assert_eq!(parse("\"1000\"").unwrap(), Retention::Count(1000));
        assert!(parse("\"7 days\"").is_err());
        assert!(parse("\"d\"").is_err());
        assert!(parse("-1").is_err());
        assert_eq!(
            Retention::Age(Duration::from_secs(7 * 86_400)).to_string(),
            "1w"
        );
        assert_eq!(Retention::Age(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(
            Retention::Age(Duration::from_secs(60)).rule(UnixMillis(100_000)),
            Prune::ReceivedBefore(UnixMillis(40_000))
        );
    }
}
