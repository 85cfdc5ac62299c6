//! Where each command goes.
//!
//! On one server (or Sentinel's master) every command goes to one pool of connections. On
//! a Redis Cluster each master has a pool of its own, and a command goes to the master
//! serving its hash slot in a routing table kept here. The pools reconnect one by one, so
//! while one master fails over, the users of the others see nothing of it (a client that
//! routes for itself reconnects to the whole cluster at once, holding every command).
//!
//! The routing table is read again from `CLUSTER SLOTS`, asked of the masters in parallel
//! (then of the URL's nodes): every few seconds, and soon after a command to a master
//! failed or was redirected. A `MOVED` or `ASK` answer means the command did not run: it
//! is sent where the answer says (`ASK` with `ASKING` before it, on the same connection),
//! at most [`MAX_REDIRECTS`] times; a `TRYAGAIN` (a slot half moved) is sent again
//! shortly. A command whose outcome is unknown (a timeout, a lost
//! connection) is never sent again: its caller reads the state again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fred::clients::{Client, Pool};
use fred::error::{Error, ErrorKind};
use fred::interfaces::ClientLike;
use fred::types::cluster::ClusterRouting;
use fred::types::config::{Config, Server, ServerConfig};
use fred::types::scripts::Script;
use fred::types::{Builder, ClusterHash, CustomCommand, FromValue, Value};
use tokio::task::JoinHandle;

use crate::layout::{SLOTS, slot_of};

/// Redirections (and `TRYAGAIN` answers) followed for one command before giving up: a
/// slot moves once at a time, and a redirection names its new master.
const MAX_REDIRECTS: usize = 8;

/// How long to wait before sending again a command answered `TRYAGAIN` (its keys were
/// being moved between two masters).
const TRY_AGAIN_AFTER: Duration = Duration::from_millis(20);

/// How often the routing table is read when nothing asks for it sooner.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The least time between two readings of the routing table (a failover makes every
/// command to its master ask for one).
const REFRESH_GAP: Duration = Duration::from_millis(100);

/// How to build the clients of the nodes: the settings of the URL, with each node's
/// address put in.
#[derive(Clone)]
pub(crate) struct Connector {
    /// The configuration read from the URL (and the password setting).
    pub(crate) config: Config,
    /// Connections per pool.
    pub(crate) pool_size: usize,
    /// How long connecting may take.
    pub(crate) connect_timeout: Duration,
    /// How long a command may take.
    pub(crate) command_timeout: Duration,
}

impl Connector {
    /// A builder for `server` (a cluster node), or for the URL's own servers.
    pub(crate) fn builder(&self, server: Option<&Server>) -> Builder {
        let mut config = self.config.clone();
        if let Some(server) = server {
            config.server = ServerConfig::Centralized {
                server: server.clone(),
            };
            // A node learnt of later may be down for now: its pool keeps trying.
            config.fail_fast = false;
        }
        let mut builder = self.configured(config);
        builder.set_policy(fred::prelude::ReconnectPolicy::new_exponential(
            0, 50, 2_000, 2,
        ));
        builder
    }

    /// A builder for `config` with the timeouts, and no command ever sent twice.
    fn configured(&self, config: Config) -> Builder {
        let (connect_timeout, command_timeout) = (self.connect_timeout, self.command_timeout);
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|connection| {
                connection.connection_timeout = connect_timeout;
                connection.internal_command_timeout = command_timeout;
                // A resent compare-and-set could apply twice: fail instead, the caller
                // reads again.
                connection.max_command_attempts = 1;
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = command_timeout;
                performance.broadcast_channel_capacity = 4096;
            });
        builder
    }

    /// A pool for `server`, once connected. When it is not connected within the connect
    /// timeout: an error if `must_connect` (the pool closed), else the pool, still
    /// trying in the background (a master learnt of while serving: commands sent to it
    /// wait for its connection, up to their timeout).
    async fn master(&self, server: &Server, must_connect: bool) -> Result<Master, Error> {
        let pool = self.builder(Some(server)).build_pool(self.pool_size)?;
        let master = Master {
            server: server.clone(),
            stop: pool.connect().abort_handle(),
            pool,
        };
        let error = match tokio::time::timeout(self.connect_timeout, master.pool.wait_for_connect())
            .await
        {
            Ok(Ok(())) => return Ok(master),
            Ok(Err(error)) => error,
            Err(_) => Error::new(
                ErrorKind::Timeout,
                format!(
                    "no connection to {server} within {:?}",
                    self.connect_timeout
                ),
            ),
        };
        if must_connect {
            master.close();
            return Err(error);
        }
        tracing::warn!(%server, %error, "a Redis Cluster master does not answer yet");
        Ok(master)
    }

    /// A client for one question to `server` (`CLUSTER SLOTS` of a seed): it does not
    /// reconnect, and gives up after the connect timeout.
    fn probe(&self, server: &Server) -> Result<Client, Error> {
        let mut config = self.config.clone();
        config.server = ServerConfig::Centralized {
            server: server.clone(),
        };
        config.fail_fast = true;
        // No reconnection policy: the client gives up with its first connection.
        self.configured(config).build()
    }
}

