use mcpmqtt::tool;

/// The function's name is the tool's name, which must fit in 128 bytes.
#[tool]
async fn crawl_the_whole_site_then_summarise_every_page_it_links_to_and_every_page_those_link_to_as_well_then_store_the_summaries_somewhere(
    url: String,
) -> String {
    url
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<crawl_the_whole_site_then_summarise_every_page_it_links_to_and_every_page_those_link_to_as_well_then_store_the_summaries_somewhere>();
    let _ = crawl_the_whole_site_then_summarise_every_page_it_links_to_and_every_page_those_link_to_as_well_then_store_the_summaries_somewhere(String::new());
}
