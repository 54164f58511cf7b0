//! The properties of depot's request validation, shared by the fuzz target
//! (`fuzz_targets/request_body.rs`) and the bounded randomized test that runs in every
//! `cargo test` (`crates/depot/tests/input_properties.rs`).
//!
//! An input is one byte choosing the most records per request (1 to 8, so that the limit is
//! reached), then the body; the body bytes also serve as a stream name and an idempotency key.

use std::fmt;

use http::{HeaderMap, HeaderValue};

use crate::input::{
    MAX_DEPTH, MAX_IDEMPOTENCY_KEY, MAX_STREAM_NAME, check_stream_name, idempotency_key,
    nesting_depth, split_records,
};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// Checks every property on one input; panics on a violation.
pub(crate) fn check_input(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let max_records = usize::from(selector % 8) + 1;
    check_body(body, max_records);
    check_stream_name_of(body);
    check_idempotency_key_of(body);
}

/// Depth of a JSON text, counted as `nesting_depth` counts brackets. Measured while parsing, not on
/// a `Value`: a `Value` object keeps only the last of duplicate keys, so `{"a":[[]],"a":1}` is 3
/// levels deep as sent but 1 as a `Value` (found by the fuzzer).
struct Depth(usize);

impl<'de> Deserialize<'de> for Depth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DepthVisitor)
    }
}

struct DepthVisitor;

impl<'de> Visitor<'de> for DepthVisitor {
    type Value = Depth;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_str<E>(self, _: &str) -> Result<Depth, E> {
        Ok(Depth(0))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some(Depth(d)) = seq.next_element()? {
            deepest = deepest.max(d);
        }
        Ok(Depth(1 + deepest))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some((IgnoredAny, Depth(d))) = map.next_entry()? {
            deepest = deepest.max(d);
        }
        Ok(Depth(1 + deepest))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// `split_records` accepts exactly the JSON that a parser accepts, within the depth and count
/// limits; each record is valid JSON on its own, kept as it was sent (a piece of the body), and
/// parses to the same value as the corresponding element of the body.
fn check_body(body: &[u8], max_records: usize) {
    // serde_json's Value is stricter than the JSON grammar depot checks: it has no room for
    // numbers beyond f64 (1e400), refuses escapes of lone UTF-16 surrogates ("\ud800", which
    // RFC 8259 allows and RFC 7493 forbids) and stops at 128 levels. Only its other verdicts are
    // compared.
    let parsed = match serde_json::from_slice::<Value>(body) {
        Ok(value) => Some(value),
        Err(e) if e.to_string().contains("out of range") => None,
        Err(e) if e.to_string().contains("surrogate") => None,
        Err(e) if e.to_string().contains("hex escape") => None,
        Err(e) if e.to_string().contains("recursion limit") => None,
        Err(_) => {
            let accepted = split_records(body, max_records);
            assert!(
                accepted.is_err(),
                "split_records accepted what serde_json rejects: {accepted:?}"
            );
            return;
        }
    };
    // Parsed (so valid JSON within serde_json's limits): its depth as sent.
    let depth = parsed.as_ref().map(|_| {
        let Depth(depth) = serde_json::from_slice(body).expect("parses as a Value, so as a Depth");
        assert_eq!(
            nesting_depth(body),
            depth,
            "nesting_depth disagrees with the parser"
        );
        depth
    });
    match split_records(body, max_records) {
        Ok(records) => {
            assert!(!records.is_empty() && records.len() <= max_records);
            for record in &records {
                assert!(
                    serde_json::from_str::<&RawValue>(record).is_ok(),
                    "{record}"
                );
                assert!(nesting_depth(record.as_bytes()) <= MAX_DEPTH);
                assert!(contains(body, record.as_bytes()), "a record not as sent");
                assert_eq!(
                    record.trim(),
                    record,
                    "a record with surrounding whitespace"
                );
            }
            if let (Some(value), Some(depth)) = (&parsed, depth) {
                assert!(depth <= MAX_DEPTH);
                let as_values = records
                    .iter()
                    .map(|r| serde_json::from_str::<Value>(r).expect("a record parses"));
                match value {
                    Value::Array(items) => {
                        assert_eq!(items.len(), records.len());
                        assert!(items.iter().cloned().eq(as_values));
                    }
                    single => {
                        assert_eq!(records.len(), 1);
                        assert!(std::iter::once(single.clone()).eq(as_values));
                    }
                }
            }
        }
        Err(e) => {
            assert!(
                matches!(
                    e.code,
                    "malformed_json" | "too_deep" | "too_many_records" | "empty_request"
                ),
                "{e:?}"
            );
            if let (Some(value), Some(depth)) = (&parsed, depth) {
                let count = match value {
                    Value::Array(items) => items.len(),
                    _ => 1,
                };
                assert!(
                    depth > MAX_DEPTH || count == 0 || count > max_records,
                    "refused valid JSON of depth {depth} with {count} records (max {max_records})"
                );
            }
        }
    }
}

fn check_stream_name_of(body: &[u8]) {
    let Ok(name) = std::str::from_utf8(body) else {
        return;
    };
    let valid = (1..=MAX_STREAM_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    assert_eq!(check_stream_name(name).is_ok(), valid, "{name:?}");
}

fn check_idempotency_key_of(body: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(body) else {
        return; // not a header value at all: hyper would not have parsed the request
    };
    let mut headers = HeaderMap::new();
    headers.insert("idempotency-key", value);
    let valid =
        (1..=MAX_IDEMPOTENCY_KEY).contains(&body.len()) && body.iter().all(u8::is_ascii_graphic);
    match idempotency_key(&headers) {
        Ok(Some(key)) => {
            assert!(valid);
            assert_eq!(key.as_bytes(), body);
        }
        Ok(None) => panic!("a present header read as absent"),
        Err(e) => {
            assert!(!valid, "a valid key refused: {body:?}");
            assert_eq!(e.code, "invalid_idempotency_key");
        }
    }
}
