//! The HeyGen CLI story, end to end: start the server, create 5 jobs at staggered times,
//! wait for all of them over one SSE connection, switch to polling in the middle (as on a
//! network change), and show that every job still completes. Timestamped logs; exits
//! non-zero if any job does not complete.
//!
//! Run: `cargo run -p heartbeat-examples --example jobs_integration`
//! (or `... -- http://localhost:3000` to use a server that is already running).

use std::sync::Arc;
use std::time::{Duration, Instant};

use heartbeat_core::TokenCodec;
use heartbeat_examples::LocalServer;
use heartbeat_http::Settings;
use heartbeat_http::client::jobs::{JobStatus, JobsClient, Mode, Options};

const JOBS: usize = 5;
const STAGGER: Duration = Duration::from_millis(400);
const DEADLINE: Duration = Duration::from_secs(30);
const SWITCH_AT: Duration = Duration::from_millis(2900);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("heartbeat_client=info"))
        .with_target(false)
        .with_ansi(false)
        .init();
    let started = Instant::now();
    let say = move |what: String| println!("[{:6.2}s] {what}", started.elapsed().as_secs_f64());

    let (url, own_server) = match std::env::args().nth(1) {
        Some(url) => (url, None),
        None => {
            // JOB_TIME 2000 ms, as the HeyGen mock: each job completes 2 s after creation.
            let settings = Settings {
                job_time: Some(std::time::Duration::from_secs(2)),
                ..Settings::default()
            };
            let server = LocalServer::start(TokenCodec::new("jobs example key")?, settings).await?;
            (server.url().to_owned(), Some(server))
        }
    };
    say(format!("server at {url}"));

    let client = Arc::new(JobsClient::new(Options {
        logging: true,
        fallback: true,
        poll_interval: Duration::from_millis(250),
        ..Options::new(url.clone(), Mode::Sse)
    })?);
    say(format!("client owner {}, mode SSE", client.owner()));

    let mut waiters = Vec::new();
    for n in 1..=JOBS {
        let id = client.create_job().await?;
        say(format!("created job {id} ({n}/{JOBS})"));
        let waiting = Arc::clone(&client);
        waiters.push(tokio::spawn(async move {
            let status = tokio::time::timeout(DEADLINE, waiting.wait_for_job(id)).await;
            (id, status, started.elapsed())
        }));
        tokio::time::sleep(STAGGER).await;
    }
    // Jobs complete 2 s after creation: the first ones finish over SSE, then the network
    // changes in the middle of the others' waits.
    tokio::time::sleep_until((started + SWITCH_AT).into()).await;
    say("network change: switching every listener to polling".to_owned());
    client.change_backend(Mode::Poll);

    let mut failed = 0;
    for waiter in waiters {
        let (id, status, at) = waiter.await?;
        match status {
            Ok(Ok(JobStatus::Completed)) => {
                println!("[{:6.2}s] job {id} completed", at.as_secs_f64())
            }
            Ok(other) => {
                failed += 1;
                println!("[{:6.2}s] job {id} FAILED: {other:?}", at.as_secs_f64());
            }
            Err(_) => {
                failed += 1;
                println!("job {id} FAILED: not completed within {DEADLINE:?}");
            }
        }
    }
    if let Some(server) = own_server {
        server.stop().await?;
    }
    if failed > 0 {
        eprintln!("{failed} of {JOBS} jobs did not complete");
        std::process::exit(1);
    }
    say(format!(
        "all {JOBS} jobs completed, across the switch from SSE to polling"
    ));
    Ok(())
}
