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

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
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
#[derive(Debug, Clone)]
pub struct Connections {
    caps: ConnectionCaps,
    table: Arc<Mutex<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Entry>,
    by_address: HashMap<IpAddr, usize>,
    /// Idle connections, `(idle since, id)`: the first one is idle the longest.
    idle: BTreeSet<(u64, u64)>,
    /// Connections told to close that have not closed yet (not counted under the cap).
    closing: usize,
}

#[derive(Debug)]
struct Entry {
    address: IpAddr,
    /// Requests being answered (their response bodies not yet finished).
    requests: usize,
    /// When it became idle (a sequence number), while idle.
    idle_since: Option<u64>,
    closing: bool,
    close: Arc<Notify>,
}

impl Table {
    fn tick(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Tells the connection idle the longest to close; whether there was one.
    fn close_oldest_idle(&mut self) -> bool {
        let Some((_, id)) = self.idle.pop_first() else {
            return false;
        };
        if let Some(entry) = self.open.get_mut(&id) {
            entry.idle_since = None;
            entry.closing = true;
            entry.close.notify_one();
            self.closing += 1;
        }
        true
    }
}

impl Connections {
    /// No connection yet, under `caps`.
    pub fn new(caps: ConnectionCaps) -> Self {
        Self {
            caps,
            table: Arc::new(Mutex::new(Table::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every change keeps the table whole: a panic elsewhere cannot leave it
        // half-written.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
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
        let id = table.tick();
        let since = table.tick();
        let close = Arc::new(Notify::new());
        table.open.insert(
            id,
            Entry {
                address,
                requests: 0,
                idle_since: Some(since),
                closing: false,
                close: close.clone(),
            },
        );
        table.idle.insert((since, id));
        *table.by_address.entry(address).or_default() += 1;
        Ok(Admitted {
            connection: Connection {
                id,
                close,
                connections: self.clone(),
            },
            closed_idle,
        })
    }

    /// Tells every connection to close (server shutdown): idle ones close at once, busy
    /// ones after their answer.
    pub fn close_all(&self) {
        let mut table = self.lock();
        table.idle.clear();
        let mut closing = 0;
        for entry in table.open.values_mut() {
            entry.idle_since = None;
            closing += usize::from(!entry.closing);
            entry.closing = true;
            entry.close.notify_one();
        }
        table.closing += closing;
    }
}

/// One open connection's place under the caps; freed when dropped.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    close: Arc<Notify>,
    connections: Connections,
}

impl Connection {
    /// Resolves when the connection should close (to make room, or at shutdown).
    pub async fn told_to_close(&self) {
        self.close.notified().await;
    }

    /// Whether no request of the connection is being answered.
    pub fn is_idle(&self) -> bool {
        self.connections
            .lock()
            .open
            .get(&self.id)
            .is_none_or(|entry| entry.requests == 0)
    }

    /// Marks a request as being answered until the returned guard is dropped (with the
    /// response body, once written): the connection is busy meanwhile.
    pub fn request(&self) -> Request {
        let mut table = self.connections.lock();
        let mut since = None;
        if let Some(entry) = table.open.get_mut(&self.id) {
            entry.requests += 1;
            since = entry.idle_since.take();
        }
        if let Some(since) = since {
            table.idle.remove(&(since, self.id));
        }
        Request {
            id: self.id,
            connections: self.connections.clone(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut table = self.connections.lock();
        let Some(entry) = table.open.remove(&self.id) else {
            return;
        };
        if let Some(since) = entry.idle_since {
            table.idle.remove(&(since, self.id));
        }
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
    id: u64,
    connections: Connections,
}

impl Drop for Request {
    fn drop(&mut self) {
        let mut table = self.connections.lock();
        let table = &mut *table;
        let Some(entry) = table.open.get_mut(&self.id) else {
            return;
        };
        entry.requests = entry.requests.saturating_sub(1);
        if entry.requests == 0 && !entry.closing {
            table.next += 1;
            entry.idle_since = Some(table.next);
            table.idle.insert((table.next, self.id));
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
