//! `heartbeat-server`: runs the server, or prints a token for a backend (`issue-token`).

use std::process::ExitCode;

use clap::Parser;
use heartbeat_core::HeartbeatData;
use heartbeat_http::config::{Cli, Command, ConfigError, IssueTokenArgs};
use heartbeat_http::server;
use serde_json::{Value, json};

fn main() -> ExitCode {
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("error: invalid configuration: .env cannot be read: {error}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::IssueToken(args)) => match issue_token(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        None => {
            // Every setting is checked before anything starts (and before the port is bound).
            if let Err(error) = cli
                .server
                .settings()
                .and(cli.server.tokens.codec().map(drop))
            {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.server.log))
                .init();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(server::run(cli.server)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    tracing::error!(%error, "server stopped");
                    ExitCode::from(error.exit_code())
                }
            }
        }
    }
}

fn id(text: &str) -> Value {
    text.parse::<i64>()
        .map_or_else(|_| json!(text), |number| json!(number))
}

fn issue_token(args: &IssueTokenArgs) -> Result<String, ConfigError> {
    let codec = args.tokens.codec()?;
    let data = HeartbeatData::from_json(json!({
        "user_id": id(&args.user),
        "asset_id": id(&args.asset),
        "heartbeat_cycle": args.cycle,
        "cycle_lower_tolerance": args.lower_tolerance,
        "cycle_upper_tolerance": args.upper_tolerance,
        "reject_strategy": args.strategy,
        "timestamp": heartbeat_core::Timestamp::now().to_string(),
        "session_limit": args.limit,
        "checking_threshold": args.threshold.unwrap_or(1),
        "sessions_edge": args.edge.unwrap_or(args.limit.saturating_add(10)),
    }))
    .map_err(|error| {
        ConfigError::new(
            "issue-token",
            format!("builds invalid heartbeat data: {error}"),
        )
    })?;
    codec
        .seal(&data)
        .map_err(|error| ConfigError::new("issue-token", format!("cannot seal: {error}")))
}
