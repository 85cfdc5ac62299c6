//! Middleware: every request and its answer carry an `x-request-id`.
//!
//! One layer does what tower-http's `SetRequestId` and `PropagateRequestId` do together,
//! without their two request extensions and the response's extension map (a heartbeat's
//! only extensions, about 1k instructions of a `/healthz` answer): the id is kept from the
//! request when it has one, or made (a random UUID) and set on the request, where the
//! trace span reads it; the answer gets the same id unless the handler set one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

/// The header: `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request an `x-request-id` (its own, or a random UUID) and copies it to the
/// answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> RequestIds<S> {
        RequestIds { inner }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIds<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestIds<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match request.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = random_id();
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        RequestIdFuture {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

/// A random UUID, formatted on the stack.
fn random_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is visible ASCII: always a valid header value.
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestIds`].
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, R, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(id)) = (&mut result, this.id.take()) {
            response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    /// A service that answers with the request's `x-request-id` in its body, and sets
    /// `x-request-id: handler` on the answer when the request asks for it.
    fn echo() -> impl Service<
        Request<Body>,
        Response = Response<String>,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<Response<String>, std::convert::Infallible>>,
    > + Clone {
        tower::service_fn(|request: Request<Body>| async move {
            let seen = request
                .headers()
                .get(&X_REQUEST_ID)
                .map(|id| id.to_str().unwrap_or("not text").to_owned())
                .unwrap_or_default();
            let mut response = Response::new(seen);
            if request.uri().path() == "/own" {
                response
                    .headers_mut()
                    .insert(X_REQUEST_ID, HeaderValue::from_static("handler"));
            }
            Ok(response)
        })
    }

    async fn answer(request: Request<Body>) -> Response<String> {
        let Ok(response) = RequestIdLayer.layer(echo()).oneshot(request).await;
        response
    }

    fn header(response: &Response<String>) -> &str {
        response
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(|id| id.to_str().ok())
            .unwrap_or("none")
    }

    #[tokio::test]
    async fn a_request_without_an_id_gets_a_random_uuid_on_both_sides() {
        let first = answer(Request::new(Body::empty())).await;
        let second = answer(Request::new(Body::empty())).await;
        assert!(uuid::Uuid::parse_str(header(&first)).is_ok(), "{first:?}");
        // The handler saw the id the answer carries.
        assert_eq!(first.body(), header(&first));
        assert_ne!(header(&first), header(&second));
    }

    #[tokio::test]
    async fn a_request_id_is_kept_as_the_client_sent_it() {
        let request = Request::builder()
            .header("x-request-id", "req-42")
            .body(Body::empty())
            .unwrap_or_default();
        let response = answer(request).await;
        assert_eq!(response.body(), "req-42");
        assert_eq!(header(&response), "req-42");
        assert_eq!(response.headers().get_all(&X_REQUEST_ID).iter().count(), 1);
    }

    #[tokio::test]
    async fn an_id_the_handler_set_is_not_replaced() {
        let request = Request::builder()
            .uri("/own")
            .header("x-request-id", "req-42")
            .body(Body::empty())
            .unwrap_or_default();
        let response = answer(request).await;
        assert_eq!(header(&response), "handler");
        assert_eq!(response.headers().get_all(&X_REQUEST_ID).iter().count(), 1);
    }
}
