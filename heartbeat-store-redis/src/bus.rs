//! [`EventBus`] on Redis: each owner's newest events in a sorted set by id, published on
//! one channel that every instance's subscriber forwards to its local [`Fanout`] (one
//! server), or on a sharded channel per hash slot that an instance listens on only while
//! its streams watch an owner there ([`ShardedChannels`], Redis Cluster). Session notices
//! (SPEC §3.7) travel the same way: on a second channel that every instance hears (one
//! server), or on the sharded notice channel of the user's slot (Redis Cluster).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fred::clients::SubscriberClient;
use fred::interfaces::ClusterInterface;
use fred::prelude::{EventInterface, PubsubInterface};
use fred::types::config::Server;
use heartbeat_core::StoreError;
use heartbeat_core::jobs::{EventBus, EventId, EventStream, Job, JobEvent, Owner};
use heartbeat_core::live::{BusError, Fanout, Routed};
use heartbeat_core::sessions::notice::SessionNotice;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::layout::{Layout, Topology, owner_slot};
use heartbeat_core::store::kit::encode;

use crate::{RedisStore, decode, store_error};

/// Where the subscriber hands what it receives: job events and session notices.
pub(crate) struct Live {
    pub(crate) events: Arc<Fanout<JobEvent>>,
    pub(crate) notices: Arc<Fanout<SessionNotice>>,
}

impl Live {
    fn signal_gap(&self) {
        self.events.signal_gap();
        self.notices.signal_gap();
    }
}

/// Reads a message of `kind` and hands it to `fanout`.
fn forward<T: Routed + DeserializeOwned>(fanout: &Fanout<T>, json: Option<&str>, kind: &str) {
    match json.and_then(|json| serde_json::from_str::<T>(json).ok()) {
        Some(item) => fanout.deliver(item),
        None => tracing::warn!("ignored an unreadable {kind} from Redis"),
    }
}

/// Subscribes to the event and notice channels and forwards every message to `live`;
/// after a lost connection (or a lag in the client's own buffer) tells every subscriber to
/// replay (or re-read).
pub(crate) async fn start_forwarding(
    subscriber: &SubscriberClient,
    keys: &Layout,
    live: Live,
) -> Result<Vec<JoinHandle<()>>, fred::error::Error> {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let resubscribe = subscriber.manage_subscriptions();
    let notice_channel = keys.notice_channel();
    let shared = keys.shared_channels();
    if !shared.is_empty() {
        subscriber.subscribe(shared).await?;
    }
    let live = Arc::new(live);
    let forwarding = {
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        let json = message.value.as_str();
                        if message.channel.starts_with(&*notice_channel) {
                            forward(&live.notices, json.as_deref(), "session notice");
                        } else {
                            forward(&live.events, json.as_deref(), "job event");
                        }
                    }
                    Err(RecvError::Lagged(_)) => live.signal_gap(),
                    Err(RecvError::Closed) => return,
                }
            }
        })
    };
    let gaps = tokio::spawn(async move {
        loop {
            match reconnects.recv().await {
                Ok(_) | Err(RecvError::Lagged(_)) => live.signal_gap(),
                Err(RecvError::Closed) => return,
            }
        }
    });
    Ok(vec![forwarding, gaps, resubscribe])
}

/// What a sharded channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Carries {
    /// The job events of owners in its slot.
    Events,
    /// The session notices of users in its slot.
    Notices,
}

impl Carries {
    fn channel(self, keys: &Layout, slot: u16) -> String {
        match self {
            Carries::Events => keys.slot_event_channel(slot),
            Carries::Notices => keys.slot_notice_channel(slot),
        }
    }
}

/// The sharded channels (one per hash slot and kind: job events of the owners, session
/// notices of the users this instance's streams watch) the subscriber listens on (Redis
/// Cluster): subscribed to when a stream of a new slot opens, left when nothing there is
/// watched any more, and subscribed to again when its slot moves to another master (a
/// resharding or a failover: Redis drops the subscription there, and the client does not
/// notice).
#[derive(Default)]
pub(crate) struct ShardedChannels {
    /// Each channel listened on, and the master that served its slot when subscribed.
    slots: tokio::sync::Mutex<BTreeMap<(Carries, u16), Option<Server>>>,
}

/// Times a sharded subscription is sent before [`ShardedChannels::join`] gives up.
const SUBSCRIBE_ATTEMPTS: u32 = 3;

/// The master serving `slot` as the subscriber's routing table has it.
fn serving(subscriber: &SubscriberClient, slot: u16) -> Option<Server> {
    subscriber
        .cached_cluster_state()
        .and_then(|routing| routing.get_server(slot).cloned())
}

impl ShardedChannels {
    /// Makes sure the subscriber listens on the channel of `slot` that `carries` (before
    /// the stream reads what was stored, so that nothing published in between is missed).
    async fn join(
        &self,
        subscriber: &SubscriberClient,
        keys: &Layout,
        carries: Carries,
        slot: u16,
    ) -> Result<(), fred::error::Error> {
        let mut slots = self.slots.lock().await;
        if let std::collections::btree_map::Entry::Vacant(entry) = slots.entry((carries, slot)) {
            // Subscribing twice is harmless (unlike a compare-and-set), so a subscription
            // whose answer was slow or lost is sent again, a few times.
            let channel = carries.channel(keys, slot);
            let mut attempt = 1;
            while let Err(error) = subscriber.ssubscribe(channel.clone()).await {
                if attempt == SUBSCRIBE_ATTEMPTS || !crate::is_transient(&error) {
                    return Err(error);
                }
                attempt += 1;
            }
            entry.insert(serving(subscriber, slot));
        }
        Ok(())
    }

