//! Caps on open event streams (SPEC §4 "No client exhausts the server").
//!
//! Every SSE stream (job streams, notice streams, the analytics feed) holds a
//! [`StreamPermit`] for as long as it is open. A permit is granted while the server holds
//! fewer than `total` streams, the client address fewer than `per_address` and the
//! stream's owner (a job owner, a user's notice streams, the analytics feed) fewer than
//! `per_owner`. A refused stream is answered 503 with `Retry-After` before any work is
//! done, and every other route keeps answering: the total cap is set below the process's
//! file limit, so descriptors remain for `/healthz`, `/readyz` and heartbeats.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Descriptors kept for everything but event streams when the total cap is derived from
/// the file limit: the larger of this and an eighth of the limit.
pub const RESERVED_DESCRIPTORS: usize = 256;

/// The caps, as configured (`STREAMS_MAX`, `STREAMS_PER_ADDRESS`, `STREAMS_PER_OWNER`,
/// `STREAM_MAX_LIFETIME_SECS`). A cap of 0 is no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCaps {
    /// Streams open at once on this server.
    pub total: usize,
    /// Streams open at once from one client address (behind a proxy every client has the
    /// proxy's address: raise it or set 0 there).
    pub per_address: usize,
    /// Streams open at once for one owner: a job owner, one user's notice streams, or the
    /// analytics feed.
    pub per_owner: usize,
    /// How long a stream lives before the server closes it; clients reconnect (with
    /// `Last-Event-ID`, which loses nothing).
    pub max_lifetime: Duration,
}

impl StreamCaps {
    /// The total cap for a process allowed `file_limit` descriptors: the limit less
    /// [`RESERVED_DESCRIPTORS`] or an eighth of it, whichever is more.
    pub fn total_for_file_limit(file_limit: u64) -> usize {
        below_file_limit(file_limit, RESERVED_DESCRIPTORS, 8)
    }
}

/// What a cap on descriptors leaves of `file_limit`: the limit less `reserve` or
/// `1/fraction` of it, whichever is more (at least one).
pub(crate) fn below_file_limit(file_limit: u64, reserve: usize, fraction: usize) -> usize {
    let limit = usize::try_from(file_limit).unwrap_or(usize::MAX);
    limit.saturating_sub(reserve.max(limit / fraction)).max(1)
}

