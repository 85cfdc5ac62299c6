//! Reading an index kept in a part per hash slot (Redis Cluster): one script per node over
//! the parts it serves, the nodes' answers merged.

use fred::types::FromValue;
use fred::types::scripts::Script;
use heartbeat_core::StoreError;

use crate::keys::slot_of;
use crate::{RedisStore, store_error};

/// Parts one script call reads: each costs the node about a microsecond, and a script
/// blocks its node, so a call stays around a millisecond.
const PARTS_PER_CALL: usize = 1024;

impl RedisStore {
    /// The first `limit` entries strictly between `after` and `before` over the parts
    /// `part` names for every slot and `one_key` (the one-key index earlier builds wrote on
    /// a cluster too, read until it expires), in byte order.
    pub(crate) async fn merged_range(
        &self,
        what: &str,
        (after, before): (&str, &str),
        limit: usize,
        part: impl Fn(u16) -> String,
        one_key: String,
    ) -> Result<Vec<String>, StoreError> {
        let head = vec![format!("({after}"), format!("({before}"), limit.to_string()];
        let answers: Vec<Vec<String>> = self
            .on_every_node(what, &self.inner.scripts.merge_range, head, part, one_key)
            .await?;
        // Each call's answer is in order; the first `limit` of all of them is the range.
        let mut entries: Vec<String> = answers.into_iter().flatten().collect();
        entries.sort_unstable();
        entries.truncate(limit);
        Ok(entries)
    }

    /// Runs a read script on every node with `head` and then the parts (`part(slot)`) the
    /// node serves, plus `one_key` on the node that serves it, as its arguments, at most
    /// [`PARTS_PER_CALL`] parts a call. Their answers, one per call.
    pub(crate) async fn on_every_node<R: FromValue>(
        &self,
        what: &str,
        script: &Script,
        head: Vec<String>,
        part: impl Fn(u16) -> String,
        one_key: String,
    ) -> Result<Vec<R>, StoreError> {
        let nodes = &self.inner.nodes;
        // Each master's parts, and a slot it serves to route them by. The one-key index
        // goes with the master serving its slot.
        let one_key_slot = slot_of(one_key.as_bytes());
        let mut one_key = Some(one_key);
        let by_node = nodes.masters().into_iter().map(|(_, slots)| {
            let mut parts: Vec<String> = slots.iter().map(|slot| part(*slot)).collect();
            if slots.binary_search(&one_key_slot).is_ok() {
                parts.extend(one_key.take());
            }
            (slots[0], parts)
        });
        // A node's parts in calls of at most `PARTS_PER_CALL`: a script blocks its node,
        // and each part is a command in it.
        let calls: Vec<(u16, Vec<String>)> = by_node
            .flat_map(|(slot, parts)| {
                parts
                    .chunks(PARTS_PER_CALL)
                    .map(|chunk| (slot, head.iter().chain(chunk).cloned().collect::<Vec<_>>()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let answers = futures_util::future::join_all(
            calls
                .into_iter()
                .map(|(slot, args)| nodes.eval_at(slot, script, args)),
        )
        .await;
        answers
            .into_iter()
            .map(|answer| answer.map_err(|error| store_error(what, error)))
            .collect()
    }
}
