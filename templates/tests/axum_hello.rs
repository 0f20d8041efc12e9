//! `examples/axum_hello.rs` is the README's axum main: it compiles (included here), and the
//! README's copy is the example's, line for line.

#[path = "../examples/axum_hello.rs"]
#[allow(dead_code)]
mod app;

#[test]
fn the_readme_shows_the_example_main() {
    let example = include_str!("../examples/axum_hello.rs");
    let readme = include_str!("../../README.md");
    let code = example
        .split("// README:begin\n")
        .nth(1)
        .and_then(|rest| rest.split("// README:end").next())
        .expect("the example marks its README part");
    let shown = readme
        .split("<!-- templates/examples/axum_hello.rs (its test checks this copy) -->\n```rust,ignore\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n").next())
        .expect("the README shows the axum main under its marker");
    assert_eq!(
        shown, code,
        "README.md's axum main differs from templates/examples/axum_hello.rs: copy the example's \
         lines between its README markers into the README"
    );
}
