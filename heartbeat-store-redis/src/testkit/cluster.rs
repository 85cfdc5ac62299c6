//! A throwaway Redis Cluster: three masters, three replicas, on loopback.

use std::time::Duration;

use super::guarded::{Guarded, ScratchDir, data_node, info_field, redis_cli, wait_for};

/// How long a node may be unreachable before the others mark it failed and its replica
/// takes over (`cluster-node-timeout`, milliseconds).
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 2_000;

/// How long forming the cluster (or a failover) may take before the testkit gives up.
const FORM_WAIT: Duration = Duration::from_secs(60);

/// Three masters and three replicas (`redis-cli --cluster create … --cluster-replicas 1`,
/// `cluster-require-full-coverage no`) on free loopback ports, each node with its own directory and `nodes.conf`. Every node
/// is killed, and the directory removed, when this is dropped, and also when the test
/// process ends without dropping it (a cluster shared through a `static`).
///
/// ```no_run
/// use heartbeat_store_redis::testkit::RedisCluster;
///
/// let cluster = RedisCluster::start();
/// println!("test cluster at {}", cluster.url()); // redis-cluster://127.0.0.1:…
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Guarded>,
    dir: ScratchDir,
}

impl RedisCluster {
    /// Starts six nodes, joins them into a cluster and waits until every node reports
    /// `cluster_state:ok` and every replica is in sync with its master.
    ///
    /// # Panics
    ///
    /// When `redis-server` or `redis-cli` is missing, or the cluster does not form within
    /// a minute.
    pub fn start() -> Self {
        let dir = ScratchDir::new("redis-cluster");
        let nodes: Vec<Guarded> = (0..6)
            .map(|_| {
                Guarded::start_on_free_ports(&dir, 2, |ports, _| {
                    data_node(
                        ports[0],
                        &[
                            "--cluster-enabled",
                            "yes",
                            "--cluster-port",
                            &ports[1].to_string(),
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            &CLUSTER_NODE_TIMEOUT_MS.to_string(),
                            // As docs/scaling.md asks of a production cluster: the
                            // masters that are up keep serving their slots while one
                            // fails over (by default every node answers CLUSTERDOWN
                            // until each slot has a master again).
                            "--cluster-require-full-coverage",
                            "no",
                        ],
                    )
                })
            })
            .collect();
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(
            nodes
                .iter()
                .map(|node| format!("127.0.0.1:{}", node.port())),
        );
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        let output = redis_cli(nodes[0].port(), &create);
        assert!(
            output.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed:\n{output}"
        );
        let cluster = Self { nodes, dir };
        cluster
            .wait_until_healthy()
            .unwrap_or_else(|| panic!("the cluster did not form within {FORM_WAIT:?}"));
        cluster
    }

