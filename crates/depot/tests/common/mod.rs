//! Helpers shared by the store's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use depot::store::{
    Ack, AppendKind, AppendRequest, Appended, Readers, Store, StoreOptions, UnixMillis,
};
use winddown::commit::Sink;

#[path = "../mounts/mod.rs"]
mod mounts;
#[allow(unused_imports)] // each test file uses its own part
pub use mounts::{Mount, run_mount, skip};

pub fn request(stream: &str, payloads: &[&str], key: Option<&str>) -> AppendRequest {
    AppendRequest {
        stream: stream.to_owned(),
        payloads: payloads.iter().map(|p| (*p).to_owned()).collect(),
        idempotency_key: key.map(str::to_owned),
        received_at: UnixMillis(1_700_000_000_000),
    }
}

pub fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions::default()).expect("open store")
}

/// Commits a batch through the `Sink` trait, as the group committer does.
pub fn commit<S: Sink>(sink: &mut S, batch: &[S::Item]) -> Result<Vec<S::Ack>, S::Error> {
    sink.commit(batch)
}

pub fn appended(ack: &Ack) -> Appended {
    ack.clone().expect("request accepted")
}

/// The ack of a request this commit wrote as records `first..=last`.
pub fn written(first: u64, last: u64) -> Ack {
    Ok(Appended {
        first,
        last,
        kind: AppendKind::Written,
    })
}

/// The ack of a retry answered with the original records `first..=last`.
pub fn replayed(first: u64, last: u64) -> Ack {
    Ok(Appended {
        first,
        last,
        kind: AppendKind::Replayed,
    })
}

/// Eight requests of four records each (`{"id":"<n>-<j>","pad":"<pad>"}`) over streams s0..s2,
/// numbered on from `n`; each with its own idempotency key when `keyed`.
pub fn padded_batch(n: &mut u64, pad: &str, keyed: bool) -> Vec<AppendRequest> {
    (0..8)
        .map(|i| {
            *n += 1;
            let payloads: Vec<String> = (0..4)
                .map(|j| format!(r#"{{"id":"{n}-{j}","pad":"{pad}"}}"#))
                .collect();
            let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
            let key = keyed.then(|| format!("k{n}"));
            request(&format!("s{}", i % 3), &refs, key.as_deref())
        })
        .collect()
}

/// The payloads of `stream`'s first 100 records, in order.
pub fn payloads(readers: &Readers, stream: &str) -> Vec<String> {
    readers
        .read(stream, 0, 100)
        .expect("read the stream")
        .into_iter()
        .map(|r| r.payload)
        .collect()
}

/// An error with its sources, as a log line would show it.
#[allow(unused_imports)] // each test file uses its own part
pub use winddown::error_chain as chain;
