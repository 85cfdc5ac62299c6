//! Who keeps playing under the limits (SPEC §3.2): ranking, the limits, displacement.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::RejectStrategy;
use crate::sessions::UserSessions;

/// Counted sessions (active, `hit_counter >= checking_threshold`) in the order in which they keep
/// playing: by `started_at` ascending for `MOST_RECENT` (the oldest keep playing), descending
/// for `LEAST_RECENT` (the newest keep playing); ties by session id.
pub fn ranking<'a>(active: &'a UserSessions, token: &HeartbeatData) -> Vec<&'a str> {
    ranked(active, token)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// [`ranking`], each id with its record.
fn ranked<'a>(
    active: &'a UserSessions,
    token: &HeartbeatData,
) -> Vec<(&'a str, &'a SessionRecord)> {
    let threshold = u64::from(token.threshold());
    let mut counted: Vec<(&str, &SessionRecord)> = active
        .sessions
        .iter()
        .filter(|(_, record)| record.is_active() && record.hit_counter >= threshold)
        .map(|(id, record)| (id.as_str(), record))
        .collect();
    match token.strategy() {
        RejectStrategy::MostRecent => counted.sort_by_key(|(id, record)| (record.order_key(), *id)),
        RejectStrategy::LeastRecent => {
            counted.sort_by_key(|(id, record)| Reverse((record.order_key(), *id)))
        }
    }
    counted
}

/// Where each counted session stands under the token's limits (SPEC §3.2, §3.8), in
/// [`ranking`] order: `None` when it keeps playing, or the limit that refuses it.
///
/// The sessions are taken in turn, and one keeps playing when the sessions kept before it
/// leave room under every limit that applies to it: `session_limit`, its
/// `device_family`'s entry in `family_limits`, and `asset_limit` among sessions of the
/// same asset. A refused session takes no room, so among the sessions that keep playing no
/// limit is ever exceeded. With `session_limit` alone this is "refused at rank `>=
/// session_limit`", as in the Node server. When several limits are full, the reason is
/// the narrowest: `family_limit`, then `asset_limit`, then `over_limit` (ending one of
/// the user's other streams would not help a TV whose family is full).
pub fn standings<'a>(
    active: &'a UserSessions,
    token: &HeartbeatData,
) -> Vec<(&'a str, Option<RejectReason>)> {
    let mut kept = 0u32;
    let mut per_family: BTreeMap<&str, u32> = BTreeMap::new();
    let mut per_asset: BTreeMap<&Id, u32> = BTreeMap::new();
    ranked(active, token)
        .into_iter()
        .enumerate()
        .map(|(position, (id, record))| {
            let family = record.device_family.as_deref().and_then(|family| {
                let limit = token.family_limits.as_ref()?.get(family)?;
                Some((family, *limit))
            });
            let asset = record.asset_id.as_ref().zip(token.asset_limit);
            let full = |used: Option<&u32>, limit: u32| used.copied().unwrap_or(0) >= limit;
            let refusal = if let Some((_, limit)) =
                family.filter(|(family, limit)| full(per_family.get(family), *limit))
            {
                Some(RejectReason::FamilyLimit { limit })
            } else if let Some((_, limit)) =
                asset.filter(|(asset, limit)| full(per_asset.get(asset), *limit))
            {
                Some(RejectReason::AssetLimit { limit })
            } else if let Some(limit) = token.session_limit.filter(|limit| kept >= *limit) {
                Some(RejectReason::OverLimit { position, limit })
            } else {
                kept += 1;
                if let Some((family, _)) = family {
                    *per_family.entry(family).or_default() += 1;
                }
                if let Some((asset, _)) = asset {
                    *per_asset.entry(asset).or_default() += 1;
                }
                None
            };
            (id, refusal)
        })
        .collect()
}

/// The counted sessions that keep playing under the token's limits, in [`ranking`] order:
/// what a refusal shows (SPEC §3.7).
pub fn playing(active: &UserSessions, token: &HeartbeatData) -> Vec<PlayingSession> {
    standings(active, token)
        .into_iter()
        .filter(|(_, refusal)| refusal.is_none())
        .filter_map(|(id, _)| Some(PlayingSession::of(id, active.sessions.get(id)?)))
        .collect()
}

/// The limit check of SPEC §3.2 and §3.8, on sessions already expired; records of sessions
/// ended by someone else do not count. `starts_session` says whether the heartbeat would
/// start a new session: `sessions_edge` counts it, so at most `sessions_edge` sessions are
/// ever active.
pub fn check_limit(
    active: &UserSessions,
    token: &HeartbeatData,
    starts_session: bool,
) -> Result<(), RejectReason> {
    check_session_limit(active, token, token.session_id.as_deref(), starts_session)
}

/// [`check_limit`] for the session `session_id` (none: a session that is not ranked yet,
/// checked against `sessions_edge` only).
pub(super) fn check_session_limit(
    active: &UserSessions,
    token: &HeartbeatData,
    session_id: Option<&str>,
    starts_session: bool,
) -> Result<(), RejectReason> {
    let count = active
        .sessions
        .values()
        .filter(|record| record.is_active())
        .count()
        + usize::from(starts_session);
    if let Some(edge) = token.sessions_edge
        && count > edge as usize
    {
        return Err(RejectReason::SessionsEdge {
            active: count,
            edge,
        });
    }
    let Some(session_id) = session_id else {
        return Ok(());
    };
    match standings(active, token)
        .into_iter()
        .find(|(id, _)| *id == session_id)
    {
        Some((_, Some(refusal))) => Err(refusal),
        _ => Ok(()),
    }
}

/// The sessions the accepted write of session `by` displaces (SPEC §3.7): those other than
/// `by` that kept playing under the token's limits in `before` and, still active in
/// `after`, are refused there. Under `LEAST_RECENT` these are the oldest devices a newer
/// one pushed out; under either strategy, a session that became counted can push out one
/// ranked after it. (`by` itself is refused at its next heartbeat if the write put it over
/// a limit, as a record of the Node server without `asset_id` can be.)
pub fn displaced(
    before: &UserSessions,
    after: &UserSessions,
    token: &HeartbeatData,
    by: &str,
) -> Vec<String> {
    let kept_before: BTreeSet<&str> = standings(before, token)
        .into_iter()
        .filter(|(_, refusal)| refusal.is_none())
        .map(|(id, _)| id)
        .collect();
    standings(after, token)
        .into_iter()
        .filter(|(id, refusal)| refusal.is_some() && *id != by && kept_before.contains(id))
        .map(|(id, _)| id.to_owned())
        .collect()
}
