use mcpmqtt::tool;

/// `Deserialize`, but `#[mcpmqtt::json_schema]` was forgotten.
#[derive(Debug, serde::Deserialize)]
pub struct Window {
    pub days: u32,
}

/// Count the posts in a window.
#[tool]
async fn count_posts(platform: String, window: Option<Window>) -> u32 {
    platform.len() as u32 + window.map_or(0, |w| w.days)
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<count_posts>();
    let _ = count_posts(String::new(), Some(Window { days: 1 }));
}