    /// Leaves the channels of slots where nothing is watched any more, and subscribes
    /// again to those whose slot another master serves now; if any moved, the streams are
    /// told to replay (or re-read) what they may have missed meanwhile.
    async fn tend(
        &self,
        subscriber: &SubscriberClient,
        nodes: &crate::nodes::Nodes,
        keys: &Layout,
        live: &Live,
    ) {
        let mut slots = self.slots.lock().await;
        let watched: BTreeSet<(Carries, u16)> = live
            .events
            .watched()
            .iter()
            .map(|owner| (Carries::Events, owner_slot(owner)))
            .chain(
                live.notices
                    .watched()
                    .iter()
                    .map(|(user, _)| (Carries::Notices, keys.user_slot(user))),
            )
            .collect();
        let unwatched: Vec<(Carries, u16)> = slots
            .keys()
            .filter(|channel| !watched.contains(channel))
            .copied()
            .collect();
        // One command per slot: a cluster refuses channels of several slots in one.
        for (carries, slot) in unwatched {
            if subscriber
                .sunsubscribe(carries.channel(keys, slot))
                .await
                .is_ok()
            {
                slots.remove(&(carries, slot));
            }
        }
        if slots.is_empty() {
            return;
        }
        // Not holding the slots meanwhile: during a failover this waits as long as it,
        // and a stream opening must not.
        drop(slots);
        if subscriber.sync_cluster().await.is_err() {
            return;
        }
        let mut slots = self.slots.lock().await;
        let mut moved = false;
        for ((carries, slot), server) in slots.iter_mut() {
            let now = serving(subscriber, *slot);
            if now != *server
                && subscriber
                    .ssubscribe(carries.channel(keys, *slot))
                    .await
                    .is_ok()
            {
                *server = now;
                moved = true;
            }
        }
        if moved {
            // The replays go to the slots' new masters: the routing is read first (a
            // command sent to the old one would be redirected, one round trip more).
            nodes.refresh().await;
            live.signal_gap();
        }
    }
}

/// How often an instance tends its sharded channels ([`ShardedChannels::tend`]): a
/// moved slot's events reach its streams (by a replay) at most about this long after the
/// move.
const TEND_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Tends the sharded channels every [`TEND_EVERY`], for as long as the store lives.
pub(crate) fn start_tending(store: std::sync::Weak<crate::Inner>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(TEND_EVERY);
        loop {
            ticks.tick().await;
            let Some(inner) = store.upgrade() else { return };
            inner
                .sharded
                .tend(&inner.subscriber, &inner.nodes, &inner.layout, &inner.live)
                .await;
        }
    })
}

impl RedisStore {
    /// Listens on the sharded channel of `slot` that `carries`, on a cluster (on one
    /// server every instance hears the one channel of each kind already).
    pub(crate) async fn listen(&self, carries: Carries, slot: u16) -> Result<(), StoreError> {
        match self.inner.layout.topology() {
            Topology::Cluster => self
                .inner
                .sharded
                .join(&self.inner.subscriber, &self.inner.layout, carries, slot)
                .await
                .map_err(|error| store_error("subscribe", error)),
            Topology::OneServer => Ok(()),
        }
    }
}

impl EventBus for RedisStore {
    async fn publish(&self, job: &Job) -> Result<JobEvent, BusError> {
        let keys = &self.inner.layout;
        let (channel, publish) = keys.event_route(&job.owner);
        let args = vec![
            channel,
            encode(job)?,
            self.inner.event_history.to_string(),
            self.inner.job_retention_millis.to_string(),
            EventId::floor_now().to_string(),
            publish.to_owned(),
        ];
        let id: u64 = self
            .eval(
                "event publish",
                &self.inner.scripts.publish_event,
                vec![
                    keys.event_counter(&job.owner),
                    keys.owner_events(&job.owner),
                ],
                args,
            )
            .await?;
        Ok(JobEvent {
            id: EventId(id),
            job: job.clone(),
        })
    }

    async fn subscribe(&self, owner: &Owner) -> Result<EventStream, BusError> {
        let stream = self.inner.live.events.subscribe(owner);
        self.listen(Carries::Events, owner_slot(owner)).await?;
        Ok(stream)
    }

    async fn replay(
        &self,
        owner: &Owner,
        after: Option<EventId>,
    ) -> Result<Vec<JobEvent>, BusError> {
        let min = after.map_or_else(|| "-inf".to_owned(), |after| format!("({}", after.0));
        let layout = &self.inner.layout;
        let read = |key: String| {
            let min = min.clone();
            async move {
                self.run::<Vec<String>>(
                    "event replay",
                    &key,
                    "ZRANGEBYSCORE",
                    vec![key.as_str().into(), min.into(), "+inf".into()],
                )
                .await
            }
        };
        let decode_all = |stored: &[String]| {
            stored
                .iter()
                .map(|json| decode("a job event", json))
                .collect::<Result<Vec<JobEvent>, _>>()
        };
        let Some(earlier) = layout.earlier_owner_events(owner) else {
            return Ok(decode_all(&read(layout.owner_events(owner)).await?)?);
        };
        // Layout version 1: events an earlier build kept under the `{hb_events}` tag are
        // merged in by id.
        let (tagged, untagged) =
            futures_util::try_join!(read(layout.owner_events(owner)), read(earlier))?;
        let mut events = decode_all(&tagged)?;
        if !untagged.is_empty() {
            events.extend(decode_all(&untagged)?);
            events.sort_by_key(|event| event.id);
            events.dedup_by_key(|event| event.id);
        }
        Ok(events)
    }
}
