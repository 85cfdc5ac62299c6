//! The accept loop: HTTP/1.1 connections served by hyper with the smallest buffers it
//! allows, admitted under the connection caps ([`crate::connections`]), each request told
//! its client's address ([`crate::proxy`]), and a graceful shutdown that lets in-flight
//! requests finish.
//!
//! `axum::serve` would do, but it offers no way to size hyper's buffers nor to close one
//! chosen connection. An idle SSE connection is mostly its buffers: hyper's adaptive read
//! buffer starts at 8 KiB and, on the read that follows a request, grows to 16 KiB;
//! capping it at hyper's minimum (8 KiB) keeps every idle connection at 8 KiB of read
//! buffer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::connections::{Connections, Request};
use crate::metrics::Metrics;
use crate::proxy::TrustedProxies;
use crate::streams::ClientAddress;

/// hyper's smallest read buffer limit (`max_buf_size` refuses less). Request heads and
/// bodies larger than this are still read: the limit bounds the buffer between reads.
const READ_BUFFER: usize = 8 * 1024;

/// How long a connection may take to send a request head, counted from the moment it is
/// awaited: a new connection that sends nothing, or a keep-alive connection idle between
/// requests, is closed after this long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How a listener admits connections and reads client addresses.
pub(crate) struct Listening {
    /// The open connections, under their caps.
    pub(crate) connections: Connections,
    /// The peers whose forwarding headers are read.
    pub(crate) proxies: TrustedProxies,
    /// Where refused and idle-closed connections are counted.
    pub(crate) metrics: Metrics,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and
/// waits for open connections to finish (SSE streams must be ended by the caller's
/// shutdown future, e.g. a cancellation token they watch).
pub(crate) async fn serve(
    mut listener: TcpListener,
    router: Router,
    listening: Listening,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let Listening {
        connections,
        proxies,
        metrics,
    } = listening;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(READ_BUFFER)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let tasks = TaskTracker::new();
    let mut shutdown = pin!(shutdown);
    loop {
        // axum's `Listener` for `TcpListener` retries by itself: connection errors are
        // skipped, others (e.g. out of file descriptors) logged and retried after 1 s.
        let (stream, peer) = tokio::select! {
            accepted = Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        let peer = peer.ip();
        let admitted = match connections.admit(peer, !proxies.trusts(peer)) {
            Ok(admitted) => admitted,
            Err(refused) => {
                metrics.connection_refused(refused.cap());
                tracing::debug!(%peer, cap = refused.cap(), "connection refused");
                continue;
            }
        };
        if admitted.closed_idle {
            metrics.connection_closed_idle();
        }
        // Answers are small and written whole: nothing to gain from Nagle's delay.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let connection = std::sync::Arc::new(admitted.connection);
        let service = {
            let (router, proxies, connection) =
                (router.clone(), proxies.clone(), connection.clone());
            tower::service_fn(
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    // Every request knows its client's address (the stream caps and the
                    // job creation limits count by it), resolved here once.
                    let address = ClientAddress(proxies.client(peer, request.headers()));
                    request.extensions_mut().insert(address);
                    let busy = connection.request();
                    let answer = router
                        .clone()
                        .oneshot(crate::router::normalize_path(request));
                    async move {
                        let response = answer.await?;
                        Ok::<_, Infallible>(
                            response.map(|body| Body::new(Answering { body, _busy: busy })),
                        )
                    }
                },
            )
        };
        let served = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let open = metrics.connection();
        tasks.spawn(async move {
            let _open = open;
            let mut served = pin!(served);
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "connection ended with an error");
                    }
                    return;
                }
                () = connection.told_to_close() => {}
            }
            // To make room, or at shutdown: an idle connection closes at once, a busy one
            // after its answer. (hyper closes an idle keep-alive connection by itself, but
            // waits for the first request of a new one: such a connection is dropped.)
            served.as_mut().graceful_shutdown();
            if connection.is_idle() {
                return;
            }
            if let Err(error) = served.await {
                tracing::trace!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close_all();
    tasks.close();
    tasks.wait().await;
}

pin_project_lite::pin_project! {
    /// A response body that keeps its connection busy until it is written (or dropped).
    struct Answering {
        #[pin]
        body: Body,
        _busy: Request,
    }
}

impl HttpBody for Answering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
