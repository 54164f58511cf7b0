//! The load: concurrent clients posting records of known content, each request with its own
//! Idempotency-Key, retried with the same key when its fate is unknown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, PostOutcome};
use crate::ledger::{Ledger, Outcome, SentRequest};
use crate::record::{RecordId, make_payload};
use crate::rng::Rng;

/// The order of acknowledgements, across every load of this process.
static ACK_ORDER: AtomicU64 = AtomicU64::new(1);

fn next_ack_order() -> u64 {
    ACK_ORDER.fetch_add(1, Ordering::Relaxed)
}

/// How to load a depot.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Concurrent clients; each sends one request at a time.
    pub clients: usize,
    /// Streams, shared by all clients, named `{stream_prefix}{i}`.
    pub streams: usize,
    /// Prefix of the stream names.
    pub stream_prefix: String,
    /// Most records in one array request.
    pub max_batch: usize,
    /// Share of requests (in percent) sent as an array rather than a single value.
    pub array_percent: u64,
    /// Most pad pieces per record (a few records get eight times as many).
    pub max_pad: usize,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop once this many records are acknowledged.
    pub records: Option<u64>,
    /// Fixes every choice of the run.
    pub seed: u64,
    /// Names this load in the record identities and keys; unique per ledger.
    pub run: u64,
    /// How many times a request is sent again (same key) after an answer that did not store it
    /// for sure, before the client moves on.
    pub retries: u32,
    /// The pause before such a retry.
    pub retry_pause: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            clients: 4,
            streams: 4,
            stream_prefix: "torture-".into(),
            max_batch: 20,
            array_percent: 50,
            max_pad: 48,
            duration: Some(Duration::from_secs(10)),
            records: None,
            seed: 0,
            run: 0,
            retries: 20,
            retry_pause: Duration::from_millis(25),
        }
    }
}

/// Runs the load until `stop` is cancelled, the duration has passed, or enough records are
/// acknowledged, and returns the ledger of every request. A request in flight when `stop` fires
/// is finished (its answer awaited) and not retried.
pub async fn run_load(client: &Client, options: &LoadOptions, stop: &CancellationToken) -> Ledger {
    let acked = Arc::new(AtomicU64::new(0));
    let deadline = options.duration.map(|d| Instant::now() + d);
    let tasks: Vec<_> = (0..options.clients)
        .map(|c| {
            let (client, options, stop, acked) =
                (client.clone(), options.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                one_client(c as u32, &client, &options, &stop, &acked, deadline).await
            })
        })
        .collect();
    let mut ledger = Ledger::default();
    for task in tasks {
        match task.await {
            Ok(part) => ledger.merge(part),
            Err(e) => ledger.tally(&format!("client task failed: {e}")),
        }
    }
    ledger
}

async fn one_client(
    c: u32,
    client: &Client,
    options: &LoadOptions,
    stop: &CancellationToken,
    acked: &AtomicU64,
    deadline: Option<Instant>,
) -> Ledger {
    let mut rng = Rng::derive(
        options.seed,
        options.run.wrapping_mul(1 << 20) + u64::from(c),
    );
    let mut ledger = Ledger::default();
    let mut n = 0u64;
    for q in 0u64.. {
        let done = stop.is_cancelled()
            || deadline.is_some_and(|d| Instant::now() >= d)
            || options
                .records
                .is_some_and(|target| acked.load(Ordering::Relaxed) >= target);
        if done {
            break;
        }
        let array = rng.chance(options.array_percent);
        let count = if array {
            rng.range(1, options.max_batch.max(1) as u64)
        } else {
            1
        };
        let ids: Vec<RecordId> = (0..count)
            .map(|_| {
                n += 1;
                RecordId {
                    run: options.run,
                    client: c,
                    n,
                }
            })
            .collect();
        let payloads = ids
            .iter()
            .map(|&id| make_payload(id, options.max_pad, &mut rng))
            .collect();
        let mut request = SentRequest {
            stream: format!(
                "{}{}",
                options.stream_prefix,
                rng.below(options.streams.max(1) as u64)
            ),
            key: format!("{}{}-{}-{q}", options.stream_prefix, options.run, c),
            array,
            ids,
            payloads,
            outcome: Outcome::Unknown,
            attempts: 0,
            ack_order: 0,
        };
        send(client, &mut request, options, stop, &mut ledger).await;
        if matches!(request.outcome, Outcome::Acked { .. }) {
            acked.fetch_add(request.payloads.len() as u64, Ordering::Relaxed);
        }
        ledger.requests.push(request);
    }
    ledger
}

