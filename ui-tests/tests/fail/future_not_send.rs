use std::rc::Rc;

use mcpmqtt::tool;

/// Holds an `Rc` across an `.await`.
#[tool]
async fn not_send(n: u32) -> u32 {
    let shared = Rc::new(n);
    tokio::task::yield_now().await;
    *shared
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<not_send>();
    let _ = not_send(1);
}
