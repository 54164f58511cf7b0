//! The records the torture client writes: each names itself (run, client, number) and carries a
//! checksum of its own text, so a record read back can be told intact, damaged, or foreign without
//! the client's memory.
//!
//! ```text
//! {"run":3,"client":1,"n":17,"pad":"a é\"…","check":"5f1c0d8a6e2b9f43"}
//! ```
//!
//! `check` is the FNV-1a 64 hash of every byte before `,"check":"`, in lower-case hex; it is always
//! the last member. The text varies in spacing and escapes (the depot must store each record's
//! text byte for byte, not re-encode it), and `pad` in length.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Who wrote a record: unique within one torture ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId {
    /// The load run (one per start of the depot in the kill and stop loops).
    pub run: u64,
    /// The client task.
    pub client: u32,
    /// The record's number within its client and run.
    pub n: u64,
}

const CHECK_SEPARATOR: &str = ",\"check\":\"";

/// Pieces of JSON string content: plain ASCII, UTF-8, and escapes a re-encoder would change.
const PAD_PIECES: &[&str] = &[
    "a", "b", "z", "Q", "0", "7", " ", "-", "é", "日本", "🦀", "\\\"", "\\\\", "\\n", "\\u00e9",
    "\\/",
];

/// The FNV-1a 64-bit hash.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The text of record `id`, with a pad of up to `max_pad` pieces, shaped by `rng`.
pub fn make_payload(id: RecordId, max_pad: usize, rng: &mut Rng) -> String {
    let pieces = if rng.chance(2) {
        max_pad * 8 // now and then a large one
    } else {
        rng.below(max_pad as u64 + 1) as usize
    };
    let mut pad = String::new();
    for _ in 0..pieces {
        pad.push_str(PAD_PIECES[rng.below(PAD_PIECES.len() as u64) as usize]);
    }
    let RecordId { run, client, n } = id;
    let head = match rng.below(3) {
        0 => format!(r#"{{"run":{run},"client":{client},"n":{n},"pad":"{pad}""#),
        1 => format!(r#"{{ "run": {run}, "client": {client}, "n": {n}, "pad": "{pad}""#),
        _ => format!("{{\n  \"n\" :{n},\n\t\"client\":{client} ,\"run\":{run},\"pad\":\"{pad}\""),
    };
    let check = fnv1a64(head.as_bytes());
    format!("{head}{CHECK_SEPARATOR}{check:016x}\"}}")
}

/// What a record read back is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A torture record whose checksum matches its text.
    Intact(RecordId),
    /// Not a torture record, or one whose text no longer matches its checksum.
    Damaged,
}

/// Checks a record's text against its checksum and reads its identity.
pub fn parse_payload(text: &str) -> Parsed {
    #[derive(Deserialize)]
    struct Ident {
        run: u64,
        client: u32,
        n: u64,
    }
    let Some((head, check)) = text
        .strip_suffix("\"}")
        .and_then(|t| t.rsplit_once(CHECK_SEPARATOR))
    else {
        return Parsed::Damaged;
    };
    if u64::from_str_radix(check, 16).ok() != Some(fnv1a64(head.as_bytes())) || check.len() != 16 {
        return Parsed::Damaged;
    }
    match serde_json::from_str::<Ident>(text) {
        Ok(Ident { run, client, n }) => Parsed::Intact(RecordId { run, client, n }),
        Err(_) => Parsed::Damaged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_json_name_themselves_and_detect_damage() {
        let mut rng = Rng::new(42);
        for n in 0..500 {
            let id = RecordId {
                run: 3,
                client: 2,
                n,
            };
            let text = make_payload(id, 40, &mut rng);
            serde_json::from_str::<serde_json::Value>(&text).expect(&text);
            assert_eq!(parse_payload(&text), Parsed::Intact(id), "{text}");
            // Any change to one byte before the checksum is seen.
            let mut bytes = text.clone().into_bytes();
            let at = rng.below(text.find(CHECK_SEPARATOR).unwrap() as u64) as usize;
            bytes[at] ^= 0x01;
            if let Ok(damaged) = String::from_utf8(bytes) {
                assert_eq!(parse_payload(&damaged), Parsed::Damaged, "{damaged}");
            }
        }
        assert_eq!(parse_payload("{}"), Parsed::Damaged);
        assert_eq!(parse_payload("[1,2]"), Parsed::Damaged);
    }
}
