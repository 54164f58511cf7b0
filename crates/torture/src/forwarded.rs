//! The forwarding check of the power-cut loop: once depot's forwarder has caught up, PostgreSQL's
//! `depot_records` must hold every record of the local store exactly once, at its sequence number
//! — every acknowledged one among them — and nothing else from this depot's origin.
//!
//! `payload` is `jsonb` there, which re-encodes the text (key order, spacing, escapes), so a row
//! is held against a record as a JSON value, not byte for byte; a torture record names itself
//! (`run`, `client`, `n`), which is how a copy at another sequence number is recognised.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::client::{Client, StoredRecord};
use crate::ledger::{Ledger, Outcome};
use crate::record::RecordId;

/// What the check of PostgreSQL found, in records. Clean when every count after `verified` is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ForwardSummary {
    /// Records acknowledged by depot.
    pub acked: u64,
    /// Acknowledged records found in PostgreSQL at their sequence number, as JSON equal.
    pub verified: u64,
    /// Acknowledged records missing from PostgreSQL (or another record at their sequence number).
    pub lost: u64,
    /// Extra copies of a record in PostgreSQL (the same record at a second sequence number).
    pub duplicated: u64,
    /// Rows whose record the local store does not hold at that sequence number: delivered, then
    /// undone locally by the cut, and the sequence number since given to another record.
    pub diverged: u64,
    /// Records of the local store not in PostgreSQL although the forwarder said it caught up.
    pub undelivered: u64,
    /// Rows in `depot_rejected` (a torture record never deserves it).
    pub rejected: u64,
}

impl ForwardSummary {
    /// Nothing lost, duplicated, diverged, undelivered or rejected.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.diverged == 0
            && self.undelivered == 0
            && self.rejected == 0
    }

    /// Adds `other` to this summary.
    pub fn add(&mut self, other: &ForwardSummary) {
        self.acked += other.acked;
        self.verified += other.verified;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.diverged += other.diverged;
        self.undelivered += other.undelivered;
        self.rejected += other.rejected;
    }
}

impl fmt::Display for ForwardSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acked={} verified={} lost={} duplicated={} diverged={} undelivered={} rejected={}",
            self.acked,
            self.verified,
            self.lost,
            self.duplicated,
            self.diverged,
            self.undelivered,
            self.rejected
        )
    }
}

/// The identity a torture record names in its JSON value, if it is one.
fn identity(value: &Value) -> Option<RecordId> {
    Some(RecordId {
        run: value.get("run")?.as_u64()?,
        client: u32::try_from(value.get("client")?.as_u64()?).ok()?,
        n: value.get("n")?.as_u64()?,
    })
}

