//! The check: read every stream back and hold it against the ledger.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;

use crate::client::{Client, StoredRecord};
use crate::ledger::{Ledger, Outcome, SentRequest};
use crate::record::{Parsed, RecordId, parse_payload};

/// What the check found, in records unless said otherwise. Clean when every count after
/// `unacked_present` is zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Records acknowledged (`201`).
    pub acked: u64,
    /// Acknowledged records found at their sequence number, byte for byte.
    pub verified: u64,
    /// Records whose fate was unknown (a broken connection, a timeout, a crash).
    pub unacked: u64,
    /// Of those, the ones that are stored (exactly once, intact: allowed).
    pub unacked_present: u64,
    /// Acknowledged records missing from their sequence number.
    pub lost: u64,
    /// Extra copies of a record.
    pub duplicated: u64,
    /// Records stored with other text than was sent, or whose text fails its checksum.
    pub corrupt: u64,
    /// Records that were answered "not stored" (or `4xx`) but are stored.
    pub refused_present: u64,
    /// Intact records that no request of the ledger sent.
    pub foreign: u64,
    /// Sequence numbers that are not 1, 2, 3, … in a stream, and acknowledgements of one client
    /// whose sequence numbers go backwards.
    pub out_of_order: u64,
    /// Requests refused with a `4xx` (the torture client sends none that deserve one).
    pub rejected: u64,
}

impl Summary {
    /// No acknowledged record lost, nothing duplicated, changed, invented, refused yet stored,
    /// or out of order; no request rejected.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.corrupt == 0
            && self.refused_present == 0
            && self.foreign == 0
            && self.out_of_order == 0
            && self.rejected == 0
    }

    /// Adds `other` to this summary.
    pub fn add(&mut self, other: &Summary) {
        self.acked += other.acked;
        self.verified += other.verified;
        self.unacked += other.unacked;
        self.unacked_present += other.unacked_present;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.corrupt += other.corrupt;
        self.refused_present += other.refused_present;
        self.foreign += other.foreign;
        self.out_of_order += other.out_of_order;
        self.rejected += other.rejected;
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acked={} verified={} lost={} duplicated={} corrupt={} unacked={} unacked-present={} \
             refused-present={} foreign={} out-of-order={} rejected={}",
            self.acked,
            self.verified,
            self.lost,
            self.duplicated,
            self.corrupt,
            self.unacked,
            self.unacked_present,
            self.refused_present,
            self.foreign,
            self.out_of_order,
            self.rejected
        )
    }
}

/// The result of a check: the counts, and the first problems in words.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The counts.
    pub summary: Summary,
    /// Up to 20 problems, described.
    pub problems: Vec<String>,
}

/// Reads every stream of `ledger` back from the depot and checks it.
pub async fn verify(client: &Client, ledger: &Ledger) -> Result<Report, String> {
    Ok(check(ledger, &read_streams(client, ledger).await?))
}

/// Every record of every stream of `ledger`, as the depot serves them.
pub async fn read_streams(
    client: &Client,
    ledger: &Ledger,
) -> Result<BTreeMap<String, Vec<StoredRecord>>, String> {
    let mut stored = BTreeMap::new();
    for stream in ledger.streams() {
        let records = client.read_stream(&stream).await?;
        stored.insert(stream, records);
    }
    Ok(stored)
}

