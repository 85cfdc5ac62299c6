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
mod guarded;
mod sentinel;

pub use cluster::{CLUSTER_NODE_TIMEOUT_MS, RedisCluster};
pub use sentinel::{RedisSentinel, SENTINEL_DOWN_AFTER_MS, SENTINEL_SERVICE};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to install when `redis-server` is missing.
pub const INSTALL_HINT: &str = "redis-server is not on PATH. The Redis store tests start their \
own server: install it (Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: `brew \
install redis`) or put its directory on PATH.";

/// How long a started server may take to answer.
const START_WAIT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on a free loopback port, keeping nothing on disk.
/// Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// With [`INSTALL_HINT`] when `redis-server` is not installed, or when no server
    /// answers within 10 seconds.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port) {
                return Self {
                    port,
                    child: Some(child),
                };
            }
        }
        panic!("redis-server did not start on a free port after 5 attempts");
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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
            if let Some(child) = spawn(self.port) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Starts `redis-server` on `port`; `None` if it exited (port taken).
fn spawn(port: u16) -> Option<Child> {
    let mut child = match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args([
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
        Err(error) => panic!("cannot run redis-server: {error}"),
    };
    let deadline = Instant::now() + START_WAIT;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        if answers_ping(port) {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server on port {port} did not answer PING within {START_WAIT:?}");
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
