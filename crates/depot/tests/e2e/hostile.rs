//! Hostile input and abusive clients against a running depot: oversized, deep, broken and
//! malformed requests get their documented 4xx and store nothing; a client dribbling its headers
//! is cut off by the header-read timeout; a connection flood is held to `max_connections`; and
//! all the while a well-behaved client is served (its latency is measured and printed).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use torture::Client;

use crate::support::{self, Options};

const MAX_BODY: usize = 64 << 10;
const HEADER_TIMEOUT_MS: u64 = 500;
const MAX_CONNECTIONS: usize = 16;

fn options() -> Options {
    Options::default()
        .set("DEPOT_MAX_BODY_BYTES", MAX_BODY)
        .set("DEPOT_HEADER_READ_TIMEOUT_MS", HEADER_TIMEOUT_MS)
        .set("DEPOT_REQUEST_TIMEOUT_MS", 2000)
        .set("DEPOT_MAX_CONNECTIONS", MAX_CONNECTIONS)
}

async fn post(
    client: &Client,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    match client.send(Method::POST, path, headers, body).await {
        Ok(reply) => (reply.status.as_u16(), reply.error_code()),
        Err(e) => (0, e.to_string()),
    }
}

/// Sends raw bytes and returns the status line of the answer ("" if the connection closed).
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    let _ = stream.write_all(request);
    read_head(&mut stream)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Reads until the end of the answer's head (or EOF, or 10 s), and returns what came.