/// Holds the stored records of every stream (`stream → [(seq, text)]`, in the order served)
/// against the ledger.
pub fn check(ledger: &Ledger, stored: &BTreeMap<String, Vec<StoredRecord>>) -> Report {
    let mut report = Report::default();
    let mut problem = |summary: &mut Summary, field: fn(&mut Summary) -> &mut u64, text: String| {
        *field(summary) += 1;
        if report.problems.len() < 20 {
            report.problems.push(text);
        }
    };
    let mut s = Summary::default();

    // What is stored: by position, and by identity.
    let mut at: HashMap<(&str, u64), &str> = HashMap::new();
    let mut copies: HashMap<RecordId, Vec<(&str, u64)>> = HashMap::new();
    for (stream, records) in stored {
        for (i, (seq, text)) in records.iter().enumerate() {
            if *seq != i as u64 + 1 {
                problem(
                    &mut s,
                    |s| &mut s.out_of_order,
                    format!("{stream}: record #{} has sequence number {seq}", i + 1),
                );
            }
            at.insert((stream.as_str(), *seq), text.as_str());
            match parse_payload(text) {
                Parsed::Intact(id) => copies.entry(id).or_default().push((stream, *seq)),
                Parsed::Damaged => problem(
                    &mut s,
                    |s| &mut s.corrupt,
                    format!("{stream}#{seq}: damaged record {}", excerpt(text)),
                ),
            }
        }
    }

    // What was sent.
    let mut sent: HashMap<RecordId, (&SentRequest, usize)> = HashMap::new();
    for request in &ledger.requests {
        for (i, id) in request.ids.iter().enumerate() {
            sent.insert(*id, (request, i));
        }
    }
    for (id, places) in &copies {
        if !sent.contains_key(id) {
            problem(
                &mut s,
                |s| &mut s.foreign,
                format!("{places:?}: a record nobody sent: {id:?}"),
            );
        }
    }

    for request in &ledger.requests {
        if request.outcome == Outcome::Rejected {
            s.rejected += 1;
        }
        for (i, (id, payload)) in request.ids.iter().zip(&request.payloads).enumerate() {
            let places = copies.get(id).map_or(&[][..], Vec::as_slice);
            if places.len() > 1 {
                for _ in 1..places.len() {
                    problem(
                        &mut s,
                        |s| &mut s.duplicated,
                        format!(
                            "{id:?} (key {}) is stored {}×: {places:?}",
                            request.key,
                            places.len()
                        ),
                    );
                }
            }
            match request.outcome {
                Outcome::Acked { first, .. } => {
                    s.acked += 1;
                    let seq = first + i as u64;
                    match at.get(&(request.stream.as_str(), seq)) {
                        Some(text) if *text == payload.as_str() => s.verified += 1,
                        Some(text) if parse_payload(text) == Parsed::Intact(*id) => problem(
                            &mut s,
                            |s| &mut s.corrupt,
                            format!(
                                "{}#{seq}: acknowledged {id:?} changed: sent {}, stored {}",
                                request.stream,
                                excerpt(payload),
                                excerpt(text)
                            ),
                        ),
                        other => problem(
                            &mut s,
                            |s| &mut s.lost,
                            format!(
                                "{}#{seq}: acknowledged {id:?} (key {}) missing; found {} there, \
                                 and the record at {places:?}",
                                request.stream,
                                request.key,
                                other.map_or_else(|| "nothing".to_owned(), |t| excerpt(t))
                            ),
                        ),
                    }
                }
                Outcome::Unknown => {
                    s.unacked += 1;
                    if let Some(&(stream, seq)) = places.first() {
                        s.unacked_present += 1;
                        if at.get(&(stream, seq)) != Some(&payload.as_str()) {
                            problem(
                                &mut s,
                                |s| &mut s.corrupt,
                                format!("{stream}#{seq}: unacknowledged {id:?} stored changed"),
                            );
                        }
                    }
                }
                Outcome::NotStored | Outcome::Rejected => {
                    if !places.is_empty() {
                        problem(
                            &mut s,
                            |s| &mut s.refused_present,
                            format!(
                                "{id:?} (key {}) was answered 'not stored' but is at {places:?}",
                                request.key
                            ),
                        );
                    }
                }
            }
        }
    }

    // One client's acknowledgements, in the order they came, must move forward in each stream.
    let mut by_client: BTreeMap<(u64, u32, &str), Vec<&SentRequest>> = BTreeMap::new();
    for request in &ledger.requests {
        if let Outcome::Acked {
            replayed: false, ..
        } = request.outcome
        {
            let run = request.ids.first().map_or(0, |id| id.run);
            by_client
                .entry((run, request.client(), &request.stream))
                .or_default()
                .push(request);
        }
    }
    for requests in by_client.values_mut() {
        requests.sort_by_key(|r| r.ack_order);
        let mut previous: Option<(u64, &str)> = None;
        for request in requests.iter() {
            let Outcome::Acked { first, last, .. } = request.outcome else {
                continue;
            };
            if let Some((before, key)) = previous
                && first <= before
            {
                problem(
                    &mut s,
                    |s| &mut s.out_of_order,
                    format!(
                        "{}: {} was acknowledged after {key} but got {first}..={last}, not above {before}",
                        request.stream, request.key
                    ),
                );
            }
            previous = Some((last, &request.key));
        }
    }
    report.summary = s;
    report
}

