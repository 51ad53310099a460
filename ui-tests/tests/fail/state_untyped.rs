use mcpmqtt::{tool, State};

pub struct Db;

/// Lists posts.
#[tool]
async fn list_posts(db: State) -> u32 {
    let _ = db;
    0
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").state(Db).tool::<list_posts>();
}