    /// `redis-cluster://127.0.0.1:<port>?node=127.0.0.1:<port>&…`, naming every node.
    pub fn url(&self) -> String {
        let mut nodes = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()));
        let first = nodes.next().unwrap_or_default();
        let rest: Vec<String> = nodes.map(|node| format!("node={node}")).collect();
        format!("redis-cluster://{first}?{}", rest.join("&"))
    }

    /// The ports of every node, dead or alive.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(Guarded::port).collect()
    }

    /// The directory holding each node's `nodes.conf` and `redis.log`.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The port of the master currently serving `key`'s hash slot.
    ///
    /// # Panics
    ///
    /// When no live node answers, or no master serves the slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.any_live_port();
        let slot: u16 = redis_cli(port, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        let nodes = redis_cli(port, &["cluster", "nodes"]);
        masters(&nodes)
            .find(|master| master.serves(slot))
            .map(|master| master.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}:\n{nodes}"))
    }

    /// Moves the hash slot of `key` to another master, with its keys, as a resharding
    /// does (`CLUSTER SETSLOT … IMPORTING/MIGRATING`, `MIGRATE`, `SETSLOT … NODE`): the
    /// port of the master that serves it now.
    ///
    /// # Panics
    ///
    /// When a node refuses a step.
    pub fn move_slot_of(&self, key: &str) -> u16 {
        let port = self.any_live_port();
        let slot = redis_cli(port, &["cluster", "keyslot", key])
            .trim()
            .to_owned();
        let from = self.master_of(key);
        let nodes = redis_cli(port, &["cluster", "nodes"]);
        let to = masters(&nodes)
            .map(|master| master.port)
            .find(|master| *master != from)
            .expect("another master");
        let id = |port: u16| redis_cli(port, &["cluster", "myid"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        let step = |port: u16, args: &[&str]| {
            let answer = redis_cli(port, args);
            assert!(
                answer.trim() == "OK" || answer.trim() == "NOKEY",
                "{args:?}: {answer}"
            );
        };
        step(to, &["cluster", "setslot", &slot, "importing", &from_id]);
        step(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
        loop {
            let keys = redis_cli(from, &["cluster", "getkeysinslot", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|key| !key.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to = to.to_string();
            let mut args = vec!["migrate", "127.0.0.1", &to, "", "0", "5000", "keys"];
            args.extend(keys);
            step(from, &args);
        }
        for master in masters(&nodes).map(|master| master.port) {
            step(master, &["cluster", "setslot", &slot, "node", &to_id]);
        }
        to
    }

    /// Kills the node on `port` with `kill -9`, as a crashed machine would. Its replica
    /// takes over after [`CLUSTER_NODE_TIMEOUT_MS`] and an election.
    ///
    /// # Panics
    ///
    /// When no node of this cluster has that port.
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|node| node.port() == port)
            .unwrap_or_else(|| panic!("no node of this cluster listens on {port}"))
            .kill();
    }

    /// Waits until every live node reports `cluster_state:ok`, a live master serves
    /// every slot and each live replica is in sync with it: how long that took, or
    /// `None` after a minute.
    pub fn wait_until_healthy(&self) -> Option<Duration> {
        wait_for(FORM_WAIT, || self.healthy())
    }

    fn healthy(&self) -> bool {
        let live: Vec<u16> = self
            .nodes
            .iter()
            .filter(|node| node.alive())
            .map(Guarded::port)
            .collect();
        let all_ok = live.iter().all(|port| {
            info_field(&redis_cli(*port, &["cluster", "info"]), "cluster_state") == Some("ok")
        });
        if !all_ok {
            return false;
        }
        let nodes = redis_cli(live[0], &["cluster", "nodes"]);
        let served: usize = masters(&nodes)
            .filter(|master| live.contains(&master.port))
            .map(|master| master.slot_count())
            .sum();
        served == 16_384
            && live.iter().all(|port| {
                let replication = redis_cli(*port, &["info", "replication"]);
                info_field(&replication, "role") == Some("master")
                    || info_field(&replication, "master_link_status") == Some("up")
            })
    }

    fn any_live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|node| node.alive())
            .map(Guarded::port)
            .expect("a live node")
    }
}

/// A master line of `CLUSTER NODES`.
struct Master<'a> {
    port: u16,
    slots: Vec<&'a str>,
}

impl Master<'_> {
    fn ranges(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.slots.iter().filter_map(|range| {
            let (start, end) = range.split_once('-').unwrap_or((range, range));
            Some((start.parse().ok()?, end.parse().ok()?))
        })
    }

    fn serves(&self, slot: u16) -> bool {
        self.ranges()
            .any(|(start, end)| (start..=end).contains(&slot))
    }

    fn slot_count(&self) -> usize {
        self.ranges()
            .map(|(start, end)| usize::from(end - start) + 1)
            .sum()
    }
}

/// Masters not marked failed, from `CLUSTER NODES`
/// (`<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`).
fn masters(nodes: &str) -> impl Iterator<Item = Master<'_>> {
    nodes.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.contains("master") || flags.contains("fail") {
            return None;
        }
        let address = fields.get(1)?.split('@').next()?;
        let port = address.rsplit_once(':')?.1.parse().ok()?;
        Some(Master {
            port,
            slots: fields.get(8..).unwrap_or_default().to_vec(),
        })
    })
}
