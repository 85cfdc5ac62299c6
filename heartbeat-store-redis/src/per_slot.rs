//! Reading an index kept in a part per hash slot (Redis Cluster): one script per node over
//! the parts it serves, the nodes' answers merged.

use std::collections::BTreeMap;

use fred::prelude::ClientLike;
use fred::types::config::Server;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, FromValue};
use heartbeat_core::StoreError;

use crate::keys::{SLOTS, slot_of};
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
        use fred::interfaces::ClusterInterface;
        let client = self.client();
        // Each node's parts, and a slot it serves for the client to route them by.
        let mut by_node: BTreeMap<Option<Server>, (u16, Vec<String>)> = BTreeMap::new();
        match client.cached_cluster_state() {
            // One server (behind a proxy that routes by slot, say): it serves every slot.
            None => {
                let mut parts: Vec<String> = (0..SLOTS).map(&part).collect();
                parts.push(one_key);
                by_node.insert(None, (0, parts));
            }
            Some(routing) => {
                for range in routing.slots() {
                    by_node
                        .entry(Some(range.primary.clone()))
                        .or_insert_with(|| (range.start, Vec::new()))
                        .1
                        .extend((range.start..=range.end).map(&part));
                }
                let server = routing.get_server(slot_of(one_key.as_bytes())).cloned();
                if let Some((_, args)) = by_node.get_mut(&server) {
                    args.push(one_key);
                }
            }
        }
        // A node's parts in calls of at most `PARTS_PER_CALL`: a script blocks its node,
        // and each part is a command in it.
        let calls = by_node.into_values().flat_map(|(slot, parts)| {
            parts
                .chunks(PARTS_PER_CALL)
                .map(|chunk| (slot, head.iter().chain(chunk).cloned().collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        });
        let answers = futures_util::future::join_all(calls.map(|(slot, args)| {
            // EVALSHA with no declared keys, routed to the node serving `slot`.
            let evalsha = CustomCommand::new_static("EVALSHA", ClusterHash::Custom(slot), false);
            let mut command = vec![script.sha1().to_string(), "0".to_owned()];
            command.extend(args);
            async move {
                match client.custom(evalsha.clone(), command.clone()).await {
                    Err(error) if error.details().starts_with("NOSCRIPT") => {
                        script.load(client).await?;
                        client.custom(evalsha, command).await
                    }
                    answer => answer,
                }
            }
        }))
        .await;
        answers
            .into_iter()
            .map(|answer| answer.map_err(|error| store_error(what, error)))
            .collect()
    }
}
