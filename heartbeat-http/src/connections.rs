//! Caps on open client connections (SPEC §4 "Connections are capped in total and per
//! address, idle ones are closed first under pressure").
//!
//! Every accepted connection is admitted here before hyper serves it. A connection is
//! *idle* while no request of it is being answered (before its first request, and between
//! keep-alive requests); an event stream keeps its connection busy. At the total cap the
//! connection idle the longest is told to close, making room for the new one; when none is
//! idle the new connection is closed at once. Past the per-address cap (trusted proxies
//! excepted) a new connection is closed at once. The total cap is set below the process's
//! file limit, so accepting never fails for lack of descriptors and `/healthz`, `/readyz`
//! and heartbeats keep getting through.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Descriptors kept for everything but client connections (the store's files and
/// sockets, logs) when the total cap is derived from the file limit: the larger of this
/// and a sixteenth of the limit.
pub const RESERVED_DESCRIPTORS: usize = 64;

/// The caps, as configured (`CONNECTIONS_MAX`, `CONNECTIONS_PER_ADDRESS`). A cap of 0 is
/// no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// Connections open at once on this server (one listener).
    pub total: usize,
    /// Connections open at once from one peer address; trusted proxies are not capped.
    pub per_address: usize,
}

impl ConnectionCaps {
    /// The total cap for a process allowed `file_limit` descriptors: the limit less
    /// [`RESERVED_DESCRIPTORS`] or a sixteenth of it, whichever is more.
    pub fn total_for_file_limit(file_limit: u64) -> usize {
        crate::streams::below_file_limit(file_limit, RESERVED_DESCRIPTORS, 16)
    }
}

impl Default for ConnectionCaps {
    /// 20,000 connections in all, 256 per address.
    fn default() -> Self {
        Self {
            total: 20_000,
            per_address: 256,
        }
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server holds `total` connections and none is idle.
    Total,
    /// The address holds `per_address` connections.
    Address,
}

impl Refused {
    /// The cap's name, for metrics: `total` or `address`.
    pub fn cap(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::Address => "address",
        }
    }
}

/// What admitting a connection came to.
#[derive(Debug)]
pub struct Admitted {
    /// The new connection's place; it frees it when dropped.
    pub connection: Connection,
    /// Whether an idle connection was told to close to make room.
    pub closed_idle: bool,
}

/// The open connections of one listener. Clones share them.
///
/// The table is locked when a connection opens or closes; a request only touches its own
/// connection's counters, so answering costs no lock.
#[derive(Debug, Clone)]
pub struct Connections {
    caps: ConnectionCaps,
    table: Arc<Mutex<Table>>,
    /// The sequence that orders when connections became idle.
    clock: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Entry>,
    by_address: HashMap<IpAddr, usize>,
    /// Connections told to close that have not closed yet (not counted under the cap).
    closing: usize,
}

#[derive(Debug)]
struct Entry {
    address: IpAddr,
    state: Arc<State>,
    closing: bool,
}

/// What a connection and its requests share.
#[derive(Debug, Default)]
struct State {
    /// Requests being answered (their response bodies not yet finished).
    requests: AtomicUsize,
    /// When it last became idle, from [`Connections::clock`].
    idle_since: AtomicU64,
    close: Notify,
}

impl State {
    fn is_idle(&self) -> bool {
        self.requests.load(Ordering::Acquire) == 0
    }
}

impl Table {
    /// Tells the connection idle the longest to close; whether there was one. (A scan,
    /// only at the total cap.)
    fn close_oldest_idle(&mut self) -> bool {
        let oldest = self
            .open
            .values_mut()
            .filter(|entry| !entry.closing && entry.state.is_idle())
            .min_by_key(|entry| entry.state.idle_since.load(Ordering::Acquire));
        let Some(entry) = oldest else {
            return false;
        };
        entry.closing = true;
        entry.state.close.notify_one();
        self.closing += 1;
        true
    }
}

