//! Runnable examples of heartbeat; see the `[[example]]` targets of this package and run
//! them with `cargo run -p heartbeat-examples --example NAME`.
//!
//! What the examples share: [`LocalServer`], a server in the example's own process.

use heartbeat_core::TokenCodec;
use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore, MemorySessionStore};
use heartbeat_http::{Settings, server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A heartbeat server on the in-memory stores and a free loopback port, running in this
/// process: what the examples play against.
#[derive(Debug)]
pub struct LocalServer {
    url: String,
    stop: oneshot::Sender<()>,
    running: JoinHandle<()>,
}

impl LocalServer {
    /// Starts serving with `codec` and `settings`.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(codec: TokenCodec, settings: Settings) -> std::io::Result<Self> {
        let app = server::app(
            codec,
            MemorySessionStore::new(),
            MemoryJobStore::new(),
            MemoryEventBus::new(),
            settings,
        );
        Self::serve(app).await
    }

    /// Serves `app`, built over any stores (one instance of a deployment sharing Redis,
    /// say).
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn serve(app: heartbeat_http::App) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(server::serve(app, listener, async move {
            let _ = stopped.await;
        }));
        Ok(Self { url, stop, running })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Shuts the server down gracefully and waits until it has.
    ///
    /// # Errors
    ///
    /// When the server's task panicked.
    pub async fn stop(self) -> Result<(), tokio::task::JoinError> {
        let _ = self.stop.send(());
        self.running.await
    }
}
