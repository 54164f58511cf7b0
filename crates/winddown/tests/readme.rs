//! The README's "library in one screen" is `examples/readme.rs`, word for word (below its header): the example is
//! built as its own crate against this library (by `cargo test`, `cargo clippy --all-targets`),
//! and this test fails when the two drift apart.

#[test]
fn the_readme_example_is_examples_readme_rs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    let file = std::fs::read_to_string(root.join("examples/readme.rs")).unwrap();
    // Below the file's header (a comment and the attribute that keeps rustfmt off it).
    let example = file
        .split_once("#![cfg_attr(rustfmt, rustfmt::skip)]\n\n")
        .expect("examples/readme.rs keeps its header")
        .1;
    let section = readme
        .split("## The library in one screen")
        .nth(1)
        .expect("the README has a \"The library in one screen\" section");
    let code = section
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section opens with a ```rust block");
    assert_eq!(
        format!("{code}\n"),
        example,
        "README.md's example and crates/winddown/examples/readme.rs differ: copy one onto the other"
    );
}
