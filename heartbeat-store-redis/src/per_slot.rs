//! Reading an index kept in a part per hash slot (Redis Cluster): one script per node over
//! the parts it serves, the nodes' answers merged.

use fred::types::FromValue;
use fred::types::scripts::Script;
use heartbeat_core::StoreError;

use crate::layout::slot_of;
use crate::{RedisStore, store_error};

/// Parts one script call reads: each costs the node about a microsecond, and a script
/// blocks its node, so a call stays around a millisecond.
const PARTS_PER_CALL: usize = 1024;

impl RedisStore {
    /// The first `limit` entries strictly between `after` and `before` over the parts
    /// `part` names for every slot and `earlier` (the one-key index earlier builds wrote
    /// on a cluster too, while the layout is version 1), in byte order, each once.
    pub(crate) async fn merged_range(
        &self,
        what: &str,
        (after, before): (&str, &str),
        limit: usize,
        part: impl Fn(u16) -> String,
        earlier: Option<String>,
    ) -> Result<Vec<String>, StoreError> {
        let head = vec![format!("({after}"), format!("({before}"), limit.to_string()];
        let answers: Vec<Vec<String>> = self
            .on_every_node(what, &self.inner.scripts.merge_range, head, part, earlier)
            .await?;
        // Each call's answer is in order; the first `limit` of all of them is the range.
        let mut entries: Vec<String> = answers.into_iter().flatten().collect();
        entries.sort_unstable();
        // An entry the migration is moving is in two keys for a moment.
        entries.dedup();
        entries.truncate(limit);
        Ok(entries)
    }

    /// Runs a read script on every node with `head` and then the parts (`part(slot)`) the
    /// node serves, plus `earlier` on the node that serves it, as its arguments, at most
    /// [`PARTS_PER_CALL`] parts a call. Their answers, one per call.
    pub(crate) async fn on_every_node<R: FromValue>(
        &self,
        what: &str,
        script: &Script,
        head: Vec<String>,
        part: impl Fn(u16) -> String,
        earlier: Option<String>,
    ) -> Result<Vec<R>, StoreError> {
        let masters = self
            .inner
            .nodes
            .masters()
            .map_err(|error| store_error(what, error))?;
        // Each master's parts (the earlier one-key index with the master serving its
        // slot), read through that master's client: no routing in between, so each call
        // reads the parts of the node it runs on.
        let earlier_slot = earlier.as_ref().map(|key| slot_of(key.as_bytes()));
        let mut earlier = earlier;
        let mut calls: Vec<(fred::clients::Client, Vec<String>)> = Vec::new();
        for (client, slots) in masters {
            let mut parts: Vec<String> = slots.iter().map(|slot| part(*slot)).collect();
            if earlier_slot.is_some_and(|slot| slots.binary_search(&slot).is_ok()) {
                parts.extend(earlier.take());
            }
            // At most `PARTS_PER_CALL` a call: a script blocks its node, and each part is
            // a command in it.
            for chunk in parts.chunks(PARTS_PER_CALL) {
                calls.push((client.clone(), head.iter().chain(chunk).cloned().collect()));
            }
        }
        let answers =
            futures_util::future::join_all(calls.into_iter().map(|(client, args)| async move {
                script
                    .evalsha_with_reload::<R, _, _>(&client, Vec::<String>::new(), args)
                    .await
            }))
            .await;
        answers
            .into_iter()
            .map(|answer| answer.map_err(|error| store_error(what, error)))
            .collect()
    }
}
