//! Hosts the gtm tools as `gtm-mcp-server` until Ctrl-C or SIGTERM.
//!
//! ```text
//! cargo run --example gtm_server -- --broker mqtt://127.0.0.1:1883 --namespace gtm
//! cargo run --example gtm_server -- --broker mqtts://broker:8883 \
//!     --ca ca.pem --cert gtm-mcp-server.pem --key gtm-mcp-server.key
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
async fn main() -> std::process::ExitCode {
    init_logging();
    let args = Args::parse();
    match serve(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line a service manager's journal shows as it is.
            eprintln!("gtm_server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let server = gtm_server()
        .broker_options(args.connect.broker_options()?)
        .namespace(&args.connect.namespace)
        .build()?;
    // With --emit-acl, `run` prints the ACL (or says the format is wrong)
    // and serves nothing.
    if args.connect.emit_acl.is_none() {
        eprintln!(
            "{} serving {} tools on {}",
            server.name(),
            server.tools().len(),
            args.connect.broker.join(",")
        );
    }
    server.run().await?;
    Ok(())
}
