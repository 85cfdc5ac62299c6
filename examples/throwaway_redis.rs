//! Starts a throwaway Redis for a benchmark or a try-out, prints its URL, and keeps it
//! until its standard input closes (or the process is stopped): one `redis-server`, a
//! Redis Cluster of three masters and three replicas, or a Sentinel group.
//!
//! ```sh
//! # prints e.g. redis-cluster://127.0.0.1:40001?node=127.0.0.1:40003&…, then waits
//! cargo run -p heartbeat-examples --example throwaway_redis -- cluster
//! ```
//!
//! Every Redis process and its directory go away when this process ends, however it ends
//! (the testkit's guards): `scripts/fleet` uses it to run several instances on one Redis.

use std::io::Read;

use clap::{Parser, ValueEnum};
use heartbeat_store_redis::testkit::{RedisCluster, RedisSentinel, RedisServer};

#[derive(Parser)]
#[command(
    name = "throwaway_redis",
    about = "A throwaway Redis on free loopback ports"
)]
struct Cli {
    /// What to start.
    #[arg(value_enum)]
    kind: Kind,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// One redis-server.
    Server,
    /// Three masters and three replicas.
    Cluster,
    /// One master, one replica, three sentinels.
    Sentinel,
}

fn main() {
    let cli = Cli::parse();
    // Each keeps its processes while it lives.
    let (url, _redis): (String, Box<dyn std::any::Any>) = match cli.kind {
        Kind::Server => {
            let redis = RedisServer::start();
            (redis.url(), Box::new(redis))
        }
        Kind::Cluster => {
            let redis = RedisCluster::start();
            (redis.url(), Box::new(redis))
        }
        Kind::Sentinel => {
            let redis = RedisSentinel::start();
            (redis.url(), Box::new(redis))
        }
    };
    println!("{url}");
    // Until stdin closes: the caller's end of a pipe, or Ctrl-D at a terminal.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
