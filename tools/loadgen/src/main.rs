//! Load generator for `heartbeat-server`: simulated players, status polls and SSE waiters.
//!
//! ```sh
//! # closed loop: 64 requests in flight for 10 s, 20 000 players (one device each)
//! cargo run --release -p heartbeat-loadgen -- heartbeat \
//!     --url http://127.0.0.1:3000 --key "$SHARED_KEY" --concurrency 64 --duration 10
//! # open loop: 1 000 heartbeats/s, latency counted from each request's scheduled time
//! cargo run --release -p heartbeat-loadgen -- heartbeat --rate 1000 ...
//! # GET /status/<id> polls
//! cargo run --release -p heartbeat-loadgen -- status --url ... --concurrency 64
//! # 10 000 SSE connections, each owning one job (the server needs JOB_TIME, e.g. 2000, to
//! # complete them); the server's RSS read from /proc
//! cargo run --release -p heartbeat-loadgen -- jobs --url ... \
//!     --connections 10000 --server-pid "$(pgrep heartbeat-server)"
//! # several instances of one deployment: requests round-robin over them (a session
//! # continues across instances); CPU and memory summed over their pids
//! cargo run --release -p heartbeat-loadgen -- heartbeat \
//!     --url http://127.0.0.1:3101,http://127.0.0.1:3102 --server-pid 4242,4243 ...
//! # streams from chosen source addresses (one address has ~28 000 ports), jobs created
//! # only once a file exists (generators run side by side: see scripts/fleet)
//! cargo run --release -p heartbeat-loadgen -- jobs --url ... \
//!     --connections 12500 --sources 127.0.0.2 --go-file /tmp/go
//! # 10 000 players each holding its session's notice stream (GET /heartbeat/events),
//! # then each displaced by a second device: RSS per idle stream, delivery latency
//! cargo run --release -p heartbeat-loadgen -- notices --url ... \
//!     --key "$SHARED_KEY" --connections 10000 --server-pid "$(pgrep heartbeat-server)"
//! ```
//!
//! Players are real: each starts with a backend token sealed with the shared key and then
//! sends the rotated token it got back, so every heartbeat continues its session. Every
//! answer is checked: a heartbeat answer must be 200 with a token of the same session (one
//! device per user never exceeds a limit of one), a status must be `pending` or
//! `completed`, and each SSE waiter must get exactly its own job's completion.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use heartbeat_core::{HeartbeatData, Timestamp, TokenCodec};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator for heartbeat-server")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Players sending heartbeats with chained rotated tokens.
    Heartbeat(HeartbeatArgs),
    /// `GET /status/<id>` polls of existing jobs.
    Status(StatusArgs),
    /// SSE connections, each waiting for its own job's completion.
    Jobs(JobsArgs),
    /// Session notice streams, each told when a second device displaces its session.
    Notices(NoticesArgs),
}

#[derive(Args)]
struct NoticesArgs {
    #[command(flatten)]
    fleet: Fleet,
    #[command(flatten)]
    sources: Sources,
    /// The server's SHARED_KEY (to seal the backend tokens).
    #[arg(long, env = "SHARED_KEY")]
    key: String,
    /// Players, each holding one notice stream.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Streams opened at once.
    #[arg(long, default_value_t = 256)]
    open_parallel: usize,
}

#[derive(Args)]
struct Target {
    #[command(flatten)]
    fleet: Fleet,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Requests in flight (closed loop).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per second (open loop; latency counted from the scheduled send time).
    #[arg(long)]
    rate: Option<u64>,
}

/// The instances under load: one server, or several of one deployment sharing a store.
#[derive(Args)]
struct Fleet {
    /// The server, or several instances of one deployment, comma-separated: requests go
    /// to each in turn, as a round-robin load balancer sends them.
    #[arg(
        long = "url",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3000"
    )]
    urls: Vec<String>,
    /// The servers' process ids, comma-separated: their CPU time per request and resident
    /// memory, summed (from /proc).
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
}

impl Fleet {
    /// Instance `index` modulo their number, without a trailing `/`.
    fn base(&self, index: usize) -> String {
        self.urls[index % self.urls.len()]
            .trim_end_matches('/')
            .to_owned()
    }

