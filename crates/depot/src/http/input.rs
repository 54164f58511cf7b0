//! What depot checks of a request before anything is stored: the body split into records (each
//! kept exactly as sent, nesting limited), the stream name, the `Idempotency-Key`.
//!
//! Pure on purpose — serde_json and `http` only, no I/O — because the fuzz target
//! (`crates/depot/fuzz`) compiles this file on its own (`#[path]`) rather than the whole depot:
//! its coverage-instrumented build would otherwise compile depot's ~180 dependencies.

use http::HeaderMap;
use serde_json::value::RawValue;

/// Longest stream name.
pub const MAX_STREAM_NAME: usize = 128;
/// Deepest nesting of arrays and objects accepted in a body (the records array counts as one).
pub const MAX_DEPTH: usize = 64;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Why a request's input was refused: always a `400`, with the code and the message (what to do)
/// of the API's error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The error code (`malformed_json`, `too_deep`, …; see docs/API.md).
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

impl InputError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        InputError {
            code,
            message: message.into(),
        }
    }
}

/// Stream names: 1 to 128 characters of `A-Z a-z 0-9 . _ -`.
pub fn check_stream_name(name: &str) -> Result<(), InputError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_STREAM_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InputError::new(
            "invalid_stream_name",
            format!(
                "stream names are 1 to {MAX_STREAM_NAME} characters of A-Z, a-z, 0-9, '.', '_' and '-'"
            ),
        ))
    }
}

/// The `Idempotency-Key` header, if any: 1 to [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters,
/// else `invalid_idempotency_key`.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, InputError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        InputError::new(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty()
        || text.len() > MAX_IDEMPOTENCY_KEY
        || !text.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

/// One JSON value is one record; a JSON array is one record per element. Each record's text is
/// kept exactly as sent.
pub fn split_records(body: &[u8], max_records: usize) -> Result<Vec<String>, InputError> {
    let malformed = |e: serde_json::Error| {
        InputError::new(
            "malformed_json",
            format!("the body is not valid JSON ({e}); send one JSON value or an array of them"),
        )
    };
    let too_deep = || {
        InputError::new(
            "too_deep",
            format!("the JSON nests deeper than {MAX_DEPTH} levels; flatten the records"),
        )
    };
    // An array is parsed once, straight into its elements; anything else as one value.
    let is_array = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'[');
    let payloads = if is_array {
        let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(malformed)?;
        if 1 + items
            .iter()
            .map(|item| nesting_depth(item.get().as_bytes()))
            .max()
            .unwrap_or(0)
            > MAX_DEPTH
        {
            return Err(too_deep());
        }
        if items.len() > max_records {
            return Err(InputError::new(
                "too_many_records",
                format!(
                    "{} records in one request; at most {max_records} are accepted — split them",
                    items.len()
                ),
            ));
        }
        items.into_iter().map(|r| r.get().to_owned()).collect()
    } else {
        let value: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
        let text = value.get();
        if nesting_depth(text.as_bytes()) > MAX_DEPTH {
            return Err(too_deep());
        }
        vec![text.to_owned()]
    };
    if payloads.is_empty() {
        return Err(InputError::new(
            "empty_request",
            "the array holds no records; send at least one",
        ));
    }
    Ok(payloads)
}

/// The deepest nesting of `[` and `{` in valid JSON text. serde_json checks raw values without
/// recursion, so depth is not limited by its parser here; readers of the records might be.
pub fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_their_text_and_arrays_split() {
        assert_eq!(
            split_records(br#" {"a": 1} "#, 10).unwrap(),
            [r#"{"a": 1}"#]
        );
        assert_eq!(
            split_records(br#"[1, "two", {"x":[3]}]"#, 10).unwrap(),
            ["1", r#""two""#, r#"{"x":[3]}"#]
        );
        assert_eq!(split_records(b"[]", 10).unwrap_err().code, "empty_request");
        assert_eq!(
            split_records(b"[1,2,3]", 2).unwrap_err().code,
            "too_many_records"
        );
        assert_eq!(
            split_records(b"{\"a\":", 10).unwrap_err().code,
            "malformed_json"
        );
        assert!(split_records(b"\xff\xfe", 10).is_err());
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(
            split_records(deep.as_bytes(), 10).unwrap_err().code,
            "too_deep"
        );
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(split_records(ok.as_bytes(), 10).is_ok());
        // Brackets inside strings do not count.
        assert_eq!(nesting_depth(br#"[{"a":"[[[{{\"]]"}]"#), 2);
    }

    #[test]
    fn stream_names() {
        assert!(check_stream_name("sensors.kitchen-1_a").is_ok());
        for bad in ["", "a/b", "ä", "a b", &"x".repeat(129)] {
            assert!(check_stream_name(bad).is_err(), "{bad}");
        }
    }
}
