//! Redis processes that die with the test process, and the `redis-cli` calls that steer
//! them.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{INSTALL_HINT, START_WAIT, answers_ping};

/// The shell guard: it starts the server in the background, prints its pid, and when its
/// stdin closes kills it and removes its directory (`$HEARTBEAT_NODE_DIR`, then the parent
/// if that was the last one). Our end of that pipe closes on drop and also when the test
/// process dies without dropping (a cluster kept in a `static`, a test run killed by a
/// timeout), so no Redis and no directory outlives its tests.
const GUARD: &str = r#""$0" "$@" >/dev/null 2>&1 &
pid=$!
echo "$pid"
read _ignored
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$HEARTBEAT_NODE_DIR"
rmdir "$(dirname "$HEARTBEAT_NODE_DIR")" 2>/dev/null
exit 0"#;

/// One `redis-server` (or `redis-server --sentinel`) process under a guard.
#[derive(Debug)]
pub(crate) struct Guarded {
    port: u16,
    pid: u32,
    guard: Child,
    stdin: Option<ChildStdin>,
    alive: bool,
}

impl Guarded {
    /// Starts a server on `count` fresh free ports (the first is the one it answers on),
    /// in a new directory of `dir` named after that port, with the arguments `args` makes
    /// for them; tries other ports when another process took one meanwhile.
    ///
    /// # Panics
    ///
    /// When five attempts fail.
    pub(crate) fn start_on_free_ports(
        dir: &ScratchDir,
        count: usize,
        args: impl Fn(&[u16], &Path) -> Vec<String>,
    ) -> Self {
        for _ in 0..5 {
            let ports = free_ports(count.max(1));
            let node_dir = dir.node(ports[0]);
            if let Some(process) = Self::try_start(ports[0], &node_dir, &args(&ports, &node_dir)) {
                return process;
            }
        }
        panic!("redis-server did not start on free ports after 5 attempts");
    }

    /// Runs `redis-server` with `args` in `dir` (its own directory, removed when it ends)
    /// and waits until it answers `PING` on `port`; `None` when the server exits at once
    /// (its port taken, say), so that the caller can try another port.
    ///
    /// # Panics
    ///
    /// When it does not answer within 10 seconds.
    pub(crate) fn try_start(port: u16, dir: &Path, args: &[String]) -> Option<Self> {
        let mut guard = match Command::new("sh")
            .env("HEARTBEAT_NODE_DIR", dir)
            .current_dir(dir)
            .arg("-c")
            .arg(GUARD)
            .arg("redis-server")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(guard) => guard,
            Err(error) => panic!("cannot run sh to start redis-server: {error}"),
        };
        let stdin = guard.stdin.take();
        let mut line = String::new();
        if let Some(stdout) = guard.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let pid: u32 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the redis-server guard printed no pid: {line:?}"));
        let mut process = Self {
            port,
            pid,
            guard,
            stdin,
            alive: true,
        };
        let deadline = Instant::now() + START_WAIT;
        while !answers_ping(port) {
            if !process.pid_alive() {
                process.alive = false;
                which_redis_server();
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING within {START_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(process)
    }

    /// Its port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Whether [`kill`](Self::kill) has not been called.
    pub(crate) fn alive(&self) -> bool {
        self.alive
    }

    /// `kill -9`, as a crashed machine would, then waits until the port is closed.
    pub(crate) fn kill(&mut self) {
        if !self.alive {
            return;
        }
        self.alive = false;
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + START_WAIT;
        while answers_ping(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid_alive(&self) -> bool {
        Command::new("kill")
            .args(["-0", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // Closing the pipe makes the guard kill the server and wait for it.
        drop(self.stdin.take());
        let _ = self.guard.wait();
    }
}

/// Panics with [`INSTALL_HINT`] when `redis-server` cannot be run.
fn which_redis_server() {
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        panic!("{INSTALL_HINT}");
    }
}

/// `count` distinct free loopback ports (all bound at once, then released).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("a bound address").port())
        .collect()
}

/// The arguments of a data node (not a sentinel) on `port` with `extra` ones: loopback
/// only, nothing kept on disk, its log in `redis.log` in its directory.
pub(crate) fn data_node(port: u16, extra: &[&str]) -> Vec<String> {
    let port = port.to_string();
    let base = [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--logfile",
        "redis.log",
    ];
    base.iter()
        .chain(extra)
        .map(|arg| (*arg).to_owned())
        .collect()
}

/// Runs `redis-cli -p <port> <args>` and returns what it printed.
///
/// # Panics
///
/// When `redis-cli` is missing (it comes with redis-server: Debian's `redis-tools`).
pub(crate) fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = match Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-cli is not on PATH. The cluster and Sentinel tests steer Redis with it: \
             install it with redis-server (Debian/Ubuntu: `sudo apt-get install redis-tools`)."
        ),
        Err(error) => panic!("cannot run redis-cli: {error}"),
    };
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A field of an `INFO`-style reply (`name:value` lines).
pub(crate) fn info_field<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    reply
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Polls `ready` every 50 ms until it holds; how long that took, or `None` after `limit`.
pub(crate) fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if ready() {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory under the system's temporary directory, removed on drop (and by the
/// guards of the nodes inside it, when the process ends without dropping it).
#[derive(Debug)]
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(crate) fn new(kind: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "heartbeat-{kind}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// A new directory `name` inside this one, for one node.
    pub(crate) fn node(&self, name: impl std::fmt::Display) -> PathBuf {
        let path = self.0.join(name.to_string());
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