    /// The servers' CPU time so far, summed; `None` without pids or when one is gone.
    fn cpu_time(&self) -> Option<Duration> {
        self.sum(cpu_time)
    }

    /// The servers' resident memory, summed; `None` likewise.
    fn rss_kib(&self) -> Option<u64> {
        self.sum(rss_kib)
    }

    /// The servers' open file descriptors, summed; `None` likewise.
    fn fds(&self) -> Option<u64> {
        self.sum(|pid| Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64))
    }

    /// `read` of every server, summed; `None` without pids or when one cannot be read.
    fn sum<T: std::iter::Sum<T>>(&self, read: fn(u32) -> Option<T>) -> Option<T> {
        if self.server_pids.is_empty() {
            return None;
        }
        self.server_pids.iter().map(|pid| read(*pid)).sum()
    }
}

/// Where long-lived streams come from.
#[derive(Args)]
struct Sources {
    /// Local addresses to open streams from, comma-separated (e.g. 127.0.0.2,127.0.0.3).
    /// Each address has ~28 000 ports: give separate ones to generators run side by side.
    /// By default one address per 25 000 streams, from 127.0.0.1.
    #[arg(long, value_delimiter = ',')]
    sources: Vec<Ipv4Addr>,
}

/// A process's CPU time (user + system) so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel reports clock ticks of 1/100 s on every Linux build we run on.
    Some(Duration::from_millis(ticks * 10))
}

#[derive(Args)]
struct HeartbeatArgs {
    #[command(flatten)]
    target: Target,
    /// The server's SHARED_KEY (to seal the backend tokens and check the answers).
    #[arg(long, env = "SHARED_KEY")]
    key: String,
    /// Players (users with one device each).
    #[arg(long, default_value_t = 20_000)]
    players: usize,
    /// Open every answer's token and check it continues the player's session.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    check: bool,
    /// The format of the backend tokens the players start with: `v2`, `b1` or `legacy`
    /// (CryptoJS, what a Node-era backend mints; the only one the Node server reads).
    #[arg(long, default_value = "v2")]
    token_format: heartbeat_core::TokenFormat,
    /// Each player also holds its session's notice stream (`/heartbeat/events`), as the
    /// web client does by default: opened after its first heartbeat, held through the
    /// run. Prints the server's memory and descriptors per stream.
    #[arg(long)]
    notice_streams: bool,
    #[command(flatten)]
    sources: Sources,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Jobs to create and poll.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
}

#[derive(Args)]
struct JobsArgs {
    #[command(flatten)]
    fleet: Fleet,
    #[command(flatten)]
    sources: Sources,
    /// SSE connections, one owner and one job each.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Create the jobs only once this file exists (several generators run side by side
    /// then complete their jobs in one burst).
    #[arg(long)]
    go_file: Option<std::path::PathBuf>,
    /// Seconds to wait for every completion.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256)]
    open_parallel: usize,
}

/// Counts and latencies of one run.
struct Stats {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    wrong: u64,
    /// CPU time the server used during the run, when its pid was given.
    server_cpu: Option<Duration>,
}

