//! `heartbeat-server`: runs the server, or prints a token for a backend (`issue-token`).

use std::process::ExitCode;

use clap::Parser;
use heartbeat_core::{HeartbeatData, Id, RejectStrategy};
use std::io::{IsTerminal, Write};

use futures_util::StreamExt;
use heartbeat_core::SessionStore;
use heartbeat_core::sessions::analytics::Export;
use heartbeat_http::config::{
    Cli, Command, ConfigError, ExportHistoryArgs, IssueOwnerTokenArgs, IssueTokenArgs, LogFormat,
    MigrateRedisArgs, ServerArgs, StoreKind,
};
use heartbeat_http::export::{self, ExportQuery};
use heartbeat_http::{App, server};

/// jemalloc rather than the system allocator: see the `jemalloc` feature.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("error: invalid configuration: .env cannot be read: {error}");
        return ExitCode::from(2);
    }
    let cli = Cli::try_parse().unwrap_or_else(|error| exit_on(error));
    match cli.command {
        Some(Command::IssueToken(args)) => print_token(issue_token(&args)),
        Some(Command::IssueOwnerToken(args)) => print_token(issue_owner_token(&args)),
        Some(Command::ExportHistory(args)) => export_history(&cli.server, args),
        Some(Command::MigrateRedis(args)) => migrate_redis(&cli.server, &args),
        Some(Command::CheckConfig) => check_config(&cli.server),
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
            init_logs(&cli.server);
            for warning in cli.server.warnings() {
                tracing::warn!("{warning}");
            }
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            match runtime.block_on(server::run(cli.server)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    // Once, on standard error (where the logs go too).
                    eprintln!("error: {error}");
                    ExitCode::from(error.exit_code())
                }
            }
        }
    }
}

/// A runtime for a command, or the exit code after saying why there is none.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|error| {
        eprintln!("error: cannot start the async runtime: {error}");
        ExitCode::FAILURE
    })
}

/// Runs `command` on the application over the configured store, opened to read (a
/// command that reads the store without serving), or exits with the reason the store
/// cannot be opened.
fn with_app(server: &ServerArgs, command: impl AsyncFnOnce(App) -> ExitCode) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        match server::open_to_read(server).await {
            Ok(app) => command(app).await,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(error.exit_code())
            }
        }
    })
}

/// `check-config`: every setting checked, the store opened and pinged, the effective
/// configuration printed.
fn check_config(server: &ServerArgs) -> ExitCode {
    for warning in server.warnings() {
        eprintln!("warning: {warning}");
    }
    if server::sled_database_is_new(server) {
        // Opening sled would create the database: check what can be checked without it.
        let settings = match server.settings().and_then(|settings| {
            server.tokens.codec()?;
            Ok(settings)
        }) {
            Ok(settings) => settings,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        };
        // The directory the server would create it in: SLED_PATH itself when it is an
        // empty directory, else its nearest existing parent.
        let parent = server
            .sled_path
            .ancestors()
            .find(|dir| dir.as_os_str().is_empty() || dir.exists())
            .map(|dir| {
                if dir.as_os_str().is_empty() {
                    std::path::Path::new(".")
                } else {
                    dir
                }
            });
        let writable = parent.is_some_and(|dir| {
            std::fs::metadata(dir).is_ok_and(|meta| meta.is_dir() && !meta.permissions().readonly())
        });
        if !writable {
            eprintln!(
                "error: SLED_PATH {} does not exist and cannot be created: its nearest existing \
                 parent is not a writable directory",
                server.sled_path.display()
            );
            return ExitCode::from(2);
        }
        for (name, value) in server::configuration(server, &settings) {
            println!("{name}: {value}");
        }
        println!(
            "ok: the configuration is valid; SLED_PATH {} holds no database yet: the server \
             creates it when it starts",
            server.sled_path.display()
        );
        return ExitCode::SUCCESS;
    }
    with_app(server, async |app| {
        if let Err(error) = app.heartbeats().store().ping().await {
            eprintln!("error: the store does not answer: {error}");
            return ExitCode::FAILURE;
        }
        for (name, value) in server::configuration(server, app.settings()) {
            println!("{name}: {value}");
        }
        println!("ok: the configuration is valid and the store answers");
        ExitCode::SUCCESS
    })
}

