//! trybuild UI tests of `#[tool]`: see `tests/`.