impl Stats {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            statuses: BTreeMap::new(),
            errors: 0,
            wrong: 0,
            server_cpu: None,
        }
    }

    fn record(&mut self, latency: Duration, status: Option<u16>, wrong: bool) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency.saturating_record(micros);
        match status {
            Some(status) => *self.statuses.entry(status).or_default() += 1,
            None => self.errors += 1,
        }
        self.wrong += u64::from(wrong);
    }

    fn merge(&mut self, other: &Stats) {
        let _ = self.latency.add(&other.latency);
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_default() += count;
        }
        self.errors += other.errors;
        self.wrong += other.wrong;
    }

    /// Prints the report; the process exits 1 afterwards if anything failed.
    fn report(&self, what: &str, elapsed: Duration) {
        let total = self.latency.len();
        let ms = |quantile: f64| self.latency.value_at_quantile(quantile) as f64 / 1000.0;
        println!(
            "{what}: {total} requests in {:.2} s = {:.0} req/s",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
        println!(
            "  statuses {:?}, connection errors {}, wrong answers {}",
            self.statuses, self.errors, self.wrong
        );
        println!(
            "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            self.latency.max() as f64 / 1000.0
        );
        if let Some(used) = self.server_cpu {
            println!(
                "  server CPU {:.2} s = {:.1} µs per request ({:.0} % of one core)",
                used.as_secs_f64(),
                used.as_secs_f64() * 1e6 / total.max(1) as f64,
                100.0 * used.as_secs_f64() / elapsed.as_secs_f64()
            );
        }
        if self.errors > 0 || self.wrong > 0 {
            eprintln!(
                "FAILED: {} connection errors, {} wrong answers",
                self.errors, self.wrong
            );
            std::process::exit(1);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn http_client() -> reqwest::Client {
    // No per-request timeout: a timer per request costs the generator more than the
    // server; a hung server shows as a run that does not finish.
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(100_000)
        .build()
        .expect("an HTTP client")
}

/// A 200 answer to a heartbeat.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    heartbeat_token: std::borrow::Cow<'a, str>,
}

struct Player {
    token: Mutex<(String, Option<String>)>,
    busy: AtomicBool,
}

fn backend_token(codec: &TokenCodec, run: &str, user: usize) -> String {
    // Lower tolerance = cycle: never "too early", so back-to-back heartbeats continue
    // one session; a limit of one with one device is never exceeded.
    let data = HeartbeatData::builder(format!("{run}-{user}"), 1)
        .cycle(1.0)
        .lower_tolerance(1.0)
        .upper_tolerance(600.0)
        .session_limit(1)
        .checking_threshold(1)
        .sessions_edge(2)
        .build()
        .expect("valid heartbeat data");
    codec.seal(&data).expect("a sealed token")
}

/// One heartbeat of `player`; returns the status (None: connection error) and whether the
/// answer was wrong.
async fn beat(
    http: &reqwest::Client,
    url: &reqwest::Url,
    codec: Option<&TokenCodec>,
    player: &Player,
) -> (Option<u16>, bool) {
    let token = lock(&player.token).0.clone();
    let body = format!(r#"{{"heartbeat_token":"{token}","progress":1}}"#);
    let response = http
        .post(url.clone())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let Ok(response) = response else {
        return (None, false);
    };
    let status = response.status().as_u16();
    let Ok(body) = response.bytes().await else {
        return (None, false);
    };
    if status != 200 {
        return (
            Some(status),
            status == 412 || status == 406 || status == 400,
        );
    }
    let Ok(Answer { heartbeat_token }) = serde_json::from_slice::<Answer<'_>>(&body) else {
        return (Some(status), true);
    };
    let rotated = heartbeat_token.into_owned();
    let mut state = lock(&player.token);
    let mut wrong = false;
    if let Some(codec) = codec {
        match codec.open(&rotated).ok().and_then(|data| data.session_id) {
            Some(session) => {
                wrong = state.1.as_ref().is_some_and(|known| *known != session);
                state.1 = Some(session);
            }
            None => wrong = true,
        }
    }
    state.0 = rotated;
    (Some(status), wrong)
}

async fn run_heartbeats(args: HeartbeatArgs) {
    let codec = TokenCodec::new(&args.key)
        .expect("a shared key")
        .issuing(args.token_format);
    // Users of this run only: sessions of an earlier run against the same server would
    // (rightly) count against the limit.
    let run = format!("lg{}", now_millis());
    let players: Arc<Vec<Player>> = Arc::new(
        (0..args.players.max(args.target.concurrency))
            .map(|user| Player {
                token: Mutex::new((backend_token(&codec, &run, user), None)),
                busy: AtomicBool::new(false),
            })
            .collect(),
    );
    let urls: Arc<Vec<reqwest::Url>> = Arc::new(
        (0..args.target.fleet.urls.len())
            .map(|instance| {
                reqwest::Url::parse(&format!("{}/heartbeat", args.target.fleet.base(instance)))
                    .expect("a valid --url")
            })
            .collect(),
    );
    let streams = if args.notice_streams {
        Some(hold_notice_streams(&args, &players).await)
    } else {
        None
    };
    let check = args.check.then_some(codec);
    println!("{} players, {}", players.len(), describe(&args.target));
    let (stats, elapsed) = drive(&args.target, move |http, index| {
        let (players, urls) = (Arc::clone(&players), Arc::clone(&urls));
        let check = check.clone();
        async move {
            let player = &players[index % players.len()];
            if player.busy.swap(true, Ordering::AcqRel) {
                return None; // still in flight (open loop, too few players): skip
            }
            // Each request to the next instance: a session continues across them.
            let url = &urls[index % urls.len()];
            let answer = beat(&http, url, check.as_ref(), player).await;
            player.busy.store(false, Ordering::Release);
            Some(answer)
        }
    })
    .await;
    stats.report("heartbeats", elapsed);
    if let Some(streams) = streams {
        streams.report(&args.target.fleet);
    }
}

/// The notice streams the players hold during a heartbeat run.
struct HeldStreams {
    held: u64,
    /// Streams that ended before the run did.
    ended: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HeldStreams {
    /// Prints the streams still open, the servers' descriptors and memory, and closes
    /// them; exits with 1 when one ended early or failed to open.
    fn report(self, fleet: &Fleet) {
        let ended = self.ended.load(Ordering::Relaxed);
        println!(
            "notice streams: {} held through the run, {ended} ended early; server RSS {} KiB, \
             descriptors {}",
            self.held - ended,
            fleet.rss_kib().map_or("?".into(), |kib| kib.to_string()),
            fleet.fds().map_or("?".into(), |fds| fds.to_string()),
        );
        for task in self.tasks {
            task.abort();
        }
        if ended > 0 {
            std::process::exit(1);
        }
    }
}

/// Gives every player its first heartbeat (64 in flight), then opens each one's notice
/// stream with its rotated token and holds it; prints what the streams cost the servers.
async fn hold_notice_streams(args: &HeartbeatArgs, players: &Arc<Vec<Player>>) -> HeldStreams {
    let http = http_client();
    let fleet = &args.target.fleet;
    let first: Vec<(Option<u16>, bool)> = futures_util::stream::iter(0..players.len())
        .map(|index| {
            let (http, players) = (http.clone(), Arc::clone(players));
            let url = reqwest::Url::parse(&format!("{}/heartbeat", fleet.base(index)))
                .expect("a valid --url");
            async move { beat(&http, &url, None, &players[index]).await }
        })
        .buffered(64)
        .collect()
        .await;
    let failed = first
        .iter()
        .filter(|(status, _)| *status != Some(200))
        .count();
    assert!(failed == 0, "{failed} first heartbeats failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_before, fds_before) = (fleet.rss_kib(), fleet.fds());
    let clients = stream_clients(players.len(), &args.sources);
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let ended = Arc::new(AtomicU64::new(0));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let started = Instant::now();
    let tasks: Vec<_> = (0..players.len())
        .map(|index| {
            let http = clients[index % clients.len()].clone();
            let token = lock(&players[index].token).0.clone();
            let url = format!("{}/heartbeat/events", fleet.base(index));
            let (gate, ready, ended) = (Arc::clone(&gate), ready_tx.clone(), Arc::clone(&ended));
            tokio::spawn(async move {
                let Ok(permit) = gate.acquire_owned().await else {
                    return;
                };
                let mut events = match open_notice_stream(&http, &url, &token).await {
                    Ok(events) => events,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                drop(permit);
                let _ = ready.send(Ok(()));
                while let Some(Ok(_)) = events.next().await {}
                ended.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    drop(ready_tx);
    let refused = count_refused(&mut ready_rx, players.len(), "a notice stream").await;
    let held = (players.len() - refused) as u64;
    println!(
        "{held} notice streams open (in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // let the server settle
    report_rss(rss_before, fleet.rss_kib(), held, "stream");
    if let (Some(before), Some(open)) = (fds_before, fleet.fds()) {
        println!(
            "server descriptors {before} before, {open} with the streams open: {:.2} per stream",
            open.saturating_sub(before) as f64 / held.max(1) as f64
        );
    }
    if refused > 0 {
        std::process::exit(1);
    }
    HeldStreams { held, ended, tasks }
}

fn describe(target: &Target) -> String {
    let load = match target.rate {
        Some(rate) => format!("open loop at {rate}/s for {} s", target.duration),
        None => format!(
            "closed loop, {} in flight, for {} s",
            target.concurrency, target.duration
        ),
    };
    format!("{load}, {} instance(s)", target.fleet.urls.len())
}

/// Runs `request(http, index)` closed- or open-loop for the target's duration.
async fn drive<F, Fut>(target: &Target, request: F) -> (Stats, Duration)
where
    F: Fn(reqwest::Client, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Option<(Option<u16>, bool)>> + Send + 'static,
{
    let http = http_client();
    let duration = Duration::from_secs(target.duration);
    let cpu_before = target.fleet.cpu_time();
    let started = Instant::now();
    let stats = Arc::new(Mutex::new(Stats::new()));
    match target.rate {
        None => {
            let counter = Arc::new(AtomicU64::new(0));
            let workers: Vec<_> = (0..target.concurrency)
                .map(|_| {
                    let (http, request, counter) =
                        (http.clone(), request.clone(), Arc::clone(&counter));
                    let stats = Arc::clone(&stats);
                    tokio::spawn(async move {
                        let mut local = Stats::new();
                        while started.elapsed() < duration {
                            let index = counter.fetch_add(1, Ordering::Relaxed) as usize;
                            let sent = Instant::now();
                            if let Some((status, wrong)) = request(http.clone(), index).await {
                                local.record(sent.elapsed(), status, wrong);
                            }
                        }
                        lock(&stats).merge(&local);
                    })
                })
                .collect();
            for worker in workers {
                let _ = worker.await;
            }
        }
        Some(rate) => {
            let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            // Sends are paced by a thread of their own: tokio's timers have a resolution of
            // 1 ms, which would add up to 1 ms of the generator's own lateness to every
            // latency; the thread's sleeps are precise to tens of microseconds.
            let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for index in 0_usize.. {
                    let scheduled = started + period * u32::try_from(index).unwrap_or(u32::MAX);
                    if scheduled.duration_since(started) >= duration {
                        break;
                    }
                    std::thread::sleep(scheduled.saturating_duration_since(Instant::now()));
                    if due_tx.send((index, scheduled)).is_err() {
                        break;
                    }
                }
            });
            let mut tasks = Vec::new();
            while let Some((index, scheduled)) = due_rx.recv().await {
                let (http, request, stats) = (http.clone(), request.clone(), Arc::clone(&stats));
                tasks.push(tokio::spawn(async move {
                    if let Some((status, wrong)) = request(http, index).await {
                        // From the scheduled time: a backlog shows as latency.
                        lock(&stats).record(scheduled.elapsed(), status, wrong);
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
        }
    }
    let elapsed = started.elapsed();
    let mut stats = Arc::try_unwrap(stats)
        .ok()
        .map(|stats| stats.into_inner().unwrap_or_else(PoisonError::into_inner))
        .unwrap_or_else(Stats::new);
    if let (Some(before), Some(after)) = (cpu_before, target.fleet.cpu_time()) {
        stats.server_cpu = Some(after.saturating_sub(before));
    }
    (stats, elapsed)
}

async fn run_status(args: StatusArgs) {
    let http = http_client();
    let base = args.target.fleet.base(0);
    let mut ids = Vec::with_capacity(args.jobs);
    for _ in 0..args.jobs {
        let created = match http
            .post(format!("{base}/create?uuid=loadgen"))
            .send()
            .await
        {
            Ok(response) => response.text().await.ok(),
            Err(_) => None,
        };
        let Some(id) = created else {
            eprintln!("FAILED: the server at {base} does not answer POST /create");
            std::process::exit(1);
        };
        ids.push(id);
    }
    // Every job polled through every instance in turn.
    let fleet = &args.target.fleet;
    let urls: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .flat_map(|id| {
                (0..fleet.urls.len()).map(move |instance| {
                    format!("{}/status/{id}?uuid=loadgen", fleet.base(instance))
                })
            })
            .collect(),
    );
    println!("{} jobs, {}", urls.len(), describe(&args.target));
    let (stats, elapsed) = drive(&args.target, move |http, index| {
        let urls = Arc::clone(&urls);
        async move {
            let response = http.get(urls[index % urls.len()].clone()).send().await;
            let Ok(response) = response else {
                return Some((None, false));
            };
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            Some((
                Some(status),
                status != 200 || !(text == "pending" || text == "completed"),
            ))
        }
    })
    .await;
    stats.report("status polls", elapsed);
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Raises this process's open-file limit and builds the clients that hold `connections`
/// long-lived streams: one per source address, since past ~28 000 connections one source
/// address runs out of ports.
fn stream_clients(connections: usize, sources: &Sources) -> Vec<reqwest::Client> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => println!("file descriptor limit {limit}"),
        Err(error) => println!("cannot raise the file descriptor limit: {error}"),
    }
    // A source address is bound only when asked or when several are needed: a bound
    // socket's port must be free of TIME_WAIT, so back-to-back runs would run out of ports.
    let addresses: Vec<Option<Ipv4Addr>> = if sources.sources.is_empty() {
        let count = connections.div_ceil(25_000).max(1);
        (1..=count)
            .map(|last| {
                (count > 1).then(|| Ipv4Addr::new(127, 0, 0, u8::try_from(last).unwrap_or(1)))
            })
            .collect()
    } else {
        sources.sources.iter().copied().map(Some).collect()
    };
    addresses
        .into_iter()
        .map(|address| {
            let mut builder = reqwest::Client::builder().pool_max_idle_per_host(0);
            if let Some(address) = address {
                builder = builder.local_address(IpAddr::V4(address));
            }
            builder.build().expect("an HTTP client")
        })
        .collect()
}

/// Waits until each of `connections` streams reported whether it opened (every one
/// reports once, opened or not, so a refused one never stalls the run); prints the first
/// refusals and returns how many were refused.
async fn count_refused(
    ready: &mut tokio::sync::mpsc::UnboundedReceiver<Result<(), String>>,
    connections: usize,
    what: &str,
) -> usize {
    let (mut reported, mut refused) = (0, 0);
    while reported < connections {
        let Some(outcome) = ready.recv().await else {
            break;
        };
        reported += 1;
        if let Err(error) = outcome {
            refused += 1;
            if refused <= 3 {
                println!("{what} failed to open: {error}");
            }
        }
    }
    refused
}

/// Prints the server's resident memory per held connection.
fn report_rss(before: Option<u64>, open: Option<u64>, held: u64, what: &str) {
    if let (Some(before), Some(open)) = (before, open) {
        println!(
            "server RSS {before} KiB before, {open} KiB with the {what} open: {:.2} KiB per idle {what}",
            (open.saturating_sub(before)) as f64 / held.max(1) as f64
        );
    }
}

async fn run_jobs(args: JobsArgs) {
    let clients = stream_clients(args.connections, &args.sources);
    // Jobs are created over a small pool of kept-alive connections, so that the only
    // connections counted on the server are the SSE ones.
    let creator = http_client();
    let creating = Arc::new(tokio::sync::Semaphore::new(64));
    let rss_before = args.fleet.rss_kib();
    let started = Instant::now();
    let prefix = format!("lg{}", now_millis());
    let opened = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(args.open_parallel.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut waiters = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        let http = clients[index % clients.len()].clone();
        // The stream on one instance, the job created through the next: the completion
        // crosses instances through the store, as behind a load balancer.
        let (base, create_base) = (args.fleet.base(index), args.fleet.base(index + 1));
        let owner = format!("{prefix}-{index}");
        let (gate, opened, ready, mut go) = (
            Arc::clone(&gate),
            Arc::clone(&opened),
            ready_tx.clone(),
            go_rx.clone(),
        );
        let (creator, creating) = (creator.clone(), Arc::clone(&creating));
        waiters.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.ok()?;
            let response = match http.get(format!("{base}/status?uuid={owner}")).send().await {
                Ok(response) if response.status() == 200 => response,
                Ok(response) => {
                    let _ = ready.send(Err(format!("answered {}", response.status())));
                    return None;
                }
                Err(error) => {
                    let _ = ready.send(Err(format!("{error:?}")));
                    return None;
                }
            };
            let mut events = response.bytes_stream().eventsource();
            drop(permit);
            opened.fetch_add(1, Ordering::Relaxed);
            let _ = ready.send(Ok(()));
            while !*go.borrow() {
                go.changed().await.ok()?;
            }
            let permit = creating.acquire_owned().await.ok()?;
            let created: Value = creator
                .post(format!("{create_base}/v1/jobs?uuid={owner}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            drop(permit);
            let id = created["id"].as_u64()?;
            let due: Timestamp = created["complete_at"].as_str()?.parse().ok()?;
            let (mut mine, mut foreign) = (0_u32, 0_u32);
            let mut latency = None;
            // Read until our completion, then a little longer to catch duplicates.
            while let Ok(Some(Ok(event))) = tokio::time::timeout(
                if latency.is_some() {
                    Duration::from_millis(200)
                } else {
                    Duration::from_secs(600)
                },
                events.next(),
            )
            .await
            {
                if event.event == format!("status_{id}") {
                    mine += 1;
                    latency.get_or_insert(now_millis() - due.unix_millis());
                } else if event.event.starts_with("status_") {
                    foreign += 1;
                }
            }
            Some((latency, mine, foreign))
        }));
    }
    drop(ready_tx);
    let refused = count_refused(&mut ready_rx, args.connections, "an SSE connection").await;
    if refused > 0 {
        println!("{refused} SSE connections failed to open");
    }
    let open_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await; // let the server settle
    let rss_open = args.fleet.rss_kib();
    let held = opened.load(Ordering::Relaxed);
    println!(
        "{held} SSE connections held (opened in {:.1} s)",
        open_time.as_secs_f64()
    );
    report_rss(rss_before, rss_open, held, "connection");
    if let Some(go_file) = &args.go_file {
        println!("waiting for {}", go_file.display());
        while !go_file.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = go_tx.send(true);
    let mut delivery = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("valid bounds");
    let (mut missing, mut duplicates, mut foreign, mut late_negative) = (0, 0, 0, 0);
    let deadline = Duration::from_secs(args.timeout);
    for waiter in waiters {
        match tokio::time::timeout(deadline, waiter).await {
            Ok(Ok(Some((Some(latency), mine, others)))) => {
                if latency < 0 {
                    late_negative += 1;
                }
                delivery.saturating_record(u64::try_from(latency.max(1)).unwrap_or(1));
                duplicates += mine.saturating_sub(1);
                foreign += others;
            }
            _ => missing += 1,
        }
    }
    println!(
        "delivery from due time, ms: p50 {}  p99 {}  max {}   ({} delivered, {missing} missing, {duplicates} duplicates, {foreign} foreign, {late_negative} before due)",
        delivery.value_at_quantile(0.5),
        delivery.value_at_quantile(0.99),
        delivery.max(),
        delivery.len()
    );
    if let Some(rss) = args.fleet.rss_kib() {
        println!("server RSS at the end {rss} KiB");
    }
    if refused > 0 || missing + duplicates + foreign > 0 {
        std::process::exit(1);
    }
}

/// A backend token of user `user` of run `run` on `device`: limit 1, `LEAST_RECENT`, so a
/// second device displaces the first.
fn device_token(codec: &TokenCodec, run: &str, user: usize, device: &str) -> String {
    let data = HeartbeatData::builder(format!("{run}-{user}"), 1)
        .cycle(60.0)
        .upper_tolerance(600.0)
        .session_limit(1)
        .checking_threshold(1)
        .sessions_edge(4)
        .device(device)
        .build()
        .expect("valid heartbeat data");
    codec.seal(&data).expect("a sealed token")
}

/// Opens the notice stream at `url` (`/heartbeat/events`) with `token`: its events, or
/// why it did not open.
async fn open_notice_stream(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<
    impl futures_util::Stream<
        Item = Result<
            eventsource_stream::Event,
            eventsource_stream::EventStreamError<reqwest::Error>,
        >,
    > + use<>,
    String,
> {
    let response = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if response.status() != 200 {
        return Err(format!("answered {}", response.status()));
    }
    Ok(response.bytes_stream().eventsource())
}

/// The token of the answer to a first heartbeat.
async fn first_heartbeat(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> Result<String, String> {
    let answer: Value = http
        .post(format!("{base}/heartbeat"))
        .json(&serde_json::json!({ "heartbeat_token": token }))
        .send()
        .await
        .map_err(|error| error.to_string())?
        .json()
        .await
        .map_err(|error| error.to_string())?;
    answer["heartbeat_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no token in {answer}"))
}

async fn run_notices(args: NoticesArgs) {
    let codec = TokenCodec::new(&args.key).expect("a usable SHARED_KEY");
    let clients = stream_clients(args.connections, &args.sources);
    let requests = http_client();
    let run = format!("ln{}", now_millis());
    // First the sessions (64 heartbeats in flight), so that the memory the streams take is
    // measured apart from the sessions'.
    let sessions: Vec<Result<String, String>> = futures_util::stream::iter(0..args.connections)
        .map(|user| {
            let (http, base) = (requests.clone(), args.fleet.base(user));
            let first = device_token(&codec, &run, user, "first");
            async move { first_heartbeat(&http, &base, &first).await }
        })
        .buffered(64)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = args.fleet.rss_kib();
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.open_parallel.max(1)));
    let displacing = Arc::new(tokio::sync::Semaphore::new(64));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut players = Vec::with_capacity(args.connections);
    for (user, session) in sessions.into_iter().enumerate() {
        let (stream_http, http) = (clients[user % clients.len()].clone(), requests.clone());
        // The stream on the session's instance, the second device through the next one.
        let (base, displacing_base) = (args.fleet.base(user), args.fleet.base(user + 1));
        let (gate, ready, mut go) = (Arc::clone(&gate), ready_tx.clone(), go_rx.clone());
        let displacing = Arc::clone(&displacing);
        let second = device_token(&codec, &run, user, "second");
        players.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.ok()?;
            let opened = async {
                let token = session?;
                open_notice_stream(&stream_http, &format!("{base}/heartbeat/events"), &token).await
            };
            let mut events = match opened.await {
                Ok(events) => events,
                Err(error) => {
                    let _ = ready.send(Err(error));
                    return None;
                }
            };
            drop(permit);
            let _ = ready.send(Ok(()));
            while !*go.borrow() {
                go.changed().await.ok()?;
            }
            // 64 displacing heartbeats in flight: the latency is the notice's, not a queue's.
            let permit = displacing.acquire_owned().await.ok()?;
            let sent = Instant::now();
            first_heartbeat(&http, &displacing_base, &second)
                .await
                .ok()?;
            drop(permit);
            let mut told = None;
            let mut notices = 0_u32;
            while let Ok(Some(Ok(event))) =
                tokio::time::timeout(Duration::from_secs(60), events.next()).await
            {
                if event.event == "ended" {
                    notices += 1;
                    let displaced = serde_json::from_str::<Value>(&event.data)
                        .is_ok_and(|data| data["reason"] == "displaced");
                    if displaced {
                        told.get_or_insert(sent.elapsed());
                    }
                }
            }
            Some((told, notices))
        }));
    }
    drop(ready_tx);
    let refused = count_refused(&mut ready_rx, args.connections, "a notice stream").await;
    let held = (args.connections - refused) as u64;
    println!(
        "{held} notice streams held (opened in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // let the server settle
    report_rss(rss_before, args.fleet.rss_kib(), held, "stream");
    let _ = go_tx.send(true);
    let mut delivery = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("valid bounds");
    let (mut missing, mut extra) = (0_usize, 0_usize);
    for player in players {
        match player.await {
            Ok(Some((Some(told), notices))) => {
                delivery
                    .saturating_record(u64::try_from(told.as_millis()).unwrap_or(u64::MAX).max(1));
                extra += notices.saturating_sub(1) as usize;
            }
            _ => missing += 1,
        }
    }
    println!(
        "displacement notice from the second device's heartbeat, ms: p50 {}  p99 {}  max {}   ({} told, {missing} missing, {extra} extra)",
        delivery.value_at_quantile(0.5),
        delivery.value_at_quantile(0.99),
        delivery.max(),
        delivery.len()
    );
    if refused + missing + extra > 0 {
        std::process::exit(1);
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        match cli.mode {
            Mode::Heartbeat(args) => run_heartbeats(args).await,
            Mode::Status(args) => run_status(args).await,
            Mode::Jobs(args) => run_jobs(args).await,
            Mode::Notices(args) => run_notices(args).await,
        }
    });
}
