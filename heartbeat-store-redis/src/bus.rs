//! [`EventBus`] on Redis: each owner's newest events in a sorted set by id, published on
//! one channel that every instance's subscriber forwards to its local [`Fanout`].

use std::sync::Arc;

use fred::clients::SubscriberClient;
use fred::prelude::{EventInterface, PubsubInterface, SortedSetsInterface};
use heartbeat_core::jobs::{
    BusError, EventBus, EventId, EventStream, Fanout, Job, JobEvent, Owner,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::keys::Keys;
use heartbeat_core::kit::encode;

use crate::{RedisStore, decode, store_error};

/// Subscribes to the event channel and forwards every event to `live`; after a lost
/// connection (or a lag in the client's own buffer) tells every subscriber to replay.
pub(crate) async fn start_forwarding(
    subscriber: &SubscriberClient,
    keys: &Keys,
    live: &Arc<Fanout>,
) -> Result<Vec<JoinHandle<()>>, fred::error::Error> {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let resubscribe = subscriber.manage_subscriptions();
    subscriber.subscribe(keys.event_channel()).await?;
    let forward = {
        let live = Arc::clone(live);
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        let event = message
                            .value
                            .as_str()
                            .and_then(|json| serde_json::from_str::<JobEvent>(&json).ok());
                        match event {
                            Some(event) => live.deliver(event),
                            None => tracing::warn!("ignored an unreadable job event from Redis"),
                        }
                    }
                    Err(RecvError::Lagged(_)) => live.signal_gap(),
                    Err(RecvError::Closed) => return,
                }
            }
        })
    };
    let gaps = {
        let live = Arc::clone(live);
        tokio::spawn(async move {
            loop {
                match reconnects.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => live.signal_gap(),
                    Err(RecvError::Closed) => return,
                }
            }
        })
    };
    Ok(vec![forward, gaps, resubscribe])
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
        Ok(self.inner.live.subscribe(owner))
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