/// The clients commands go through.
#[derive(Clone)]
pub(crate) enum Nodes {
    /// One server (or Sentinel's master).
    One(Pool),
    /// A Redis Cluster's masters.
    Cluster(Arc<Cluster>),
}

impl Nodes {
    /// Sends `command` with `args` to the node serving `key`, following redirections.
    pub(crate) async fn run<R: FromValue>(
        &self,
        key: &str,
        command: &'static str,
        args: Vec<Value>,
    ) -> Result<R, Error> {
        let command = CustomCommand::new_static(command, ClusterHash::Random, false);
        match self {
            Nodes::One(pool) => pool.next().custom(command, args).await,
            Nodes::Cluster(cluster) => cluster
                .run(slot_of(key.as_bytes()), &command, args, None)
                .await?
                .convert(),
        }
    }

    /// Runs `script` (`EVALSHA`, loading it first where the node forgot it, as after a
    /// restart) with `keys` and `args`, on the node serving the first key.
    pub(crate) async fn eval<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, Error> {
        match self {
            Nodes::One(pool) => script.evalsha_with_reload(pool.next(), keys, args).await,
            Nodes::Cluster(cluster) => {
                let slot = keys.first().map_or(0, |key| slot_of(key.as_bytes()));
                let mut command = Vec::with_capacity(2 + keys.len() + args.len());
                command.push(Value::from(script.sha1().clone()));
                command.push(Value::from(keys.len() as i64));
                command.extend(keys.into_iter().map(Value::from));
                command.extend(args.into_iter().map(Value::from));
                let evalsha = CustomCommand::new_static("EVALSHA", ClusterHash::Random, false);
                cluster
                    .run(slot, &evalsha, command, Some(script))
                    .await?
                    .convert()
            }
        }
    }

    /// A client of each master, and the slots it serves (one server: every slot); an
    /// error while some slot of a cluster has no master.
    pub(crate) fn masters(&self) -> Result<Vec<(Client, Vec<u16>)>, Error> {
        match self {
            Nodes::One(pool) => Ok(vec![(pool.next().clone(), (0..SLOTS).collect())]),
            Nodes::Cluster(cluster) => cluster.masters(),
        }
    }

    /// A client of each master (one server: of the pool).
    pub(crate) fn each_master(&self) -> Vec<Client> {
        match self {
            Nodes::One(pool) => vec![pool.next().clone()],
            Nodes::Cluster(cluster) => cluster
                .routing()
                .masters
                .iter()
                .map(|master| master.pool.next().clone())
                .collect(),
        }
    }

    /// Reads the cluster's routing table again now (one server: nothing to do).
    pub(crate) async fn refresh(&self) {
        if let Nodes::Cluster(cluster) = self {
            cluster.refresh().await;
        }
    }

    /// Asks for the routing table to be read again soon, without waiting for it.
    pub(crate) fn refresh_soon(&self) {
        if let Nodes::Cluster(cluster) = self {
            cluster.wake.notify_one();
        }
    }

    /// Loads `scripts` on every master.
    pub(crate) async fn load(&self, scripts: &[&Script]) -> Result<(), Error> {
        for (client, _) in self.masters()? {
            for script in scripts {
                script.load(&client).await?;
            }
        }
        Ok(())
    }

