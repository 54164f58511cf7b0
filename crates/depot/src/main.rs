//! depot: a durable record depot over HTTP.
fn main() {}
