use mcpmqtt::tool;

/// Serialisable, with a schema, but not `Deserialize`.
#[mcpmqtt::json_schema]
#[derive(Debug, serde::Serialize)]
pub struct Window {
    pub days: u32,
}

/// Count the posts in a window.
#[tool]
async fn count_posts(platform: String, window: Window) -> u32 {
    platform.len() as u32 + window.days
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<count_posts>();
    let _ = count_posts(String::new(), Window { days: 1 });
}
