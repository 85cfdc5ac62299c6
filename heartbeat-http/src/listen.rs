//! The accept loop: HTTP/1.1 connections served by hyper with the smallest buffers it
//! allows, and a graceful shutdown that lets in-flight requests finish.
//!
//! `axum::serve` would do, but it offers no way to size hyper's buffers. An idle SSE
//! connection is mostly its buffers: hyper's adaptive read buffer starts at 8 KiB and,
//! on the read that follows a request, grows to 16 KiB; capping it at hyper's minimum
//! (8 KiB) keeps every idle connection at 8 KiB of read buffer.

use std::future::Future;
use std::pin::pin;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::Layer;

/// hyper's smallest read buffer limit (`max_buf_size` refuses less). Request heads and
/// bodies larger than this are still read: the limit bounds the buffer between reads.
const READ_BUFFER: usize = 8 * 1024;

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and
/// waits for open connections to finish (SSE streams must be ended by the caller's
/// shutdown future, e.g. a cancellation token they watch).
pub(crate) async fn serve(
    mut listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(READ_BUFFER).timer(TokioTimer::new());
    let connections = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        // axum's `Listener` for `TcpListener` retries by itself: connection errors are
        // skipped, others (e.g. out of file descriptors) logged and retried after 1 s.
        let (stream, peer) = tokio::select! {
            accepted = Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        // Answers are small and written whole: nothing to gain from Nagle's delay.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        // Every request knows its connection's address (the stream caps count by it).
        let address = crate::streams::ClientAddress(peer.ip());
        let service = TowerToHyperService::new(
            tower::util::MapRequestLayer::new(
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(address);
                    crate::router::normalize_path(request)
                },
            )
            .layer(router.clone()),
        );
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}