/// `export-history`: the NDJSON of `GET /admin/history` (or, with `--refusals`, of
/// `GET /admin/refusals`), from the configured store.
fn export_history(server: &ServerArgs, args: ExportHistoryArgs) -> ExitCode {
    let (what, route) = if args.refusals {
        (Export::Refusals, "/admin/refusals")
    } else {
        (Export::Sessions, "/admin/history")
    };
    if server.storage == StoreKind::Memory {
        eprintln!(
            "error: STORAGE is `memory`: a memory store lives in its server's process. \
             Export over HTTP instead: GET {route}"
        );
        return ExitCode::from(2);
    }
    let query = ExportQuery {
        since: args.since,
        until: args.until,
        limit: args.limit,
        cursor: args.cursor,
    };
    with_app(server, async |app| {
        let lines = match export::export_lines(&app, what, &query) {
            Ok(lines) => lines,
            Err(error) => {
                eprintln!("error: {}", error.message);
                return ExitCode::from(2);
            }
        };
        let mut lines = std::pin::pin!(lines);
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut failed = false;
        while let Some(line) = lines.next().await {
            failed |= line.starts_with(b"{\"error\"");
            if let Err(error) = out.write_all(&line) {
                eprintln!("error: cannot write the export: {error}");
                return ExitCode::FAILURE;
            }
        }
        if out.flush().is_err() || failed {
            return ExitCode::FAILURE;
        }
        ExitCode::SUCCESS
    })
}

/// `migrate-redis`: earlier builds' keys moved to today's names, the layout version set.
fn migrate_redis(server: &ServerArgs, args: &MigrateRedisArgs) -> ExitCode {
    if server.storage != StoreKind::Redis {
        eprintln!(
            "error: STORAGE is `{}`: migrate-redis moves the keys of a Redis store; set \
             STORAGE=redis and REDIS_URL (and REDIS_NAMESPACE) as the servers have them",
            format!("{:?}", server.storage).to_lowercase()
        );
        return ExitCode::from(2);
    }
    let settings = match server.settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    #[cfg(feature = "redis")]
    {
        let runtime = match runtime() {
            Ok(runtime) => runtime,
            Err(code) => return code,
        };
        runtime.block_on(async {
            let store = match server::connect_redis(server, settings.job_retention).await {
                Ok(store) => store,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(error.exit_code());
                }
            };
            let mut options = heartbeat_store_redis::MigrateOptions::default();
            options.max_keys = args.max_keys;
            options.scan_count = args.scan_count;
            let report = store.migrate_layout(&options).await;
            if let Ok(report) = &report
                && !report.skipped.is_empty()
            {
                eprintln!(
                    "warning: left {} keys named like an earlier build's but of another type \
                     (not heartbeat's): {}",
                    report.skipped.len(),
                    report.skipped.join(", ")
                );
            }
            match report {
                Ok(report) if report.finished => {
                    println!(
                        "ok: {} keys moved and {} index entries spread ({} keys scanned); the \
                         Redis layout is version 2: every instance reads one name per call \
                         within a minute",
                        report.moved, report.spread_entries, report.scanned
                    );
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    println!(
                        "stopped after {} keys moved and {} index entries spread (--max-keys): \
                         run migrate-redis again to go on from there",
                        report.moved, report.spread_entries
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!(
                        "error: {error}; what moved stays moved: run migrate-redis again to resume"
                    );
                    ExitCode::FAILURE
                }
            }
        })
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (args, settings);
        eprintln!("error: this build has no Redis store (the `redis` feature)");
        ExitCode::from(2)
    }
}

