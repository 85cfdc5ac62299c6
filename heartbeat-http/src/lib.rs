//! # heartbeat-http
//!
//! The heartbeat server: an [`axum`] router over `heartbeat-core` that can take the place
//! of the Node.js heartbeat server (same routes, status codes and bodies, same tokens and,
//! with Redis, the same keys) and serves the HeyGen jobs client unchanged. No rule lives
//! here: every decision is the core's; this crate reads requests, calls the core and
//! writes answers.
//!
//! The binary `heartbeat-server` runs it (see `--help`); the library lets a program embed
//! the router with its own stores:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use heartbeat_core::TokenCodec;
//! use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore, MemorySessionStore};
//! use heartbeat_http::{Settings, server};
//!
//! let codec = TokenCodec::new("shared key").expect("a key");
//! let app = server::app(
//!     codec,
//!     MemorySessionStore::new(),
//!     MemoryJobStore::new(),
//!     MemoryEventBus::new(),
//!     Settings::default(),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! server::serve(app, listener, server::shutdown_signal()).await;
//! Ok(())
//! # }
//! ```
//!
//! Cargo features: `server` (the router and the binary), the stores compiled in: `memory`,
//! `sled`, `redis` (all on by default; `STORAGE` chooses among them at run time), and
//! `client`, the Rust clients, which build without the server:
//! `heartbeat-http = { default-features = false, features = ["client"] }` brings only
//! `heartbeat-core`, reqwest and tokio.
#![deny(missing_docs)]

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod connections;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod export;
#[cfg(feature = "server")]
mod extract;
#[cfg(feature = "server")]
mod listen;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod proxy;
#[cfg(feature = "server")]
pub mod rate;
#[cfg(feature = "server")]
mod request_id;
#[cfg(feature = "server")]
pub mod router;
#[cfg(feature = "server")]
mod routes;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod sse;
#[cfg(feature = "server")]
pub mod state;
#[cfg(feature = "server")]
pub mod streams;

#[cfg(feature = "server")]
pub use config::{Cli, ConfigError, CorsOrigins, ServerArgs, Settings, StoreKind};
#[cfg(feature = "server")]
pub use error::{ApiError, TextError};
#[cfg(feature = "server")]
pub use router::Surface;
#[cfg(feature = "server")]
pub use routes::heartbeat::{INVALID_TOKEN_MESSAGE, OVER_LIMIT_MESSAGE};
#[cfg(feature = "server")]
pub use state::App;

// The Rust examples of the docs compile as doctests (`cargo test --doc`).
#[cfg(all(doctest, feature = "client"))]
#[doc = include_str!("../../docs/clients.md")]
struct ClientsDoc;

#[cfg(doctest)]
#[doc = include_str!("../../docs/library.md")]
struct LibraryDoc;
