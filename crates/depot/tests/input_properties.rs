//! A bounded randomized test of request validation, run by every `cargo test`: the committed fuzz
//! corpus, then 20 000 generated inputs (JSON-like token soup, and byte mutations of the corpus),
//! each checked by the same properties as the libFuzzer target (`fuzz/fuzz_targets/checks.rs`;
//! `ci/fuzz.sh` runs that target coverage-guided). `INPUT_CASES` and `TORTURE_SEED` change the
//! count and the seed.

#[path = "../fuzz/fuzz_targets/checks.rs"]
mod checks;

// What checks.rs checks (the fuzz target compiles the same file in directly).
use depot::http::input;

use std::fs;
use std::path::Path;

use torture::Rng;

const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    " ",
    "\n",
    "\"",
    "\"a\"",
    "\"k\":",
    "1",
    "-0",
    "2.5e-3",
    "1e400",
    "123456789012345678901234567890",
    "true",
    "false",
    "null",
    "\\",
    "\\\"",
    "\\u00e9",
    "\\ud800",
    "é",
    "🦀",
    "\u{0}",
    "[[[[",
    "]]]]",
    "{\"a\":",
    "x",
    ".",
    "_",
    "-",
];

fn generated(rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![rng.next_u64() as u8];
    let tokens = rng.below(40);
    for _ in 0..tokens {
        if rng.chance(3) {
            out.push(rng.next_u64() as u8);
        } else {
            out.extend_from_slice(TOKENS[rng.below(TOKENS.len() as u64) as usize].as_bytes());
        }
    }
    out
}

fn mutated(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..rng.range(1, 4) {
        if out.is_empty() {
            out.push(0);
        }
        let at = rng.below(out.len() as u64) as usize;
        match rng.below(4) {
            0 => out[at] = rng.next_u64() as u8,
            1 => {
                out.remove(at);
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len() as u64) as usize].as_bytes();
                out.splice(at..at, token.iter().copied());
            }
            _ => out.truncate(at),
        }
    }
    out
}

#[test]
fn request_validation_holds_its_properties_on_the_corpus_and_random_inputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request_body");
    let mut corpus: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    corpus.sort();
    assert!(corpus.len() >= 10, "the committed corpus is missing");
    for input in &corpus {
        checks::check_input(input);
    }
    let seed = std::env::var("TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(torture::seed_from_clock);
    let cases: u64 = std::env::var("INPUT_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    eprintln!("input properties: seed {seed}, {cases} cases (TORTURE_SEED={seed} repeats)");
    let mut rng = Rng::new(seed);
    for case in 0..cases {
        let input = if rng.chance(50) {
            generated(&mut rng)
        } else {
            let seed_input = &corpus[rng.below(corpus.len() as u64) as usize];
            mutated(seed_input, &mut rng)
        };
        let result = std::panic::catch_unwind(|| checks::check_input(&input));
        if result.is_err() {
            panic!(
                "case {case} (seed {seed}) broke a property; input {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}