    /// Closes every connection.
    pub(crate) async fn quit(&self) {
        match self {
            Nodes::One(pool) => {
                let _ = pool.quit().await;
            }
            Nodes::Cluster(cluster) => {
                let routing = cluster.routing();
                for master in &routing.masters {
                    let _ = master.pool.quit().await;
                    master.stop.abort();
                }
            }
        }
    }
}

/// A master and its pool.
#[derive(Clone)]
struct Master {
    server: Server,
    pool: Pool,
    /// Stops the pool's connection task (which reconnects forever otherwise: a pool told
    /// to quit while it connects would go on).
    stop: tokio::task::AbortHandle,
}

impl Master {
    /// Closes the pool's connections, in the background.
    fn close(self) {
        tokio::spawn(async move {
            let _ = self.pool.quit().await;
            self.stop.abort();
        });
    }
}

/// A routing table: which master serves each slot.
struct Routing {
    masters: Vec<Master>,
    /// For each slot, the index of its master in `masters` ([`NO_MASTER`] when none).
    owners: Vec<u16>,
}

/// A slot no master serves (a cluster missing some of its slots).
const NO_MASTER: u16 = u16::MAX;

impl Routing {
    fn master(&self, slot: u16) -> Option<&Master> {
        let owner = *self.owners.get(usize::from(slot))?;
        self.masters.get(usize::from(owner))
    }

    fn find(&self, server: &Server) -> Option<&Master> {
        self.masters.iter().find(|master| master.server == *server)
    }

    fn index_of(&self, server: &Server) -> Option<u16> {
        self.masters
            .iter()
            .position(|master| master.server == *server)
            .and_then(|index| u16::try_from(index).ok())
    }
}

/// A Redis Cluster: a pool per master, and the routing table.
pub(crate) struct Cluster {
    connector: Connector,
    /// The nodes the URL names (a configuration endpoint behind DNS among them).
    seeds: Vec<Server>,
    routing: RwLock<Arc<Routing>>,
    /// Counts the routing tables installed: a table read before another change is not
    /// installed over it.
    generation: AtomicU64,
    /// Held while the routing table changes (one change at a time).
    changing: tokio::sync::Mutex<()>,
    /// Wakes the task that reads the routing table ([`start_refreshing`]).
    wake: Arc<tokio::sync::Notify>,
}