fn excerpt(text: &str) -> String {
    let mut end = text.len().min(80);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end < text.len() {
        format!("{:?}…", &text[..end])
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::make_payload;
    use crate::rng::Rng;

    fn request(stream: &str, key: &str, first_n: u64, count: u64, outcome: Outcome) -> SentRequest {
        let mut rng = Rng::new(first_n);
        let ids: Vec<RecordId> = (first_n..first_n + count)
            .map(|n| RecordId {
                run: 1,
                client: 0,
                n,
            })
            .collect();
        SentRequest {
            stream: stream.into(),
            key: key.into(),
            array: count > 1,
            payloads: ids
                .iter()
                .map(|&id| make_payload(id, 8, &mut rng))
                .collect(),
            ids,
            outcome,
            attempts: 1,
            ack_order: first_n,
        }
    }

    fn acked(first: u64, last: u64) -> Outcome {
        Outcome::Acked {
            first,
            last,
            replayed: false,
        }
    }

    /// A ledger of three requests on stream `s`: two acknowledged, one unknown; and what a
    /// faithful depot stores for it.
    fn scenario() -> (Ledger, BTreeMap<String, Vec<StoredRecord>>) {
        let ledger = Ledger {
            requests: vec![
                request("s", "k1", 1, 2, acked(1, 2)),
                request("s", "k2", 3, 1, acked(3, 3)),
                request("s", "k3", 4, 2, Outcome::Unknown),
                request("s", "k4", 6, 1, Outcome::NotStored),
            ],
            answers: BTreeMap::new(),
        };
        let mut records = Vec::new();
        for r in &ledger.requests[..3] {
            for p in &r.payloads {
                records.push((records.len() as u64 + 1, p.clone()));
            }
        }
        (ledger, BTreeMap::from([("s".to_owned(), records)]))
    }

    #[test]
    fn a_faithful_store_is_clean() {
        let (ledger, stored) = scenario();
        let report = check(&ledger, &stored);
        assert!(report.summary.is_clean(), "{report:?}");
        assert_eq!(report.summary.acked, 3);
        assert_eq!(report.summary.verified, 3);
        assert_eq!(report.summary.unacked, 2);
        assert_eq!(report.summary.unacked_present, 2);
    }

    #[test]
    fn every_kind_of_damage_is_caught() {
        let (ledger, stored) = scenario();
        let damage = |f: &dyn Fn(&mut Vec<StoredRecord>)| {
            let mut stored = stored.clone();
            f(stored.get_mut("s").unwrap());
            check(&ledger, &stored).summary
        };
        // An acknowledged record lost (the rest shifted down).
        let s = damage(&|r| {
            r.remove(1);
            for (i, rec) in r.iter_mut().enumerate() {
                rec.0 = i as u64 + 1;
            }
        });
        assert!(s.lost >= 1 && !s.is_clean(), "{s}");
        // Lost at the tail.
        let s = damage(&|r| r.truncate(2));
        assert_eq!((s.lost, s.verified), (1, 2), "{s}");
        // A duplicate.
        let s = damage(&|r| {
            let copy = r[0].1.clone();
            r.push((6, copy));
        });
        assert_eq!(s.duplicated, 1, "{s}");
        // One byte changed (whitespace only: the JSON value is equal, the text is not).
        let s = damage(&|r| r[2].1 = r[2].1.replacen('{', "{ ", 1));
        assert_eq!(s.corrupt, 1, "{s}");
        // A refused request stored after all.
        let (ledger2, _) = scenario();
        let mut stored2 = stored.clone();
        let refused = ledger2.requests[3].payloads[0].clone();
        stored2.get_mut("s").unwrap().push((6, refused));
        assert_eq!(check(&ledger2, &stored2).summary.refused_present, 1);
        // A gap in the sequence numbers.
        let s = damage(&|r| r[4].0 = 9);
        assert_eq!(s.out_of_order, 1, "{s}");
        // Garbage.
        let s = damage(&|r| r.push((6, "{\"x\":1}".into())));
        assert_eq!(s.corrupt, 1, "{s}");
    }

    #[test]
    fn acknowledgements_going_backwards_are_out_of_order() {
        let mut ledger = Ledger::default();
        let mut a = request("s", "a", 1, 1, acked(2, 2));
        let mut b = request("s", "b", 2, 1, acked(1, 1));
        (a.ack_order, b.ack_order) = (1, 2);
        let stored = vec![(1, b.payloads[0].clone()), (2, a.payloads[0].clone())];
        ledger.requests = vec![a, b];
        let s = check(&ledger, &BTreeMap::from([("s".to_owned(), stored)])).summary;
        assert_eq!(s.out_of_order, 1, "{s}");
        assert_eq!(s.verified, 2, "{s}");
    }
}