/// Sends `request` until it is acknowledged or refused, retrying (same key) up to
/// `options.retries` times, and sets its outcome.
async fn send(
    client: &Client,
    request: &mut SentRequest,
    options: &LoadOptions,
    stop: &CancellationToken,
    ledger: &mut Ledger,
) {
    let body = Bytes::from(request.body());
    let mut maybe_stored = false;
    loop {
        request.attempts += 1;
        let outcome = client
            .post(&request.stream, &request.key, body.clone())
            .await;
        match outcome {
            PostOutcome::Created {
                first,
                last,
                replayed,
            } => {
                ledger.tally(if replayed { "201 replayed" } else { "201" });
                request.outcome = Outcome::Acked {
                    first,
                    last,
                    replayed,
                };
                request.ack_order = next_ack_order();
                return;
            }
            PostOutcome::Rejected(why) => {
                ledger.tally(&why);
                request.outcome = Outcome::Rejected;
                return;
            }
            PostOutcome::NotStored(why) => ledger.tally(&why),
            PostOutcome::Unknown(why) => {
                ledger.tally(&why);
                maybe_stored = true;
            }
        }
        request.outcome = if maybe_stored {
            Outcome::Unknown
        } else {
            Outcome::NotStored
        };
        if stop.is_cancelled() || request.attempts > options.retries {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(options.retry_pause) => {}
        }
    }
}

/// Sends again (same key, same records), once, about `percent` % of the requests whose fate is
/// unknown — as a client does after a crash. Depot must answer `201`: `replayed` if the first
/// attempt was stored, with new sequence numbers if it was not; never a second copy. Returns how
/// many were sent.
pub async fn retry_unknown(
    client: &Client,
    ledger: &mut Ledger,
    percent: u64,
    rng: &mut Rng,
) -> usize {
    let mut sent = 0;
    let mut tally = Vec::new();
    for request in ledger.requests.iter_mut() {
        if request.outcome != Outcome::Unknown || !rng.chance(percent) {
            continue;
        }
        sent += 1;
        request.attempts += 1;
        let body = Bytes::from(request.body());
        match client.post(&request.stream, &request.key, body).await {
            PostOutcome::Created {
                first,
                last,
                replayed,
            } => {
                tally.push(if replayed {
                    "retry: 201 replayed".to_owned()
                } else {
                    "retry: 201".to_owned()
                });
                request.outcome = Outcome::Acked {
                    first,
                    last,
                    replayed,
                };
                request.ack_order = next_ack_order();
            }
            PostOutcome::Rejected(why) => {
                tally.push(format!("retry: {why}"));
                request.outcome = Outcome::Rejected;
            }
            PostOutcome::NotStored(why) | PostOutcome::Unknown(why) => {
                tally.push(format!("retry: {why}"));
            }
        }
    }
    for answer in tally {
        ledger.tally(&answer);
    }
    sent
}

/// Sends `count` acknowledged requests again (same key, same records): each must be answered
/// `201` with `replayed: true` and the original sequence numbers. Returns what went wrong.
pub async fn replay_acked(
    client: &Client,
    ledger: &Ledger,
    count: usize,
    rng: &mut Rng,
) -> Vec<String> {
    let acked: Vec<&SentRequest> = ledger
        .requests
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Acked { .. }))
        .collect();
    let mut problems = Vec::new();
    if acked.is_empty() {
        return problems;
    }
    for _ in 0..count {
        let request = acked[rng.below(acked.len() as u64) as usize];
        let Outcome::Acked { first, last, .. } = request.outcome else {
            continue;
        };
        let answer = client
            .post(&request.stream, &request.key, Bytes::from(request.body()))
            .await;
        let expected = PostOutcome::Created {
            first,
            last,
            replayed: true,
        };
        if answer != expected {
            problems.push(format!(
                "replay of {} on {}: expected {expected:?}, got {answer:?}",
                request.key, request.stream
            ));
        }
    }
    problems
}