impl Default for StreamCaps {
    /// 10,000 streams in all, 100 per client address, 16 per owner, one hour each.
    fn default() -> Self {
        Self {
            total: 10_000,
            per_address: 100,
            per_owner: 16,
            max_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Which cap refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamsFull {
    /// The server holds `total` streams.
    #[error("The server holds as many event streams as it allows ({0}); retry later.")]
    Total(usize),
    /// The client address holds `per_address` streams.
    #[error("Too many event streams from this address (at most {0}); close one or retry later.")]
    Address(usize),
    /// The owner holds `per_owner` streams.
    #[error("Too many event streams for this owner (at most {0}); close one or retry later.")]
    Owner(usize),
}

impl StreamsFull {
    /// The cap's name, for metrics: `total`, `address` or `owner`.
    pub fn cap(&self) -> &'static str {
        match self {
            StreamsFull::Total(_) => "total",
            StreamsFull::Address(_) => "address",
            StreamsFull::Owner(_) => "owner",
        }
    }
}

/// The open streams, counted in all, per address and per owner. Clones share the counts.
#[derive(Debug, Clone)]
pub struct StreamSlots {
    inner: Arc<Slots>,
}

#[derive(Debug)]
struct Slots {
    caps: StreamCaps,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    by_owner: HashMap<String, usize>,
}

impl StreamSlots {
    /// Slots under `caps`.
    pub fn new(caps: StreamCaps) -> Self {
        Self {
            inner: Arc::new(Slots {
                caps,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// The caps.
    pub fn caps(&self) -> &StreamCaps {
        &self.inner.caps
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.inner.lock().total
    }

    /// A permit for one more stream from `address` for `owner`, or the cap it would pass.
    /// Nothing is counted when it is refused.
    pub fn acquire(&self, address: IpAddr, owner: &str) -> Result<StreamPermit, StreamsFull> {
        let caps = self.inner.caps;
        let full = |cap: usize, count: usize| cap != 0 && count >= cap;
        let mut counts = self.inner.lock();
        if full(caps.total, counts.total) {
            return Err(StreamsFull::Total(caps.total));
        }
        if full(
            caps.per_address,
            counts.by_address.get(&address).copied().unwrap_or(0),
        ) {
            return Err(StreamsFull::Address(caps.per_address));
        }
        if full(
            caps.per_owner,
            counts.by_owner.get(owner).copied().unwrap_or(0),
        ) {
            return Err(StreamsFull::Owner(caps.per_owner));
        }
        counts.total += 1;
        *counts.by_address.entry(address).or_default() += 1;
        *counts.by_owner.entry(owner.to_owned()).or_default() += 1;
        Ok(StreamPermit {
            slots: self.inner.clone(),
            address,
            owner: owner.to_owned(),
        })
    }
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked while holding the lock: every
        // change is one increment or decrement.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open stream's place under the caps; released when dropped.
#[derive(Debug)]
pub struct StreamPermit {
    slots: Arc<Slots>,
    address: IpAddr,
    owner: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut counts = self.slots.lock();
        counts.total = counts.total.saturating_sub(1);
        release(&mut counts.by_address, &self.address);
        release(&mut counts.by_owner, self.owner.as_str());
    }
}

/// Decrements `key`'s count, forgetting keys that reach zero (the maps hold only the
/// addresses and owners with open streams).
fn release<K, Q>(counts: &mut HashMap<K, usize>, key: &Q)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

impl axum::response::IntoResponse for StreamsFull {
    /// 503 with `Retry-After` and the cap in the message. Not a store failure: the
    /// store-error metric does not count it.
    fn into_response(self) -> axum::response::Response {
        let mut response = (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(RETRY_AFTER_SECS),
        );
        response
    }
}

/// Seconds a refused stream's client should wait before trying again.
pub const RETRY_AFTER_SECS: u64 = 5;

/// The client's address, from the connection (the accept loop records it on every
/// request); unspecified when the router is served some other way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddress>()
            .copied()
            .unwrap_or(ClientAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn each_cap_refuses_and_a_dropped_permit_frees_its_place() {
        let slots = StreamSlots::new(StreamCaps {
            total: 3,
            per_address: 2,
            per_owner: 1,
            max_lifetime: Duration::from_secs(1),
        });
        let a = slots.acquire(ip(1), "alice");
        assert!(a.is_ok());
        assert_eq!(
            slots.acquire(ip(2), "alice").err(),
            Some(StreamsFull::Owner(1))
        );
        let b = slots.acquire(ip(1), "bob");
        assert!(b.is_ok());
        assert_eq!(
            slots.acquire(ip(1), "carol").err(),
            Some(StreamsFull::Address(2))
        );
        let c = slots.acquire(ip(2), "carol");
        assert!(c.is_ok());
        assert_eq!(
            slots.acquire(ip(3), "dave").err(),
            Some(StreamsFull::Total(3))
        );
        assert_eq!(slots.open(), 3);
        drop((a, b, c));
        assert_eq!(slots.open(), 0);
        let counts = slots.inner.lock();
        assert!(counts.by_address.is_empty() && counts.by_owner.is_empty());
    }

    #[test]
    fn zero_is_no_cap_and_the_total_leaves_a_reserve() {
        let slots = StreamSlots::new(StreamCaps {
            total: 0,
            per_address: 0,
            per_owner: 0,
            max_lifetime: Duration::from_secs(1),
        });
        let permits: Vec<_> = (0..100).map(|_| slots.acquire(ip(1), "o")).collect();
        assert!(permits.iter().all(Result::is_ok));
        assert_eq!(StreamCaps::total_for_file_limit(1024), 768);
        assert_eq!(StreamCaps::total_for_file_limit(20_000), 17_500);
        assert_eq!(StreamCaps::total_for_file_limit(100), 1);
    }
}