/// Holds PostgreSQL's rows of one origin (`stream → [(seq, payload text)]`) against the ledger and
/// the local store (`local`, as [`crate::read_streams`] read it), `rejected` rows besides; up to 20
/// problems are described in `problems`.
pub fn check_forwarded(
    ledger: &Ledger,
    local: &BTreeMap<String, Vec<StoredRecord>>,
    pg: &BTreeMap<String, Vec<StoredRecord>>,
    rejected: u64,
    problems: &mut Vec<String>,
) -> ForwardSummary {
    let mut s = ForwardSummary {
        rejected,
        ..ForwardSummary::default()
    };
    let mut problem = |count: &mut u64, text: String| {
        *count += 1;
        if problems.len() < 20 {
            problems.push(text);
        }
    };
    if rejected > 0 {
        problem(
            &mut 0,
            format!("{rejected} records of this origin are in depot_rejected"),
        );
    }
    let parse = |text: &str| serde_json::from_str::<Value>(text).ok();
    let mut at: HashMap<(&str, u64), Option<Value>> = HashMap::new();
    let mut copies: HashMap<RecordId, u64> = HashMap::new();
    for (stream, rows) in pg {
        for (seq, text) in rows {
            let value = parse(text);
            if let Some(id) = value.as_ref().and_then(identity) {
                *copies.entry(id).or_default() += 1;
            }
            at.insert((stream.as_str(), *seq), value);
        }
    }
    for (id, n) in &copies {
        for _ in 1..*n {
            problem(&mut s.duplicated, format!("PostgreSQL holds {id:?} {n}×"));
        }
    }
    // Against the local store: the same records at the same sequence numbers, no more, no less.
    for (stream, records) in local {
        for (seq, text) in records {
            match at.get(&(stream.as_str(), *seq)) {
                None => problem(
                    &mut s.undelivered,
                    format!("{stream}#{seq}: in the local store, not in PostgreSQL"),
                ),
                Some(row) if *row != parse(text) => problem(
                    &mut s.diverged,
                    format!("{stream}#{seq}: PostgreSQL holds another record than the local store"),
                ),
                Some(_) => {}
            }
        }
    }
    for (stream, rows) in pg {
        let held = local.get(stream).map_or(0, |r| r.len());
        for (seq, _) in rows {
            let in_local = local
                .get(stream)
                .is_some_and(|r| r.binary_search_by_key(seq, |(s, _)| *s).is_ok());
            if !in_local {
                problem(
                    &mut s.diverged,
                    format!(
                        "{stream}#{seq}: in PostgreSQL, not in the local store (which holds {held})"
                    ),
                );
            }
        }
    }
    // Every acknowledged record, at the sequence number depot acknowledged.
    for request in &ledger.requests {
        let Outcome::Acked { first, .. } = request.outcome else {
            continue;
        };
        for (i, payload) in request.payloads.iter().enumerate() {
            s.acked += 1;
            let seq = first + i as u64;
            match at.get(&(request.stream.as_str(), seq)) {
                Some(Some(row)) if Some(row) == parse(payload).as_ref() => s.verified += 1,
                _ => problem(
                    &mut s.lost,
                    format!(
                        "{}#{seq}: acknowledged {:?} (key {}) is not in PostgreSQL",
                        request.stream, request.ids[i], request.key
                    ),
                ),
            }
        }
    }
    s
}

/// A connection to the PostgreSQL that depot forwards to.
#[derive(Debug)]
pub struct Postgres {
    client: tokio_postgres::Client,
}

impl Postgres {
    /// Connects to `url` (depot's `forward_to`) without TLS.
    pub async fn connect(url: &str) -> Result<Postgres, String> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                let tls = ["require", "verify-ca", "verify-full"]
                    .iter()
                    .any(|mode| url.contains(&format!("sslmode={mode}")));
                format!(
                    "cannot connect to the --forward-to PostgreSQL to check it: {}{}",
                    crate::client::chain(&e),
                    if tls {
                        " (the check connects without TLS: give it sslmode=disable or prefer)"
                    } else {
                        ""
                    }
                )
            })?;
        tokio::spawn(connection);
        Ok(Postgres { client })
    }

    /// Every row of `origin` in `streams`, and how many of its rows are in `depot_rejected`.
    pub async fn rows(
        &self,
        origin: &str,
        streams: &[String],
    ) -> Result<(BTreeMap<String, Vec<StoredRecord>>, u64), String> {
        let err = |e: tokio_postgres::Error| {
            format!("reading depot_records: {}", crate::client::chain(&e))
        };
        let mut by_stream: BTreeMap<String, Vec<StoredRecord>> = BTreeMap::new();
        for row in self
            .client
            .query(
                "SELECT stream, seq, payload::text FROM depot_records \
                 WHERE origin = $1 AND stream = ANY($2) ORDER BY stream, seq",
                &[&origin, &streams],
            )
            .await
            .map_err(err)?
        {
            let seq: i64 = row.get(1);
            by_stream
                .entry(row.get(0))
                .or_default()
                .push((seq.max(0) as u64, row.get(2)));
        }
        let rejected: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM depot_rejected WHERE origin = $1",
                &[&origin],
            )
            .await
            .map_err(err)?
            .get(0);
        Ok((by_stream, rejected.max(0) as u64))
    }
}

