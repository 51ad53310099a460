use mcpmqtt::{tool, State};

pub struct Db;

/// Copies a post.
#[tool]
async fn copy_post(from: State<Db>, to: State<Db>, id: u32) -> u32 {
    let _ = (from, to);
    id
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").state(Db).tool::<copy_post>();
    let _ = copy_post(State::new(Db), State::new(Db), 1);
}