fn read_head(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_their_documented_4xx_and_store_nothing() {
    let _serial = support::serial().await;
    let base = tempfile::tempdir().unwrap();
    let depot = support::start_ok(&base.path().join("data"), &options()).await;
    let c = &depot.client;
    let records = "/v1/streams/h/records";
    let json = ("content-type", "application/json");

    let big = format!("\"{}\"", "x".repeat(MAX_BODY + 10));
    assert_eq!(
        post(c, records, &[json], big.into_bytes()).await,
        (413, "body_too_large".into())
    );
    // The same without a Content-Length: chunked, cut off once past the limit.
    let mut chunked =
        b"POST /v1/streams/h/records HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..((MAX_BODY / 4096) + 4) {
        chunked.extend_from_slice(format!("1000\r\n\"{}\"\r\n", "y".repeat(4094)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let line = raw(depot.addr, &chunked);
    assert!(line.contains(" 413 "), "{line}");

    let deep = "[".repeat(100) + &"]".repeat(100);
    assert_eq!(
        post(c, records, &[json], deep.into_bytes()).await,
        (400, "too_deep".into())
    );
    let unbalanced = "[".repeat(MAX_BODY - 1);
    let (status, code) = post(c, records, &[json], unbalanced.into_bytes()).await;
    assert_eq!(status, 400, "{code}");
    let deep_object = "{\"a\":".repeat(80) + "1" + &"}".repeat(80);
    assert_eq!(
        post(c, records, &[json], deep_object.into_bytes()).await,
        (400, "too_deep".into())
    );

    for bad in [
        &b"\"\xff\xfe\""[..],
        b"[\"ok\", \"\xc3\x28\"]",
        b"\xef\xbb\xbf{}",
        b"{\"a\":1",
        b"",
        b"  ",
        b"nul",
    ] {
        let (status, code) = post(c, records, &[json], bad.to_vec()).await;
        assert_eq!((status, code.as_str()), (400, "malformed_json"), "{bad:?}");
    }
    assert_eq!(
        post(c, records, &[json], b"[]".to_vec()).await,
        (400, "empty_request".into())
    );
    let many = format!("[{}]", vec!["1"; 1001].join(","));
    assert_eq!(
        post(c, records, &[json], many.into_bytes()).await,
        (400, "too_many_records".into())
    );

    for name in [
        "x".repeat(129),
        "x".repeat(10_000),
        "a%2Fb".into(),
        "%C3%A4".into(),
        "a%00b".into(),
    ] {
        let (status, code) = post(
            c,
            &format!("/v1/streams/{name}/records"),
            &[json],
            b"1".to_vec(),
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_stream_name"),
            "{}",
            &name[..name.len().min(20)]
        );
    }
    // A name too long for the request line: hyper refuses it before depot sees it.
    let line = raw(
        depot.addr,
        format!(
            "POST /v1/streams/{}/records HTTP/1.1\r\nHost: d\r\nContent-Length: 1\r\n\r\n1",
            "x".repeat(100_000)
        )
        .as_bytes(),
    );
    assert!(
        line.is_empty()
            || line.contains(" 414 ")
            || line.contains(" 431 ")
            || line.contains(" 400 "),
        "{line}"
    );

    for key in ["k".repeat(201), "a b".into()] {
        let (status, code) = post(
            c,
            records,
            &[json, ("idempotency-key", &key)],
            b"1".to_vec(),
        )
        .await;
        assert_eq!((status, code.as_str()), (400, "invalid_idempotency_key"));
    }
    let line = raw(depot.addr, b"POST /v1/streams/h/records HTTP/1.1\r\nHost: d\r\nIdempotency-Key: \xc3\xa4\xc3\xa4\r\nContent-Length: 1\r\n\r\n1");
    assert!(line.contains(" 400 "), "{line}");
    // The same key with other records: a conflict, not a second copy.
    assert_eq!(
        post(
            c,
            records,
            &[json, ("idempotency-key", "k1")],
            b"1".to_vec()
        )
        .await
        .0,
        201
    );
    assert_eq!(
        post(
            c,
            records,
            &[json, ("idempotency-key", "k1")],
            b"2".to_vec()
        )
        .await,
        (409, "idempotency_conflict".into())
    );
    let (status, code) = match c
        .send(Method::GET, "/v1/streams/h/records?after=-1", &[], "")
        .await
    {
        Ok(r) => (r.status.as_u16(), r.error_code()),
        Err(e) => (0, e.to_string()),
    };
    assert_eq!((status, code.as_str()), (400, "bad_query"));

    // Of all that, only the one good record was stored.
    let stored = c.read_stream("h").await.unwrap();
    assert_eq!(stored, vec![(1, "1".to_owned())]);
    assert!(c.is_ready().await);
    depot.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_served_back_byte_for_byte() {
    let _serial = support::serial().await;
    let base = tempfile::tempdir().unwrap();
    let depot = support::start_ok(&base.path().join("data"), &Options::default()).await;
    // Each of these changed, or broke the read, when records went through serde_json::Value.
    let values = [
        "1e400",
        "123456789012345678901234567890",
        "-0.0",
        "1.50",
        r#"{"a":1,"a":2}"#,
        r#"{ "z" : 1 , "a" : [ ] }"#,
        r#""\u00e9\ud83e\udd80\/""#,
        "\"é🦀\"",
        "null",
    ];
    let body = format!("[{}]", values.join(" ,\n "));
    let reply = depot
        .client
        .send(Method::POST, "/v1/streams/exact/records", &[], body)
        .await
        .unwrap();
    assert_eq!(reply.status, 201);
    let stored = depot.client.read_stream("exact").await.unwrap();
    let texts: Vec<&str> = stored.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, values);
    support::assert_no_panic(&depot.log_text());
    depot.stop(Duration::from_secs(10)).await;
}

/// A well-behaved client posting in a loop on its own (keep-alive) connection, until `stop`.
async fn well_behaved(client: Client, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let started = Instant::now();
        let reply = client
            .send(
                Method::POST,
                "/v1/streams/good/records",
                &[("idempotency-key", &format!("g{i}"))],
                format!("{{\"i\":{i}}}"),
            )
            .await;
        let took = started.elapsed();
        match reply {
            Ok(r) if r.status == 201 => latencies.push(took),
            other => panic!("the well-behaved client was refused after {took:?}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies
}

fn describe(latencies: &mut [Duration]) -> (Duration, Duration, Duration) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), *latencies.last().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_dribbling_headers_are_cut_off_and_others_stay_served() {
    let _serial = support::serial().await;
    let base = tempfile::tempdir().unwrap();
    let depot = support::start_ok(&base.path().join("data"), &options()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(well_behaved(depot.client.clone(), stop.clone()));

    // Ten clients send a request header one byte every 50 ms: 4 s for the whole header.
    let addr = depot.addr;
    let slow: Vec<_> = (0..10)
        .map(|i| {
            std::thread::spawn(move || {
                let header = format!("POST /v1/streams/slow{i}/records HTTP/1.1\r\nHost: depot\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n1");
                let mut stream = TcpStream::connect(addr).unwrap();
                let started = Instant::now();
                for (sent, byte) in header.bytes().enumerate() {
                    if stream.write_all(&[byte]).is_err() {
                        return (started.elapsed(), sent, header.len());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    // A closed connection shows as EOF on a non-blocking peek.
                    stream.set_nonblocking(true).unwrap();
                    let mut probe = [0u8; 1];
                    let closed = matches!(stream.peek(&mut probe), Ok(0));
                    stream.set_nonblocking(false).unwrap();
                    if closed {
                        return (started.elapsed(), sent + 1, header.len());
                    }
                }
                (started.elapsed(), header.len(), header.len())
            })
        })
        .collect();
    let mut cut = Vec::new();
    for handle in slow {
        cut.push(
            tokio::task::spawn_blocking(move || handle.join().unwrap())
                .await
                .unwrap(),
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = good.await.unwrap();
    let (p50, p99, max) = describe(&mut latencies);
    eprintln!(
        "slow clients cut off after {:?} (header-read timeout {HEADER_TIMEOUT_MS} ms); meanwhile \
         {} requests of a well-behaved client: p50 {p50:?}, p99 {p99:?}, max {max:?}",
        cut.iter()
            .map(|(t, sent, _)| format!("{} ms/{sent} bytes", t.as_millis()))
            .collect::<Vec<_>>(),
        latencies.len()
    );
    for (took, sent, len) in &cut {
        assert!(
            sent < len,
            "a slow client got its whole header in ({sent} bytes in {took:?})"
        );
        assert!(
            *took < Duration::from_millis(HEADER_TIMEOUT_MS + 1500),
            "cut off only after {took:?}"
        );
    }
    assert!(
        max < Duration::from_secs(1),
        "the well-behaved client waited {max:?}"
    );
    // Nothing of theirs was stored.
    assert!(depot.client.read_stream("slow0").await.unwrap().is_empty());
    depot.stop(Duration::from_secs(10)).await;
}

/// A body that stops coming is answered `408` once `request_timeout_ms` has passed, and that
/// request is observed like any other: it has its `x-request-id`, it is counted in
/// `depot_http_requests_total` with status 408, and `depot_http_in_flight` comes back down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_coming_gets_408_and_is_counted_like_any_request() {
    let _serial = support::serial().await;
    let base = tempfile::tempdir().unwrap();
    let depot = support::start_ok(&base.path().join("data"), &options()).await;
    let addr = depot.addr;
    let (took, answer) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"POST /v1/streams/stalled/records HTTP/1.1\r\nHost: depot\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"half\":")
            .unwrap();
        let started = Instant::now();
        let answer = read_head(&mut stream);
        (started.elapsed(), answer.to_lowercase())
    })
    .await
    .unwrap();
    assert!(answer.starts_with("http/1.1 408"), "{answer:?}");
    assert!(answer.contains("x-request-id: "), "{answer:?}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "answered after {took:?} (request_timeout_ms = 2000)"
    );

    let metrics = depot
        .client
        .send(Method::GET, "/metrics", &[], Vec::new())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let value = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    // The scrape itself is the one request in flight.
    assert_eq!(value("depot_http_in_flight "), Some(1.0), "{text}");
    let timed_out = text.lines().find(|l| {
        l.starts_with("depot_http_requests_total{")
            && l.contains(r#"status="408""#)
            && l.contains(r#"route="/v1/streams/:stream/records""#)
    });
    assert!(
        timed_out.is_some_and(|l| l.ends_with(" 1")),
        "no 408 counted: {text}"
    );
    assert!(
        depot
            .client
            .read_stream("stalled")
            .await
            .unwrap()
            .is_empty()
    );
    depot.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_held_to_max_connections_and_an_open_client_stays_served() {
    let _serial = support::serial().await;
    let base = tempfile::tempdir().unwrap();
    let depot = support::start_ok(&base.path().join("data"), &options()).await;
    // The well-behaved client holds its connection (it made one request before the flood).
    let stop = Arc::new(AtomicBool::new(false));
    assert!(depot.client.is_ready().await);
    let good = tokio::spawn(well_behaved(depot.client.clone(), stop.clone()));

    // 200 connections that send nothing, reopened as depot closes them, for 3 s.
    let addr = depot.addr;
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = std::thread::spawn({
        let flooding = flooding.clone();
        move || {
            let mut open: Vec<TcpStream> = Vec::new();
            let mut made = 0u64;
            while flooding.load(Ordering::Relaxed) {
                open.retain(|s| {
                    s.set_nonblocking(true).unwrap();
                    let mut probe = [0u8; 1];
                    !matches!(s.peek(&mut probe), Ok(0))
                });
                while open.len() < 200 {
                    match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                        Ok(s) => {
                            open.push(s);
                            made += 1;
                        }
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            made
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new client during the flood: it waits in the accept queue for a free connection slot.
    let fresh = Client::new(&format!("http://{addr}"), None, Duration::from_secs(30)).unwrap();
    let started = Instant::now();
    let fresh_answer = fresh
        .send(Method::GET, "/readyz", &[], "")
        .await
        .map(|r| r.status);
    let fresh_wait = started.elapsed();

    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(fresh_wait)).await;
    flooding.store(false, Ordering::Relaxed);
    let made = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = good.await.unwrap();
    let (p50, p99, max) = describe(&mut latencies);

    let after = Client::new(&format!("http://{addr}"), None, Duration::from_secs(30)).unwrap();
    let started = Instant::now();
    assert!(after.is_ready().await);
    let after_wait = started.elapsed();
    eprintln!(
        "connection flood: {made} idle connections opened against max_connections \
         {MAX_CONNECTIONS} (header-read timeout {HEADER_TIMEOUT_MS} ms). The open client's {} \
         requests: p50 {p50:?}, p99 {p99:?}, max {max:?}. A new connection during the flood was \
         answered after {fresh_wait:?} ({fresh_answer:?}); after it, {after_wait:?}.",
        latencies.len()
    );
    assert!(
        max < Duration::from_secs(1),
        "the open client waited {max:?}"
    );
    // Not asserted: a new connection during the flood waits in the kernel's accept queue behind
    // the flood (slots turn over once per header-read timeout; depot does not evict connections
    // that have sent nothing to make room for new ones), so it is served after seconds, or its
    // connect times out. Printed above.
    let _ = fresh_answer;
    assert!(after_wait < Duration::from_secs(2), "{after_wait:?}");
    support::assert_no_panic(&depot.log_text());
    depot.stop(Duration::from_secs(10)).await;
}
