//! `mcpmqtt`: the command line of mcpmqtt. See `mcpmqtt --help`.

mod acl;
mod bridge;
mod call;
mod cli;
mod exit;
mod expose;
mod table;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Do not wait for tasks blocked on stdin (the bridge's reader).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(failure.code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let connect = &cli.connect;
    match cli.command {
        Command::Tools(args) => {
            let client = connect.client(call::DEFAULT_TIMEOUT).await?;
            let tools = client.tools_matching(&args.filter()).await;
            client.disconnect().await;
            let tools = tools?;
            if args.json {
                print_json(&tools)?;
            } else {
                print!("{}", table::tools_table(&tools));
            }
        }
        Command::Servers(args) => {
            let client = connect.client(call::DEFAULT_TIMEOUT).await?;
            let servers = client.servers().await;
            if args.json {
                print_json(&servers)?;
            } else {
                print!("{}", table::servers_table(&servers));
            }
            client.disconnect().await;
        }
        Command::Describe(args) => {
            let client = connect.client(call::DEFAULT_TIMEOUT).await?;
            let card = client.tool_card(&args.tool).await;
            client.disconnect().await;
            let card = card?.ok_or_else(|| {
                Failure::NoSuchTool(format!(
                    "unavailable: no tool `{}` in namespace `{}` (see `mcpmqtt tools`)",
                    args.tool, connect.namespace
                ))
            })?;
            if args.json {
                print_json(&card)?;
            } else {
                print!("{}", table::describe(&card));
            }
        }
        Command::Call(args) => {
            let client = connect.client(call::DEFAULT_TIMEOUT).await?;
            let outcome = call::run(&client, &args).await;
            client.disconnect().await;
            outcome?;
        }
        Command::Acl(args) => {
            print!("{}", acl::render(args.format, &args.manifests)?);
            // The broker settings a JSON format cannot carry as comments.
            if let Some(aside) = args.format.certificate_settings_aside() {
                eprint!("{aside}");
            }
        }
        Command::Bridge(args) => {
            let client = connect.client(call::DEFAULT_TIMEOUT).await?;
            bridge::run(client, &args).await?;
        }
        Command::Expose(args) => expose::run(connect, &args).await?,
    }
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    println!("{}", serde_json::to_string_pretty(value).map_err(anyhow::Error::from)?);
    Ok(())
}

/// Logs to stderr (stdout carries results, and the bridge's MCP messages),
/// filtered by `RUST_LOG` (default: warnings only).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttc=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