impl Connections {
    /// No connection yet, under `caps`.
    pub fn new(caps: ConnectionCaps) -> Self {
        Self {
            caps,
            table: Arc::new(Mutex::new(Table::default())),
            clock: Arc::new(AtomicU64::new(0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every change keeps the table whole: a panic elsewhere cannot leave it
        // half-written.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Connections open now (those told to close included, until they have).
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Admits a new connection from `address` (`capped`: whether the per-address cap
    /// applies, i.e. the peer is not a trusted proxy), telling the connection idle the
    /// longest to close when the server is at its total cap; or says which cap refuses it.
    pub fn admit(&self, address: IpAddr, capped: bool) -> Result<Admitted, Refused> {
        let caps = self.caps;
        let mut table = self.lock();
        if capped
            && caps.per_address != 0
            && table.by_address.get(&address).copied().unwrap_or(0) >= caps.per_address
        {
            return Err(Refused::Address);
        }
        let mut closed_idle = false;
        if caps.total != 0 && table.open.len() - table.closing >= caps.total {
            if !table.close_oldest_idle() {
                return Err(Refused::Total);
            }
            closed_idle = true;
        }
        table.next += 1;
        let id = table.next;
        let state = Arc::new(State {
            idle_since: AtomicU64::new(self.tick()),
            ..State::default()
        });
        table.open.insert(
            id,
            Entry {
                address,
                state: state.clone(),
                closing: false,
            },
        );
        *table.by_address.entry(address).or_default() += 1;
        Ok(Admitted {
            connection: Connection {
                id,
                state,
                connections: self.clone(),
            },
            closed_idle,
        })
    }

    /// Tells every connection to close (server shutdown): idle ones close at once, busy
    /// ones after their answer.
    pub fn close_all(&self) {
        let mut table = self.lock();
        let mut closing = 0;
        for entry in table.open.values_mut() {
            closing += usize::from(!entry.closing);
            entry.closing = true;
            entry.state.close.notify_one();
        }
        table.closing += closing;
    }
}

/// One open connection's place under the caps; freed when dropped.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    state: Arc<State>,
    connections: Connections,
}

impl Connection {
    /// Resolves when the connection should close (to make room, or at shutdown).
    pub async fn told_to_close(&self) {
        self.state.close.notified().await;
    }

    /// Whether no request of the connection is being answered.
    pub fn is_idle(&self) -> bool {
        self.state.is_idle()
    }

    /// Marks a request as being answered until the returned guard is dropped (with the
    /// response body, once written): the connection is busy meanwhile.
    pub fn request(&self) -> Request {
        self.state.requests.fetch_add(1, Ordering::AcqRel);
        Request {
            state: self.state.clone(),
            clock: self.connections.clock.clone(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut table = self.connections.lock();
        let Some(entry) = table.open.remove(&self.id) else {
            return;
        };
        if entry.closing {
            table.closing = table.closing.saturating_sub(1);
        }
        if let Some(count) = table.by_address.get_mut(&entry.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.by_address.remove(&entry.address);
            }
        }
    }
}

/// A request being answered on a connection; the connection is idle again once every
/// request's guard is dropped.
#[derive(Debug)]
pub struct Request {
    state: Arc<State>,
    clock: Arc<AtomicU64>,
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.state.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = self.clock.fetch_add(1, Ordering::AcqRel) + 1;
            self.state.idle_since.store(now, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn caps(total: usize, per_address: usize) -> Connections {
        Connections::new(ConnectionCaps { total, per_address })
    }

    #[test]
    fn the_per_address_cap_refuses_and_spares_trusted_proxies() {
        let connections = caps(0, 2);
        let held: Vec<_> = (0..2).map(|_| connections.admit(ip(1), true)).collect();
        assert!(held.iter().all(Result::is_ok));
        assert_eq!(connections.admit(ip(1), true).err(), Some(Refused::Address));
        assert!(connections.admit(ip(2), true).is_ok());
        assert!(connections.admit(ip(1), false).is_ok(), "a trusted proxy");
        drop(held);
        assert!(connections.admit(ip(1), true).is_ok());
    }

    #[test]
    fn at_the_total_cap_the_longest_idle_connection_makes_room() {
        let connections = caps(2, 0);
        let first = connections.admit(ip(1), true).map(|a| a.connection);
        let second = connections.admit(ip(2), true).map(|a| a.connection);
        let (Ok(first), Ok(second)) = (first, second) else {
            panic!("admitted under the cap");
        };
        // The first connection answers a request: the second is idle the longest now.
        let busy = first.request();
        let third = connections.admit(ip(3), true);
        assert!(third.as_ref().is_ok_and(|admitted| admitted.closed_idle));
        assert!(!first.is_idle() && second.is_idle());
        assert_eq!(connections.lock().closing, 1);
        // Told to close: it is not counted, and not picked twice.
        drop(second);
        assert_eq!(connections.open(), 2);
        drop(busy);
        let Ok(third) = third.map(|admitted| admitted.connection) else {
            panic!("admitted");
        };
        let fourth = connections.admit(ip(4), true);
        let Ok(fourth) = fourth.map(|admitted| (admitted.closed_idle, admitted.connection)) else {
            panic!("admitted by closing the idle third");
        };
        assert!(fourth.0);
        drop(third);
        // Only busy connections left: a new one is refused.
        let (_one, _four) = (first.request(), fourth.1.request());
        assert_eq!(connections.admit(ip(6), true).err(), Some(Refused::Total));
        assert_eq!(connections.open(), 2);
    }
}
