//! Compile-time behaviour of `#[tool]` and `#[json_schema]`: `pass/` must
//! compile (warning-free: each denies warnings) and run; `fail/` must fail
//! with exactly the errors in its `.stderr` snapshot.
//!
//! Regenerate the snapshots with
//! `TRYBUILD=overwrite cargo test -p mcpmqtt-ui-tests --test ui`, then read
//! every changed `.stderr`: one clear error, on the right token.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/pass/*.rs");
    t.compile_fail("tests/fail/*.rs");
}
