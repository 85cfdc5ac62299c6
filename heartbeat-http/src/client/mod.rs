//! Rust clients of the server (feature `client`).
//!
//! - [`jobs`]: create jobs and learn when they finish, over one SSE connection with
//!   polling fallback — the HeyGen TypeScript client's abilities, and more.
//! - [`player`]: a player's heartbeat loop.
//!
//! ```no_run
//! # async fn run() -> Result<(), heartbeat_http::client::jobs::ClientError> {
//! use heartbeat_http::client::jobs::{JobsClient, Mode, Options};
//!
//! let client = JobsClient::new(Options { fallback: true, ..Options::new("http://localhost:3000", Mode::Sse) })?;
//! let id = client.create_job().await?;
//! let status = client.wait_for_job(id).await?;
//! println!("job {id}: {status:?}");
//! # Ok(()) }
//! ```

pub mod jobs;
pub mod player;
mod retry;
