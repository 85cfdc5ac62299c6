//! Throwaway Redis for tests (feature `testkit`): one [`RedisServer`], a
//! [`RedisCluster`] of three masters and three replicas, or a [`RedisSentinel`] group.
//!
//! ```no_run
//! use heartbeat_store_redis::testkit::RedisServer;
//!
//! let server = RedisServer::start();
//! println!("test Redis at {}", server.url());
//! // stopped and removed when `server` is dropped
//! ```
#![allow(clippy::missing_panics_doc, clippy::expect_used)]

mod cluster;
pub mod earlier;
mod guarded;
mod sentinel;

pub use cluster::{CLUSTER_NODE_TIMEOUT_MS, RedisCluster};
pub use sentinel::{RedisSentinel, SENTINEL_DOWN_AFTER_MS, SENTINEL_SERVICE};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use guarded::{Guarded, ScratchDir, data_node};

/// What to install when `redis-server` is missing.
pub const INSTALL_HINT: &str = "redis-server is not on PATH. The Redis store tests start their \
own server: install it (Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: `brew \
install redis`) or put its directory on PATH.";

/// How long a started server may take to answer.
const START_WAIT: Duration = Duration::from_secs(10);

/// A `redis-server` process on a free loopback port, keeping nothing on disk. Killed when
/// dropped, and also when the test process ends without dropping it.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    process: Option<Guarded>,
    dir: ScratchDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// With [`INSTALL_HINT`] when `redis-server` is not installed, or when no server
    /// answers within 10 seconds.
    pub fn start() -> Self {
        let dir = ScratchDir::new("redis-server");
        let process = Guarded::start_on_free_ports(&dir, 1, |ports, _| data_node(ports[0], &[]));
        Self {
            port: process.port(),
            process: Some(process),
            dir,
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash or an outage would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same port (empty: it keeps nothing on disk).
    ///
    /// # Panics
    ///
    /// When it does not answer within 10 seconds.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            let dir = self.dir.node(self.port);
            if let Some(process) = Guarded::try_start(self.port, &dir, &data_node(self.port, &[])) {
                self.process = Some(process);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0_u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A plain fred client of the Redis at `url`, as the Node server (or an operator's
/// `redis-cli`) would use it: for tests that read or write keys behind the store's back.
///
/// # Panics
///
/// When `url` is not a Redis URL or the server does not answer.
pub async fn plain_client(url: &str) -> fred::clients::Client {
    use fred::interfaces::ClientLike;
    let config = fred::types::config::Config::from_url(url).expect("a Redis URL");
    let client = fred::types::Builder::from_config(config)
        .build()
        .expect("a fred client");
    client.init().await.expect("the Redis answers");
    client
}
