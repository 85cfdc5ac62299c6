//! [`EventBus`] on Redis: each owner's newest events in a sorted set by id, published on
//! one channel that every instance's subscriber forwards to its local [`Fanout`]. Session
//! notices (SPEC §3.7) travel the same way on a second channel.

use std::sync::Arc;

use fred::clients::SubscriberClient;
use fred::prelude::{EventInterface, PubsubInterface, SortedSetsInterface};
use heartbeat_core::jobs::{EventBus, EventId, EventStream, Job, JobEvent, Owner};
use heartbeat_core::live::{BusError, Fanout, Routed};
use heartbeat_core::sessions::notice::SessionNotice;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::keys::Keys;
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
    keys: &Keys,
    live: Live,
) -> Result<Vec<JoinHandle<()>>, fred::error::Error> {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let resubscribe = subscriber.manage_subscriptions();
    let notice_channel = keys.notice_channel();
    subscriber
        .subscribe(vec![keys.event_channel(), notice_channel.clone()])
        .await?;
    let live = Arc::new(live);
    let forwarding = {
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        let json = message.value.as_str();
                        if *message.channel == *notice_channel {
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

impl EventBus for RedisStore {
    async fn publish(&self, job: &Job) -> Result<JobEvent, BusError> {
        let keys = &self.inner.keys;
        let args = vec![
            keys.event_channel(),
            encode(job)?,
            self.inner.event_history.to_string(),
            self.inner.job_retention_millis.to_string(),
            EventId::floor_now().to_string(),
        ];
        let id: u64 = self
            .eval(
                "event publish",
                &self.inner.scripts.publish_event,
                vec![keys.event_counter(), keys.owner_events(&job.owner)],
                args,
            )
            .await?;
        Ok(JobEvent {
            id: EventId(id),
            job: job.clone(),
        })
    }

    async fn subscribe(&self, owner: &Owner) -> Result<EventStream, BusError> {
        Ok(self.inner.live.events.subscribe(owner))
    }

    async fn replay(
        &self,
        owner: &Owner,
        after: Option<EventId>,
    ) -> Result<Vec<JobEvent>, BusError> {
        let min = after.map_or_else(|| "-inf".to_owned(), |after| format!("({}", after.0));
        let events: Vec<String> = self
            .client()
            .zrangebyscore(
                self.inner.keys.owner_events(owner),
                min,
                "+inf",
                false,
                None,
            )
            .await
            .map_err(|error| store_error("event replay", error))?;
        Ok(events
            .iter()
            .map(|json| decode("a job event", json))
            .collect::<Result<_, _>>()?)
    }
}
