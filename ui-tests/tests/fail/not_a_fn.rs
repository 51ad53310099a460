use mcpmqtt::tool;

/// A tool is a function, not a type.
#[tool]
#[derive(Debug)]
pub struct Ping {
    pub n: u32,
}

fn main() {
    // The struct is still emitted: no "cannot find struct" on top.
    assert_eq!(Ping { n: 1 }.n, 1);
}
