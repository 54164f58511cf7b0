//! SIGKILL a real writer process while it acknowledges batches; every acknowledged record must be
//! there after reopening, intact and exactly once.
//!
//! The test binary re-executes itself: `crash_child_writer` (ignored, and inert without
//! `DEPOT_CRASH_CHILD_DIR`) is the writer; it prints `ACK <stream> <first> <last> <hash>` for every
//! request after `Sink::commit` returned `Ok`.
#![cfg(unix)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use depot::store::{AppendRequest, LastRun, Readers, Store, StoreOptions, UnixMillis};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use winddown::commit::Sink;

const CHILD_DIR: &str = "DEPOT_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "DEPOT_CRASH_ROUND";

/// FNV-1a over the payloads, newline-separated.
fn fingerprint<'a>(payloads: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for payload in payloads {
        for byte in payload.bytes().chain([b'\n']) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % n
    }
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
}

#[test]
#[ignore = "the writer process of sigkill_while_acknowledging_loses_nothing_and_duplicates_nothing"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let store = Store::open(&dir, &StoreOptions::default()).expect("child: open");
    let mut writer = store.writer;
    let mut rng = Rng(clock_seed() ^ round);
    let mut keyed: Vec<AppendRequest> = Vec::new();
    let mut n = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        let mut batch = Vec::new();
        for _ in 0..1 + rng.below(16) {
            if !keyed.is_empty() && rng.below(5) == 0 {
                // A client retrying a request it already sent.
                batch.push(keyed[rng.below(keyed.len() as u64) as usize].clone());
                continue;
            }
            n += 1;
            let pad = "p".repeat(rng.below(300) as usize);
            let request = AppendRequest {
                stream: format!("s{}", rng.below(3)),
                payloads: (0..1 + rng.below(4))
                    .map(|j| format!(r#"{{"id":"r{round}-{n}-{j}","pad":"{pad}"}}"#))
                    .collect(),
                idempotency_key: (rng.below(2) == 0).then(|| format!("r{round}-{n}")),
                received_at: UnixMillis::now(),
            };
            if request.idempotency_key.is_some() {
                keyed.push(request.clone());
            }
            batch.push(request);
        }
        let acks = writer.commit(&batch).expect("child: commit");
        let mut out = String::new();
        for (request, ack) in batch.iter().zip(&acks) {
            let appended = ack.as_ref().expect("child: no request should be rejected");
            out.push_str(&format!(
                "ACK {} {} {} {:016x}\n",
                request.stream,
                appended.first,
                appended.last,
                fingerprint(request.payloads.iter().map(String::as_str))
            ));
        }
        // One write per batch (well under PIPE_BUF), after the commit returned.
        stdout.write_all(out.as_bytes()).unwrap();
        stdout.flush().unwrap();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Acked {
    stream: String,
    first: u64,
    last: u64,
    hash: u64,
}

fn parse(line: &str) -> Option<Acked> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    Some(Acked {
        stream: parts.next()?.to_owned(),
        first: parts.next()?.parse().ok()?,
        last: parts.next()?.parse().ok()?,
        hash: u64::from_str_radix(parts.next()?, 16).ok()?,
    })
}

/// Runs one writer process, kills it 0.5–1 s after its first acknowledgement, and returns every
/// acknowledgement it printed.
fn run_and_kill(dir: &Path, round: u64) -> Vec<Acked> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writer", "--nocapture", "--ignored"])
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let pipe_reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                // A fragment without its newline was being written when the kill came.
                Ok(_) if line.last() == Some(&b'\n') => {
                    let _ = lines_tx.send(String::from_utf8_lossy(&line).trim_end().to_owned());
                }
                _ => return,
            }
        }
    });

    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.is_empty() {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("round {round}: no ACK from the writer process ({e:?})"));
        acked.extend(parse(&line));
    }
    let pause = Duration::from_millis(500 + clock_seed() % 500);
    std::thread::sleep(pause);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "round {round}: the writer died before the kill: {status}"
    );
    pipe_reader.join().unwrap();
    acked.extend(lines.try_iter().filter_map(|line| parse(&line)));
    eprintln!(
        "round {round}: killed the writer after {pause:?}, {} acknowledged requests",
        acked.len()
    );
    acked
}

fn verify(readers: &Readers, acked: &[Acked]) {
    // Every acknowledged request is where its ack said, with its payloads.
    for ack in acked {
        let records = readers
            .read(
                &ack.stream,
                ack.first - 1,
                (ack.last - ack.first + 1) as usize,
            )
            .unwrap();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (ack.first..=ack.last).collect::<Vec<_>>(),
            "acknowledged {ack:?} is missing"
        );
        let hash = fingerprint(records.iter().map(|r| r.payload.as_str()));
        assert_eq!(hash, ack.hash, "acknowledged {ack:?} has other payloads");
    }
    // No stream has gaps or repeats, and no payload was stored twice.
    let mut ids = HashSet::new();
    let mut per_stream = BTreeMap::new();
    for stream in readers.streams().unwrap() {
        let records = readers.read(&stream.name, 0, usize::MAX).unwrap();
        assert_eq!(records.len() as u64, stream.records);
        for (i, record) in records.iter().enumerate() {
            assert_eq!(
                record.seq,
                i as u64 + 1,
                "stream {} is not contiguous",
                stream.name
            );
            let id = record.payload.split('"').nth(3).unwrap().to_owned();
            assert!(ids.insert(id.clone()), "record {id} stored twice");
        }
        per_stream.insert(stream.name, records.len());
    }
    eprintln!(
        "verified {} acks; records per stream {per_stream:?}",
        acked.len()
    );
}

#[test]
fn sigkill_while_acknowledging_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    for round in 0..3 {
        let new = run_and_kill(dir.path(), round);
        assert!(!new.is_empty());
        acked.extend(new);
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        eprintln!("{}", store.report);
        assert_eq!(store.report.last_run, LastRun::Unclean);
        assert!(
            store.report.wal_bytes_at_open > 0,
            "a killed writer leaves its WAL behind"
        );
        verify(&store.readers, &acked);
        if round % 2 == 0 {
            store.writer.close().unwrap();
        } else {
            drop(store); // the next writer starts after an unclean stop of this process too
        }
    }
}
