//! Hosts the gtm tools as `gtm-mcp-server` until Ctrl-C or SIGTERM.
//!
//! ```text
//! cargo run --example gtm_server -- --broker mqtt://127.0.0.1:1883 --namespace gtm
//! ```

use clap::Parser;
use gtm_tools::{gtm_server, init_logging, ConnectArgs};

#[derive(Debug, Parser)]
#[command(about = "Hosts the gtm tools on an MQTT 5 broker")]
struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let args = Args::parse();
    let server = gtm_server()
        .broker_options(args.connect.broker_options()?)
        .namespace(&args.connect.namespace)
        .build()?;
    eprintln!(
        "{} serving {} tools on {}",
        server.name(),
        server.tools().len(),
        args.connect.broker
    );
    server.run().await?;
    Ok(())
}
