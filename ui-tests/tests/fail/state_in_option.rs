use mcpmqtt::{tool, State};

pub struct Db;

/// Lists posts.
#[tool]
async fn list_posts(db: Option<State<Db>>) -> u32 {
    let _ = db;
    0
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").state(Db).tool::<list_posts>();
    let _ = list_posts(None);
}