/// Ends the process on a command-line error. An invalid value names the environment
/// variable as well as the flag (`invalid value 'abc' for PORT (--port): …`): operators set
/// variables, not flags. Other errors (and `--help`, `--version`) are clap's own.
fn exit_on(error: clap::Error) -> ! {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) && let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) {
        let long = arg
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_start_matches("--");
        let command = Cli::command();
        let env = command
            .get_arguments()
            .find(|candidate| candidate.get_long() == Some(long))
            .and_then(|candidate| candidate.get_env())
            .map(|env| env.to_string_lossy().into_owned());
        if let Some(env) = env {
            let reason = std::error::Error::source(&error)
                .map(|source| format!(": {source}"))
                .unwrap_or_else(|| {
                    let valid = match error.get(ContextKind::ValidValue) {
                        Some(ContextValue::Strings(values)) => values.join(", "),
                        _ => String::new(),
                    };
                    if valid.is_empty() {
                        String::new()
                    } else {
                        format!(": expected one of {valid}")
                    }
                });
            eprintln!(
                "error: invalid configuration: invalid value '{value}' for {env} (--{long}){reason}"
            );
            std::process::exit(2);
        }
    }
    error.exit()
}

/// Logs to standard error in `LOG_FORMAT`, filtered by `LOG`; colours only on a terminal
/// (and not with `NO_COLOR`).
fn init_logs(server: &ServerArgs) {
    let colours = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&server.log))
        .with_writer(std::io::stderr)
        .with_ansi(colours);
    match server.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Prints what a token command made, or its error (exit code 2).
fn print_token(made: Result<String, ConfigError>) -> ExitCode {
    match made {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// A user or asset given on the command line: a whole number is a number id.
fn id(text: &str) -> Id {
    text.parse::<i64>().map_or_else(|_| Id::from(text), Id::Int)
}

fn issue_token(args: &IssueTokenArgs) -> Result<String, ConfigError> {
    let codec = args.tokens.codec()?;
    let strategy = RejectStrategy::from_wire(&args.strategy).ok_or_else(|| {
        ConfigError::new(
            "issue-token",
            format!(
                "--strategy `{}` is not LEAST_RECENT or MOST_RECENT",
                args.strategy
            ),
        )
    })?;
    let mut data = HeartbeatData::builder(id(&args.user), id(&args.asset))
        .cycle(args.cycle as f64)
        .lower_tolerance(args.lower_tolerance as f64)
        .upper_tolerance(args.upper_tolerance as f64)
        .strategy(strategy)
        .session_limit(args.limit)
        .checking_threshold(args.threshold.unwrap_or(1));
    if let Some(edge) = args.edge {
        data = data.sessions_edge(edge);
    }
    if let Some(device) = &args.device {
        data = data.device(device);
    }
    if let Some(family) = &args.device_family {
        data = data.device_family(family);
    }
    for (family, limit) in &args.family_limits {
        data = data.family_limit(family, *limit);
    }
    if let Some(limit) = args.asset_limit {
        data = data.asset_limit(limit);
    }
    let data = data.build().map_err(|error| {
        ConfigError::new(
            "issue-token",
            format!("builds invalid heartbeat data: {error}"),
        )
    })?;
    codec
        .seal(&data)
        .map_err(|error| ConfigError::new("issue-token", format!("cannot seal: {error}")))
}

fn issue_owner_token(args: &IssueOwnerTokenArgs) -> Result<String, ConfigError> {
    let key = ConfigError::required(
        args.owner_key.as_deref(),
        "OWNER_KEY",
        "the key the server signs owner tokens with",
    )?;
    heartbeat_http::config::bearer_key("OWNER_KEY", Some(key))?;
    let owner = heartbeat_core::jobs::Owner::new(&args.owner)
        .map_err(|error| ConfigError::new("issue-owner-token", format!("--owner: {error}")))?;
    let expires = heartbeat_core::Timestamp::now().unix_millis() / 1000 + args.ttl_secs;
    Ok(heartbeat_core::jobs::OwnerKey::new(key).token(&owner, expires))
}
