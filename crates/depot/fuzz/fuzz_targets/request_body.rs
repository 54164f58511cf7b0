//! Fuzzes what depot does with a request before anything is stored: splitting and validating the
//! body (`split_records`, with its depth limit), the stream name, and the Idempotency-Key.
//! Beyond "no panic", it checks each against a real JSON parser (see `checks.rs`).
#![no_main]

mod checks;
// depot's request checks, compiled in on their own: they are pure by design, and depending on
// depot would make this coverage-instrumented build compile all of depot's dependencies.
#[path = "../../src/http/input.rs"]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_input(data));