impl Cluster {
    /// Reads the routing table from the first of `connector`'s nodes that answers and
    /// connects to every master.
    pub(crate) async fn connect(connector: Connector) -> Result<Arc<Self>, Error> {
        let seeds = connector.config.server.hosts();
        let mut last_error = None;
        let mut table = None;
        for seed in &seeds {
            match ask_seed(&connector, seed).await {
                Ok(found) => {
                    table = Some(found);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let Some(table) = table else {
            return Err(last_error.unwrap_or_else(|| {
                Error::new(ErrorKind::Config, "the URL names no cluster node")
            }));
        };
        let mut masters = Vec::new();
        for server in table.unique_primary_nodes() {
            match connector.master(&server, true).await {
                Ok(master) => masters.push(master),
                Err(error) => {
                    masters.into_iter().for_each(Master::close);
                    return Err(error);
                }
            }
        }
        let routing = build_routing(&table, masters);
        Ok(Arc::new(Self {
            connector,
            seeds,
            routing: RwLock::new(Arc::new(routing)),
            generation: AtomicU64::new(0),
            changing: tokio::sync::Mutex::new(()),
            wake: Arc::new(tokio::sync::Notify::new()),
        }))
    }

    fn routing(&self) -> Arc<Routing> {
        Arc::clone(
            &self
                .routing
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    fn install(&self, routing: Routing) {
        *self
            .routing
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(routing);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A client of each master and the slots it serves; an error while some slot has no
    /// master (a read over every slot would miss its part).
    fn masters(&self) -> Result<Vec<(Client, Vec<u16>)>, Error> {
        let routing = self.routing();
        let mut slots: Vec<Vec<u16>> = vec![Vec::new(); routing.masters.len()];
        for (slot, owner) in (0..SLOTS).zip(routing.owners.iter()) {
            match slots.get_mut(usize::from(*owner)) {
                Some(slots) => slots.push(slot),
                None => {
                    self.wake.notify_one();
                    return Err(Error::new(
                        ErrorKind::Cluster,
                        format!("CLUSTERDOWN no master serves hash slot {slot} yet"),
                    ));
                }
            }
        }
        Ok(routing
            .masters
            .iter()
            .zip(slots)
            .filter(|(_, slots)| !slots.is_empty())
            .map(|(master, slots)| (master.pool.next().clone(), slots))
            .collect())
    }

    /// Sends a command to the master of `slot`, following `MOVED` and `ASK` (the command
    /// did not run), and loading `script` where a node answers `NOSCRIPT` (neither), for
    /// at most twice the command timeout in all.
    async fn run(
        &self,
        slot: u16,
        command: &CustomCommand,
        args: Vec<Value>,
        script: Option<&Script>,
    ) -> Result<Value, Error> {
        let deadline = tokio::time::Instant::now() + 2 * self.connector.command_timeout;
        let mut target = Target::Slot(slot);
        let mut last_error = None;
        for _ in 0..=MAX_REDIRECTS {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let (server, client, asking) = match &target {
                Target::Slot(slot) => match self.routing().master(*slot) {
                    Some(master) => (master.server.clone(), master.pool.next().clone(), false),
                    None => {
                        self.wake.notify_one();
                        return Err(Error::new(
                            ErrorKind::Cluster,
                            format!("CLUSTERDOWN no master serves hash slot {slot} yet"),
                        ));
                    }
                },
                Target::Asked(server) => (server.clone(), self.client_of(server).await?, true),
            };
            let answer = if asking {
                asked(&client, command, args.clone()).await
            } else {
                client
                    .custom::<Value, _>(command.clone(), args.clone())
                    .await
            };
            let error = match answer {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            tracing::debug!(slot, %server, %error, "a Redis Cluster command was not applied");
            if let Some((kind, slot, to)) = redirection(&error, &server) {
                match kind {
                    Redirection::Moved => {
                        self.learn(slot, &to).await;
                        self.wake.notify_one();
                        target = Target::Slot(slot);
                    }
                    Redirection::Ask => target = Target::Asked(to),
                }
            } else if let (Some(script), true) = (script, error.details().starts_with("NOSCRIPT")) {
                script.load(&client).await?;
            } else if error.details().starts_with("TRYAGAIN") {
                // A slot half migrated: some of the command's keys are on each side. It
                // did not run; the migration moves the rest in a moment.
                tokio::time::sleep(TRY_AGAIN_AFTER).await;
            } else {
                if crate::is_transient(&error) {
                    self.wake.notify_one();
                }
                return Err(error);
            }
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| Error::new(ErrorKind::Cluster, "too many redirections")))
    }

    /// A client of `server`'s pool (a master's, or a new pool for a node that is not one
    /// in the routing table yet: an `ASK` to a slot's importing node).
    async fn client_of(&self, server: &Server) -> Result<Client, Error> {
        let routing = match self.routing().find(server) {
            Some(master) => return Ok(master.pool.next().clone()),
            None => {
                self.learn_master(server).await?;
                self.routing()
            }
        };
        routing
            .find(server)
            .map(|master| master.pool.next().clone())
            .ok_or_else(|| Error::new(ErrorKind::Cluster, format!("no pool for {server}")))
    }

    /// Adds a pool for `server` if the routing table has none (connecting outside the
    /// lock: commands that change the routing do not wait for it).
    async fn learn_master(&self, server: &Server) -> Result<(), Error> {
        if self.routing().find(server).is_some() {
            return Ok(());
        }
        let master = self.connector.master(server, false).await?;
        let _changing = self.changing.lock().await;
        let routing = self.routing();
        if routing.find(server).is_some() {
            master.close();
            return Ok(());
        }
        let mut masters = routing.masters.clone();
        masters.push(master);
        self.install(Routing {
            masters,
            owners: routing.owners.clone(),
        });
        Ok(())
    }

    /// Records that `server` serves `slot` (a `MOVED` answer).
    async fn learn(&self, slot: u16, server: &Server) {
        if self.learn_master(server).await.is_err() {
            return;
        }
        let _changing = self.changing.lock().await;
        let routing = self.routing();
        let Some(index) = routing.index_of(server) else {
            return;
        };
        let mut owners = routing.owners.clone();
        if let Some(owner) = owners.get_mut(usize::from(slot)) {
            *owner = index;
        }
        self.install(Routing {
            masters: routing.masters.clone(),
            owners,
        });
    }

    /// Reads the routing table again (from the first master that answers, else from the
    /// URL's nodes) and connects to masters it did not know; pools of nodes that are no
    /// longer masters are closed. A table that covers no slot is not installed, nor one
    /// read while the routing changed otherwise (a `MOVED` learnt meanwhile is newer).
    pub(crate) async fn refresh(&self) {
        let read_at = self.generation.load(Ordering::Acquire);
        let Some(table) = self.ask_table().await else {
            return;
        };
        if table.slots().is_empty() {
            tracing::warn!("a Redis Cluster node answered an empty CLUSTER SLOTS: ignored");
            return;
        }
        let known = self.routing();
        let new: Vec<Server> = table
            .unique_primary_nodes()
            .into_iter()
            .filter(|server| known.find(server).is_none())
            .collect();
        let mut connected = Vec::new();
        for server in new {
            match self.connector.master(&server, false).await {
                Ok(master) => connected.push(master),
                Err(error) => {
                    tracing::warn!(%server, %error, "cannot reach a Redis Cluster master");
                }
            }
        }
        let _changing = self.changing.lock().await;
        if self.generation.load(Ordering::Acquire) != read_at {
            connected.into_iter().for_each(Master::close);
            self.wake.notify_one();
            return;
        }
        let routing = self.routing();
        let mut masters = Vec::new();
        let mut closed = Vec::new();
        for master in routing.masters.iter().cloned().chain(connected) {
            if table.unique_primary_nodes().contains(&master.server) {
                masters.push(master);
            } else {
                closed.push(master);
            }
        }
        let new = build_routing(&table, masters);
        if !closed.is_empty() || new.owners != routing.owners {
            tracing::info!(
                masters = new.masters.len(),
                "the Redis Cluster's routing changed"
            );
        }
        self.install(new);
        for master in closed {
            tracing::info!(server = %master.server, "no longer a Redis Cluster master: its connections close");
            master.close();
        }
    }

    /// `CLUSTER SLOTS`, from the first master that answers within the command timeout,
    /// else from the first of the URL's nodes that does.
    async fn ask_table(&self) -> Option<ClusterRouting> {
        let routing = self.routing();
        let timeout = self.connector.command_timeout;
        let asks = routing.masters.iter().map(|master| {
            let client = master.pool.next().clone();
            let host = master.server.host.to_string();
            Box::pin(async move {
                let answer = tokio::time::timeout(timeout, cluster_slots(&client))
                    .await
                    .map_err(|_| Error::new(ErrorKind::Timeout, "CLUSTER SLOTS timed out"))??;
                ClusterRouting::from_cluster_slots(answer, host)
            })
        });
        if let Ok((table, _)) = futures_util::future::select_ok(asks).await {
            return Some(table);
        }
        for seed in &self.seeds {
            if let Ok(table) = ask_seed(&self.connector, seed).await {
                return Some(table);
            }
        }
        None
    }
}

/// Where a command is sent.
enum Target {
    /// The master of this slot.
    Slot(u16),
    /// This node, after `ASKING`.
    Asked(Server),
}

/// A redirection's kind.
#[derive(Debug, PartialEq, Eq)]
enum Redirection {
    Moved,
    Ask,
}

/// The redirection `error` is (`MOVED <slot> <host>:<port>` or `ASK …`), if it is one;
/// an empty host (or `?`) is the host of `answering`, the node that answered.
fn redirection(error: &Error, answering: &Server) -> Option<(Redirection, u16, Server)> {
    let mut words = error.details().split_whitespace();
    let kind = match words.next()? {
        "MOVED" => Redirection::Moved,
        "ASK" => Redirection::Ask,
        _ => return None,
    };
    let slot = words.next()?.parse().ok()?;
    let (host, port) = words.next()?.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = match host {
        "" | "?" => answering.host.to_string(),
        // fred reaches `host:port` as written: an IPv6 address keeps its brackets.
        host => host.to_owned(),
    };
    Some((kind, slot, Server::new(host, port)))
}

/// `ASKING` and then the command, together on one connection (the pipeline sends them
/// back to back), the command's answer.
async fn asked(client: &Client, command: &CustomCommand, args: Vec<Value>) -> Result<Value, Error> {
    let pipeline = client.pipeline();
    let asking = CustomCommand::new_static("ASKING", ClusterHash::Random, false);
    let () = pipeline.custom(asking, Vec::<Value>::new()).await?;
    let () = pipeline.custom(command.clone(), args).await?;
    let mut answers = pipeline.try_all::<Value>().await;
    answers.pop().unwrap_or_else(|| {
        Err(Error::new(
            ErrorKind::Unknown,
            "no answer to an asked command",
        ))
    })
}

async fn cluster_slots(client: &Client) -> Result<Value, Error> {
    let command = CustomCommand::new_static("CLUSTER", ClusterHash::Random, false);
    client.custom(command, vec!["SLOTS"]).await
}

/// `CLUSTER SLOTS` asked of `seed` over a connection made for it.
async fn ask_seed(connector: &Connector, seed: &Server) -> Result<ClusterRouting, Error> {
    let client = connector.probe(seed)?;
    let asked = async {
        client.init().await?;
        let answer = cluster_slots(&client).await?;
        ClusterRouting::from_cluster_slots(answer, seed.host.to_string())
    };
    let answer = tokio::time::timeout(connector.connect_timeout + connector.command_timeout, asked)
        .await
        .unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Timeout,
                format!("{seed} did not answer CLUSTER SLOTS in time"),
            ))
        });
    let _ = client.quit().await;
    answer
}

fn build_routing(table: &ClusterRouting, masters: Vec<Master>) -> Routing {
    let index: HashMap<&Server, u16> = masters
        .iter()
        .enumerate()
        .filter_map(|(index, master)| Some((&master.server, u16::try_from(index).ok()?)))
        .collect();
    let mut owners = vec![NO_MASTER; usize::from(SLOTS)];
    for range in table.slots() {
        let Some(owner) = index.get(&range.primary) else {
            continue;
        };
        for slot in range.start..=range.end.min(SLOTS - 1) {
            owners[usize::from(slot)] = *owner;
        }
    }
    Routing { masters, owners }
}

/// Reads the routing table every [`REFRESH_EVERY`], and soon after anyone asks
/// ([`Nodes::refresh_soon`]), at most once per [`REFRESH_GAP`], for as long as the
/// cluster lives.
pub(crate) fn start_refreshing(cluster: std::sync::Weak<Cluster>) -> JoinHandle<()> {
    let Some(wake) = cluster.upgrade().map(|cluster| Arc::clone(&cluster.wake)) else {
        return tokio::spawn(async {});
    };
    tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(REFRESH_EVERY, wake.notified()).await;
            let Some(cluster) = cluster.upgrade() else {
                return;
            };
            cluster.refresh().await;
            drop(cluster);
            tokio::time::sleep(REFRESH_GAP).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use fred::error::{Error, ErrorKind};

    use fred::types::config::Server;

    use super::{Redirection, redirection};

    #[test]
    fn redirections_are_read_and_other_errors_are_not() {
        let error = |details: &str| Error::new(ErrorKind::Cluster, details.to_owned());
        let answering = Server::new("10.0.0.9", 7001);
        let read = |details: &str| {
            redirection(&error(details), &answering)
                .map(|(kind, slot, server)| (kind, slot, server.host.to_string(), server.port))
        };
        assert_eq!(
            read("MOVED 3999 127.0.0.1:6381"),
            Some((Redirection::Moved, 3999, "127.0.0.1".into(), 6381))
        );
        assert_eq!(
            read("ASK 12 [::1]:7000"),
            Some((Redirection::Ask, 12, "[::1]".into(), 7000))
        );
        // An empty host: the node that answered, on the port given.
        assert_eq!(
            read("MOVED 5 :7002"),
            Some((Redirection::Moved, 5, "10.0.0.9".into(), 7002))
        );
        for other in [
            "CLUSTERDOWN The cluster is down",
            "MOVED x 127.0.0.1:1",
            "MOVED 1 nohost",
            "ASK",
        ] {
            assert!(redirection(&error(other), &answering).is_none(), "{other}");
        }
    }
}