/// Waits until depot's forwarder says it has caught up (`/v1/status`: `forward.state` is
/// `caught_up` with no backlog), up to `within`; returns the origin id, or what the status said.
pub async fn wait_caught_up(client: &Client, within: Duration) -> Result<String, String> {
    let end = Instant::now() + within;
    let mut last = Value::Null;
    while Instant::now() < end {
        if let Ok(status) = client.status().await {
            let f = &status["forward"];
            if f["state"] == "caught_up"
                && f["backlog_records"] == 0
                && let Some(origin) = f["origin"].as_str()
            {
                return Ok(origin.to_owned());
            }
            last = f.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "forwarding did not catch up within {within:?}; forward status: {last}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::SentRequest;
    use crate::record::make_payload;
    use crate::rng::Rng;

    type Streams = BTreeMap<String, Vec<StoredRecord>>;

    /// Stream `s` of three acknowledged records, as the local store holds them, and as jsonb
    /// gives them back (re-encoded: no longer the same text).
    fn scenario() -> (Ledger, Streams, Streams) {
        let mut rng = Rng::new(5);
        let ids: Vec<RecordId> = (1..=3)
            .map(|n| RecordId {
                run: 1,
                client: 0,
                n,
            })
            .collect();
        let payloads: Vec<String> = ids
            .iter()
            .map(|&id| make_payload(id, 8, &mut rng))
            .collect();
        let ledger = Ledger {
            requests: vec![SentRequest {
                stream: "s".into(),
                key: "k".into(),
                array: true,
                ids,
                payloads: payloads.clone(),
                outcome: Outcome::Acked {
                    first: 1,
                    last: 3,
                    replayed: false,
                },
                attempts: 1,
                ack_order: 1,
            }],
            answers: BTreeMap::new(),
        };
        let local: Vec<StoredRecord> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64 + 1, p.clone()))
            .collect();
        let pg = local
            .iter()
            .map(|(seq, p)| {
                let v: Value = serde_json::from_str(p).unwrap();
                (*seq, v.to_string())
            })
            .collect();
        (
            ledger,
            BTreeMap::from([("s".to_owned(), local)]),
            BTreeMap::from([("s".to_owned(), pg)]),
        )
    }

    #[test]
    fn a_faithful_copy_is_clean_though_reencoded() {
        let (ledger, local, pg) = scenario();
        let mut problems = Vec::new();
        let s = check_forwarded(&ledger, &local, &pg, 0, &mut problems);
        assert!(s.is_clean(), "{s} {problems:?}");
        assert_eq!((s.acked, s.verified), (3, 3));
    }

    #[test]
    fn loss_duplicates_divergence_and_lag_are_caught() {
        let (ledger, local, pg) = scenario();
        let run = |f: &dyn Fn(&mut Vec<StoredRecord>, &mut Vec<StoredRecord>), rejected| {
            let (mut local, mut pg) = (local.clone(), pg.clone());
            f(local.get_mut("s").unwrap(), pg.get_mut("s").unwrap());
            check_forwarded(&ledger, &local, &pg, rejected, &mut Vec::new())
        };
        // A row missing: an acknowledged record lost, and one the local store holds undelivered.
        let s = run(&|_, pg| drop(pg.remove(1)), 0);
        assert_eq!((s.lost, s.undelivered, s.verified), (1, 1, 2), "{s}");
        // The same record a second time, at a fourth sequence number.
        let s = run(
            &|_, pg| {
                let copy = pg[0].1.clone();
                pg.push((4, copy));
            },
            0,
        );
        assert_eq!((s.duplicated, s.diverged), (1, 1), "{s}");
        // Another record at an acknowledged one's sequence number: what PostgreSQL keeps when a
        // delivered record was undone locally and its number reused (ON CONFLICT DO NOTHING).
        let s = run(&|_, pg| pg[2].1 = r#"{"run":9,"client":9,"n":9}"#.into(), 0);
        assert_eq!((s.lost, s.diverged), (1, 1), "{s}");
        // A rejected row.
        let s = run(&|_, _| {}, 2);
        assert_eq!(s.rejected, 2);
        assert!(!s.is_clean());
    }
}
