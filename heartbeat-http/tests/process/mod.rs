//! The `heartbeat-server` binary of this build as a child process on a free loopback port,
//! killed when the test ends.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary this test build made.
pub const BINARY: &str = env!("CARGO_BIN_EXE_heartbeat-server");

/// A loopback port free now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary with a clean environment (no settings leak in from the machine but
/// `PATH`), in `dir`.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir);
    command
}

/// `Command::output` that cannot hang a test: the binary must exit within 20 s (a setting
/// that should be refused and is not would start the server, which never exits).
pub trait OutputWithin {
    /// Runs the command to its end and returns what it printed, or fails the test.
    fn output_within_20s(&mut self) -> std::io::Result<std::process::Output>;
}

impl OutputWithin for Command {
    fn output_within_20s(&mut self) -> std::io::Result<std::process::Output> {
        let mut child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let output = child.wait_with_output()?;
                panic!(
                    "the binary did not exit within 20 s; stderr: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output()
    }
}

/// Sends SIGTERM to `child`, as systemd and Docker stop a server.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (at most 20 s) until `child` exits, and returns how.
pub async fn wait_for_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not exit in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The running server; dropping it kills it.
pub struct ServerProcess {
    child: Child,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
}

impl ServerProcess {
    /// Starts the binary with only `envs` (plus `HOST`, `PORT` and `LOG=warn`) in its
    /// environment, in `dir` when given, and waits until it accepts connections.
    pub fn start(dir: Option<&Path>, envs: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = Command::new(BINARY);
        command
            .env_clear()
            .envs(envs.iter().copied())
            .envs([("HOST", "127.0.0.1"), ("LOG", "warn")])
            .env("PORT", port.to_string())
            .stdout(Stdio::null());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let server = Self {
            child: command.spawn().unwrap(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
