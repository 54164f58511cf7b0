//! The ledger: every request the torture client sent, what it carried, and what became of it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::record::RecordId;

/// What became of one request, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Answered `201`: every record must be there, at `first..=last`, intact, exactly once.
    Acked {
        /// First sequence number.
        first: u64,
        /// Last sequence number.
        last: u64,
        /// Answered from an earlier attempt with the same idempotency key.
        replayed: bool,
    },
    /// Every attempt was answered "not stored" (or never reached depot): none of its records may
    /// be there.
    NotStored,
    /// Some attempt may have reached the store: its records may be there or not, but at most once
    /// and intact.
    Unknown,
    /// Refused with a `4xx`: none of its records may be there, and the refusal itself is an error.
    Rejected,
}

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentRequest {
    /// The stream it was posted to.
    pub stream: String,
    /// Its Idempotency-Key (unique in the ledger).
    pub key: String,
    /// Sent as a JSON array (else as one value).
    pub array: bool,
    /// The identity of each record.
    pub ids: Vec<RecordId>,
    /// The exact text of each record.
    pub payloads: Vec<String>,
    /// What became of it.
    pub outcome: Outcome,
    /// How many times it was sent.
    pub attempts: u32,
    /// The order of its acknowledgement among all acknowledgements of the load (for the ordering
    /// check); 0 if not acknowledged.
    pub ack_order: u64,
}

impl SentRequest {
    /// The body as sent: the one value, or the values as an array.
    pub fn body(&self) -> String {
        if self.array {
            format!("[{}]", self.payloads.join(", "))
        } else {
            self.payloads[0].clone()
        }
    }

    /// Who sent it.
    pub fn client(&self) -> u32 {
        self.ids.first().map_or(0, |id| id.client)
    }
}

/// Every request of one or more loads, and a tally of the answers they got.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// The requests, in the order they were finished.
    pub requests: Vec<SentRequest>,
    /// How often each kind of answer came (`"201"`, `"503 draining"`, `"broken: …"`).
    pub answers: BTreeMap<String, u64>,
}

impl Ledger {
    /// Adds `other`'s requests and tallies to this ledger.
    pub fn merge(&mut self, other: Ledger) {
        self.requests.extend(other.requests);
        for (answer, n) in other.answers {
            *self.answers.entry(answer).or_default() += n;
        }
    }

    /// Counts one answer.
    pub fn tally(&mut self, answer: &str) {
        // Keep the tally readable: errors carry addresses and OS details after the first colon.
        let key = answer.split(": ").take(2).collect::<Vec<_>>().join(": ");
        *self.answers.entry(key).or_default() += 1;
    }

    /// The streams written to.
    pub fn streams(&self) -> BTreeSet<String> {
        self.requests.iter().map(|r| r.stream.clone()).collect()
    }

    /// Records acknowledged.
    pub fn acked_records(&self) -> u64 {
        self.requests
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Acked { .. }))
            .map(|r| r.payloads.len() as u64)
            .sum()
    }

    /// Requests whose fate is unknown.
    pub fn unknown_requests(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| r.outcome == Outcome::Unknown)
            .count()
    }
}
