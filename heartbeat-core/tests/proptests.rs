//! Property tests: codec round trips and the invariants of the decision rules.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use heartbeat_core::EndReason;
use heartbeat_core::sessions::NewSessionCause;
use heartbeat_core::sessions::rules::{
    PlaybackPolicy, decide, displaced, expire, ranking, standings, take_over,
};
use heartbeat_core::sessions::{RejectReason, Verdict};
use heartbeat_core::{
    HeartbeatData, Id, JsonDataError, Provenance, RejectStrategy, Seconds, SessionRecord,
    Timestamp, TokenCodec, TokenFormat, UserSessions,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn policy() -> PlaybackPolicy {
    PlaybackPolicy::default()
}

fn id() -> impl Strategy<Value = Id> {
    prop_oneof![
        any::<i64>().prop_map(Id::Int),
        "[a-zA-Z0-9äö🎬/:_-]{1,40}".prop_map(Id::Str)
    ]
}

fn seconds(max: f64) -> impl Strategy<Value = Seconds> {
    (0u32..100_000).prop_map(move |n| Seconds::new(f64::from(n) / 100_000.0 * max).unwrap())
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (-62_167_219_200_000i64..253_402_300_799_999)
        .prop_map(|ms| Timestamp::from_unix_millis(ms).unwrap())
}

fn extra() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(
        "x_[a-z]{1,8}",
        prop_oneof![
            any::<i32>().prop_map(Value::from),
            ".{0,20}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ],
        0..4,
    )
    .prop_map(|map| map.into_iter().collect())
}

prop_compose! {
    fn heartbeat_data()(
        user_id in id(), asset_id in id(),
        session_id in proptest::option::of("[a-f0-9-]{1,36}"),
        cycle in seconds(3600.0).prop_filter("positive", |s| s.get() > 0.0),
        lower in seconds(10.0), upper in seconds(60.0),
        strategy in proptest::option::of(prop_oneof![Just(RejectStrategy::LeastRecent), Just(RejectStrategy::MostRecent)]),
        timestamp in proptest::option::of(timestamp()), started_at in proptest::option::of(timestamp()),
        session_limit in proptest::option::of(any::<u32>()),
        checking_threshold in proptest::option::of(any::<u32>()),
        sessions_edge in proptest::option::of(any::<u32>()),
        device in proptest::option::of("[a-zA-Z0-9 éü📺-]{1,64}"),
        device_family in proptest::option::of("[a-z]{1,32}"),
        family_limits in proptest::option::of(proptest::collection::btree_map("[a-z]{1,32}", any::<u32>(), 0..5)),
        asset_limit in proptest::option::of(any::<u32>()),
        enforce in proptest::option::of(any::<bool>()),
        legacy_begun in any::<bool>(),
        extra in extra(),
    ) -> HeartbeatData {
        let provenance = if legacy_begun { Provenance::Legacy } else { Provenance::Authenticated };
        HeartbeatData {
            user_id, asset_id, session_id, heartbeat_cycle: cycle, cycle_lower_tolerance: lower,
            cycle_upper_tolerance: upper, reject_strategy: strategy, timestamp, started_at,
            session_limit, checking_threshold, sessions_edge, device, device_family, family_limits,
            asset_limit, enforce, provenance, extra,
        }
    }
}

proptest! {
    #[test]
    fn tokens_round_trip_in_every_format(
        data in heartbeat_data(),
        format in prop_oneof![
            Just(TokenFormat::Legacy), Just(TokenFormat::Sealed),
            Just(TokenFormat::Backend), Just(TokenFormat::Compact),
        ],
    ) {
        let codec = TokenCodec::new("proptest key").unwrap().issuing(format);
        let token = codec.seal(&data).unwrap();
        // A legacy token's data are legacy-begun whatever they say (SPEC §3.3).
        let legacy = format == TokenFormat::Legacy;
        let expected = if legacy { HeartbeatData { provenance: Provenance::Legacy, ..data } } else { data };
        prop_assert_eq!(codec.open(&token).unwrap(), expected);
    }

    /// A compact payload holds nothing JSON data could not: whatever bytes read as one
    /// (a valid payload with bytes changed, or any bytes) are data the JSON rules accept,
    /// unchanged through JSON.
    #[test]
    fn compact_payloads_hold_only_what_json_accepts(
        data in heartbeat_data(),
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut payload = data.to_compact_vec();
        prop_assert_eq!(HeartbeatData::from_compact_slice(&payload).unwrap(), data);
        for (at, byte) in changes {
            let at = at.index(payload.len());
            payload[at] = byte;
        }
        for bytes in [payload, noise] {
            if let Ok(read) = HeartbeatData::from_compact_slice(&bytes) {
                prop_assert_eq!(HeartbeatData::from_json_slice(&read.to_json_vec()).unwrap(), read);
            }
        }
    }

    #[test]
    fn the_direct_json_writer_writes_serde_jsons_bytes(
        data in heartbeat_data(),
        odd_key in "[a-z\"\\\\\n\u{1}é]{1,6}",
        odd_value in prop_oneof![
            ".{0,12}".prop_map(Value::from),
            any::<f64>().prop_filter("finite", |n| n.is_finite()).prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            Just(serde_json::json!({"a": [1, "b\"", null, 2.5], "z": {}})),
        ],
        shadowed in proptest::sample::select(vec!["user_id", "device", "session_id", "timestamp", "zzz", ""]),
    ) {
        let mut data = data;
        data.extra.insert(odd_key, odd_value.clone());
        data.extra.insert(shadowed.to_owned(), odd_value);
        if let Some(device) = data.device.as_mut() {
            device.push_str("\"\\\t");
        }
        prop_assert_eq!(
            String::from_utf8(data.to_json_vec()).unwrap(),
            serde_json::to_string(&data).unwrap()
        );
    }

    #[test]
    fn known_fields_win_over_unknown_ones_of_the_same_name(
        data in heartbeat_data(),
        shadowed in proptest::sample::select(vec!["user_id", "reject_strategy", "session_id", "started_at", "zzz"]),
    ) {
        let mut data = data;
        // Unknown fields named like known ones (as a hand-built value may have).
        data.extra.insert(shadowed.to_owned(), serde_json::json!("from extra"));
        let text = serde_json::to_string(&data).unwrap();
        let written: Map<String, Value> = serde_json::from_str(&text).unwrap();
        // Every name once, known fields as they serialize alone, other fields as they are.
        for name in written.keys() {
            let quoted = format!("{}:", serde_json::to_string(name).unwrap());
            prop_assert_eq!(text.matches(&quoted).count(), 1, "{} in {}", name, text);
        }
        let known = serde_json::to_value(HeartbeatData { extra: Map::new(), ..data.clone() }).unwrap();
        let mut expected = data.extra.clone();
        expected.extend(known.as_object().unwrap().clone());
        prop_assert_eq!(written, expected);
    }

    #[test]
    fn lenient_forms_read_as_the_instant_they_name(
        // Whole seconds within 1900-2100, so every offset keeps the local time in range.
        seconds in -2_208_988_800i64..4_102_444_800,
        millis in 0i64..1000,
        offset_minutes in -840i64..=840,
        separator in proptest::sample::select(vec!["T", "t", " "]),
        fraction_digits in 0usize..7,
        offset_form in 0u8..5,
    ) {
        // Offsets an hours-only form can write are whole hours.
        let offset_minutes = if offset_form == 3 { offset_minutes / 60 * 60 } else { offset_minutes };
        let fraction_digits = if fraction_digits == 0 { 0 } else { fraction_digits.max(3) };
        let utc_millis = seconds * 1000 + if fraction_digits == 0 { 0 } else { millis };
        // The wall clock at that offset, written by hand as a backend would.
        let local = Timestamp::from_unix_millis(utc_millis + offset_minutes * 60_000).unwrap().to_string();
        let (date, time) = (&local[..10], &local[11..19]);
        let fraction = if fraction_digits == 0 {
            String::new()
        } else {
            format!(".{}{}", &local[20..23], "0".repeat(fraction_digits - 3))
        };
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let (h, m) = (offset_minutes.abs() / 60, offset_minutes.abs() % 60);
        let offset = match offset_form {
            0 if offset_minutes == 0 => "Z".to_owned(),
            0 | 1 => format!("{sign}{h:02}:{m:02}"),
            2 => format!("{sign}{h:02}{m:02}"),
            3 => format!("{sign}{h:02}"),
            _ if offset_minutes == 0 => String::new(),
            _ => format!("{sign}{h:02}:{m:02}"),
        };
        let text = format!("{date}{separator}{time}{fraction}{offset}");
        let read: Timestamp = text.parse().unwrap();
        prop_assert_eq!(read.unix_millis(), utc_millis, "{}", text);
    }

    #[test]
    fn timestamps_round_trip(t in timestamp()) {
        let text = t.to_string();
        prop_assert_eq!(text.len(), 24);
        prop_assert_eq!(text.parse::<Timestamp>().unwrap(), t);
    }

    #[test]
    fn opening_arbitrary_text_never_panics(text in ".{0,300}") {
        let codec = TokenCodec::new("k").unwrap();
        prop_assert!(codec.open(&text).is_err());
    }
}

/// A JSON value a token's field might hold, right or wrong.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0.0f64..1e6).prop_map(Value::from),
        "[0-9 .]{0,6}".prop_map(Value::from),
        Just(Value::from("2018-06-05T16:16:14.418Z")),
        Just(Value::from("MOST_RECENT")),
        ".{0,12}".prop_map(Value::from),
        Just(serde_json::json!([1, {"a": null}])),
    ]
}

/// Object text with known and unknown names, repeated names and escaped names.
fn object_text() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        proptest::sample::select(HeartbeatData::FIELDS.to_vec()).prop_map(str::to_owned),
        "[a-z_]{0,8}",
    ];
    let valid = Just(serde_json::json!({
            "user_id": 1, "asset_id": "a", "heartbeat_cycle": 3, "cycle_upper_tolerance": 1,
            "timestamp": "2018-06-05T16:16:14.418Z", "session_limit": 1,
            "checking_threshold": 0, "sessions_edge": 2,
    }));
    (
        valid,
        proptest::collection::vec((name, field_value(), any::<bool>()), 0..8),
    )
        .prop_map(|(valid, fields)| {
            let mut text = valid.to_string();
            text.pop(); // reopen the object: later names repeat earlier ones
            for (name, value, escape) in fields {
                // `\u0061` is `a`: the same name, written so it cannot be borrowed.
                let name = if escape {
                    name.replacen('a', "\\u0061", 1)
                } else {
                    name
                };
                text.push_str(&format!(",\"{name}\":{value}"));
            }
            text.push('}');
            text
        })
}

proptest! {
    #[test]
    fn reading_json_text_directly_agrees_with_reading_the_object(text in object_text()) {
        let direct = HeartbeatData::from_json_slice(text.as_bytes());
        let object: Map<String, Value> = serde_json::from_str(&text).unwrap();
        let through_object = HeartbeatData::from_json_object(object);
        prop_assert_eq!(direct, through_object.map_err(JsonDataError::Data));
    }

    #[test]
    fn reading_anything_but_an_object_says_so(
        value in field_value(),
        junk in proptest::sample::select(vec!["", "{", "[", "x", "\"", "{\"a\"", "[1,", "1 2", "{}}", "\u{ff}"]),
    ) {
        prop_assert_eq!(
            HeartbeatData::from_json_slice(value.to_string().as_bytes()),
            Err(JsonDataError::NotAnObject)
        );
        prop_assert_eq!(HeartbeatData::from_json_slice(junk.as_bytes()), Err(JsonDataError::NotJson));
    }
}

/// Stored sessions of one user around `T0`.
fn stored_sessions() -> impl Strategy<Value = UserSessions> {
    proptest::collection::btree_map(
        "s[0-9]{1,2}",
        (
            (-120_000i64..1_000, 0u64..8, -300_000i64..0),
            proptest::option::of(proptest::sample::select(vec!["tv", "mobile", "web"])),
            proptest::option::of(0i64..3),
        ),
        0..16,
    )
    .prop_map(|map| UserSessions {
        sessions: map
            .into_iter()
            .map(|(id, ((last, hits, started), family, asset))| {
                let timestamp = Timestamp::from_unix_millis(T0 + last).unwrap();
                let record = SessionRecord {
                    timestamp,
                    hit_counter: hits,
                    started_at: Some(Timestamp::from_unix_millis(T0 + started.min(last)).unwrap()),
                    asset_id: asset.map(Id::Int),
                    progress: None,
                    expires_at: None,
                    ended_by: None,
                    ended_at: None,
                    taken_over_by: None,
                    device: None,
                    device_family: family.map(str::to_owned),
                    previous: None,
                    restarted_at: None,
                    restarted_before: None,
                    would_refuse: None,
                    notice_stream: None,
                    gone_at: None,
                    extra: Map::new(),
                };
                (id, record)
            })
            .collect(),
        unreadable: Vec::new(),
    })
}

prop_compose! {
    fn decision_case()(
        stored in stored_sessions(),
        pick in 0usize..20, replay in any::<bool>(),
        limit in 0u32..5, threshold in 0u32..5, edge in 0u32..20, most_recent in any::<bool>(),
        now_offset in 0i64..60_000,
    ) -> (UserSessions, HeartbeatData, Timestamp) {
        let mut token: HeartbeatData = serde_json::from_value(serde_json::json!({
            "user_id": 13, "asset_id": 14, "heartbeat_cycle": 30, "cycle_lower_tolerance": 2,
            "cycle_upper_tolerance": 10, "timestamp": "2026-01-01T00:00:00.000Z",
            "session_limit": limit, "checking_threshold": threshold, "sessions_edge": edge,
        })).unwrap();
        token.reject_strategy = Some(if most_recent { RejectStrategy::MostRecent } else { RejectStrategy::LeastRecent });
        // The token belongs to a stored session (current or replayed), an unknown one, or the backend.
        let ids: Vec<&String> = stored.sessions.keys().collect();
        match ids.get(pick) {
            Some(id) => {
                token.session_id = Some((*id).clone());
                let record = &stored.sessions[*id];
                token.timestamp = Some(if replay { record.timestamp.add_millis(-1) } else { record.timestamp });
            }
            None if pick % 2 == 0 => token.session_id = Some("unknown".into()),
            None => {}
        }
        let now = Timestamp::from_unix_millis(T0 + now_offset).unwrap();
        (stored, token, now)
    }
}

proptest! {
    #[test]
    fn decision_invariants((stored, token, now) in decision_case(), progress in proptest::option::of(0.0f64..1e6)) {
        let decision = decide(&policy(), now, &token, &stored, "fresh", progress);
        let life = token.session_life_millis();
        let expired: Vec<&String> = stored.sessions.iter()
            .filter(|(_, r)| r.timestamp.add_millis(life) < now).map(|(id, _)| id).collect();
        let mut active = stored.clone();
        active.sessions.retain(|_, r| r.timestamp.add_millis(life) >= now);

        // Expired sessions never count, go to the history, and stay as their playback's
        // end marker (not active).
        // (The token's own session may resume: its latest token.)
        for id in expired.iter().filter(|id| token.session_id.as_ref() != Some(**id)) {
            prop_assert!(!decision.write.sessions.sessions[*id].is_active());
            prop_assert!(decision.write.upserts.iter().any(|(upserted, r)| upserted == *id && r.ended_by == Some(EndReason::Expired)));
            prop_assert!(decision.write.ended.iter().any(|e| &e.session_id == *id));
        }
        let markers = expired.len();
        // A token its playback has moved past is refused as a replay.
        let moved_past = token.session_id.as_ref().and_then(|id| stored.sessions.get(id))
            .is_some_and(|r| Some(r.timestamp) != token.timestamp);
        if moved_past {
            prop_assert!(matches!(&decision.verdict, Verdict::Reject(r) if r.reason == RejectReason::Replayed));
        }
        match &decision.verdict {
            Verdict::Reject(refused) => {
                let reason = &refused.reason;
                // A rejected heartbeat writes nothing beyond ending expired sessions.
                prop_assert_eq!(decision.write.upserts.len(), markers);
                prop_assert!(decision.write.progress.is_none());
                prop_assert!(decision.write.remove.is_empty());
                if let RejectReason::OverLimit { position, limit } = reason {
                    prop_assert!(*position >= *limit as usize);
                }
            }
            Verdict::Accept(accepted) => {
                // Never more active sessions than the edge allows, this one included.
                let after = decision.write.sessions.sessions.values().filter(|r| r.is_active()).count();
                prop_assert!(token.sessions_edge.is_none_or(|edge| after <= edge as usize));
                // A continued session is accepted only within the limit as it stood; any
                // other start but a playback's first within the limit after it.
                let ranked_before = ranking(&active, &token);
                let ranked_after = ranking(&decision.write.sessions, &token);
                let position = match accepted.new_session {
                    None => ranked_before.iter().position(|r| *r == accepted.session_id),
                    Some(NewSessionCause::FromBackend) => None,
                    Some(_) => ranked_after.iter().position(|r| *r == accepted.session_id),
                };
                if let Some(position) = position {
                    prop_assert!(token.session_limit.is_none_or(|limit| position < limit as usize));
                }
                let (id, record) = decision.write.upserts.last().unwrap().clone();
                prop_assert_eq!(&id, &accepted.session_id);
                prop_assert_eq!(record.timestamp, now);
                prop_assert_eq!(accepted.token_data.timestamp, Some(now));
                prop_assert_eq!(&id, token.session_id.as_deref().unwrap_or("fresh"));
                let previous = active.sessions.get(&id);
                match accepted.new_session {
                    // Continued: one more heartbeat.
                    None => prop_assert_eq!(record.hit_counter, previous.unwrap().hit_counter + 1),
                    // A playback's first session starts at 1, or counted at once when its
                    // token was issued more than a session life ago.
                    Some(NewSessionCause::FromBackend) => {
                        let stale = token.timestamp.is_some_and(|t| now.millis_since(t) > life);
                        let first = if stale { u64::from(token.threshold()).max(1) } else { 1 };
                        prop_assert_eq!(record.hit_counter, first);
                    }
                    // Any other start: counted at once, ranked newest.
                    Some(_) => {
                        prop_assert!(record.hit_counter >= u64::from(token.threshold()));
                        prop_assert_eq!(record.started_at, Some(now));
                    }
                }
                prop_assert_eq!(decision.write.progress.is_some(), progress.is_some());
            }
        }
    }

    #[test]
    fn least_recent_always_keeps_the_newest((stored, mut token, now) in decision_case()) {
        token.reject_strategy = Some(RejectStrategy::LeastRecent);
        token.session_limit = Some(token.session_limit.unwrap_or(1).max(1));
        token.sessions_edge = Some(100);
        let mut active = stored.clone();
        active.sessions.retain(|_, r| r.timestamp.add_millis(token.session_life_millis()) >= now);
        let ranked = ranking(&active, &token);
        if let Some(newest) = ranked.first() {
            // The newest counted session, heartbeating with its current token, is accepted.
            token.session_id = Some((*newest).to_owned());
            token.timestamp = Some(active.sessions.get(*newest).unwrap().timestamp);
            let decision = decide(&policy(), now, &token, &stored, "fresh", None);
            prop_assert!(matches!(decision.verdict, Verdict::Accept(_)));
            let newest_started = active.sessions.get(*newest).unwrap().order_key();
            prop_assert!(active.sessions.values()
                .filter(|r| r.hit_counter >= u64::from(token.threshold()))
                .all(|r| r.order_key() <= newest_started));
        }
    }
}

prop_compose! {
    /// A decision case whose token also carries family and asset limits, and a family.
    fn policy_case()(
        (stored, token, now) in decision_case(),
        families in proptest::option::of(proptest::collection::btree_map(
            proptest::sample::select(vec!["tv", "mobile", "web"]).prop_map(str::to_owned), 0u32..3, 0..3)),
        asset_limit in proptest::option::of(0u32..3),
        family in proptest::option::of(proptest::sample::select(vec!["tv", "mobile", "web"])),
        asset in 0i64..3,
        no_session_limit in any::<bool>(),
    ) -> (UserSessions, HeartbeatData, Timestamp) {
        let mut token = token;
        token.family_limits = families;
        token.asset_limit = asset_limit;
        token.device_family = family.map(str::to_owned);
        token.asset_id = Id::Int(asset);
        if no_session_limit {
            token.session_limit = None;
        }
        token.sessions_edge = Some(100);
        (stored, token, now)
    }
}

/// The counted sessions of `active` that keep playing under `token`'s limits.
fn kept<'a>(active: &'a UserSessions, token: &HeartbeatData) -> Vec<&'a str> {
    standings(active, token)
        .into_iter()
        .filter(|(_, refusal)| refusal.is_none())
        .map(|(id, _)| id)
        .collect()
}

/// No limit is exceeded among `ids` (sessions of `active`).
fn within_limits(
    active: &UserSessions,
    token: &HeartbeatData,
    ids: &[&str],
) -> Result<(), TestCaseError> {
    prop_assert!(
        token
            .session_limit
            .is_none_or(|limit| ids.len() <= limit as usize)
    );
    let mut families: BTreeMap<&str, u32> = BTreeMap::new();
    let mut assets: BTreeMap<&Id, u32> = BTreeMap::new();
    for id in ids {
        let record = active.sessions.get(*id).unwrap();
        if let Some(family) = record.device_family.as_deref() {
            *families.entry(family).or_default() += 1;
        }
        if let Some(asset) = &record.asset_id {
            *assets.entry(asset).or_default() += 1;
        }
    }
    for (family, count) in families {
        let limit = token
            .family_limits
            .as_ref()
            .and_then(|limits| limits.get(family));
        prop_assert!(
            limit.is_none_or(|limit| count <= *limit),
            "{} sessions of {}",
            count,
            family
        );
    }
    for (asset, count) in assets {
        prop_assert!(
            token.asset_limit.is_none_or(|limit| count <= limit),
            "{} on {}",
            count,
            asset
        );
    }
    Ok(())
}

proptest! {
    /// SPEC §3.8: among the sessions that keep playing, no limit is ever exceeded, before
    /// or after any decision; every refused session would exceed one if it played too.
    #[test]
    fn limit_policies_are_never_exceeded((stored, token, now) in policy_case()) {
        let (active, _) = expire(&policy(), now, &token, &stored);
        let before = kept(&active, &token);
        within_limits(&active, &token, &before)?;
        for (id, refusal) in standings(&active, &token) {
            if refusal.is_some() {
                let mut with = kept(&active, &token);
                with.push(id);
                prop_assert!(within_limits(&active, &token, &with).is_err(), "{} was refused for nothing", id);
            }
        }
        let decision = decide(&policy(), now, &token, &stored, "fresh", None);
        let after = &decision.write.sessions;
        within_limits(after, &token, &kept(after, &token))?;
    }

    /// SPEC §3.7: a refusal names exactly the sessions the strategy keeps playing, never
    /// the refused one; its reason names the limit that applied.
    #[test]
    fn refusals_name_the_sessions_that_keep_playing((stored, token, now) in policy_case()) {
        let decision = decide(&policy(), now, &token, &stored, "fresh", None);
        if let Verdict::Reject(refused) = decision.verdict {
            let (active, _) = expire(&policy(), now, &token, &stored);
            let named: Vec<String> = refused.playing.unwrap().into_iter().map(|s| s.session_id).collect();
            // (A start refused may replace a session that was playing: never named.)
            let own = token.session_id.as_deref().unwrap_or("fresh");
            prop_assert_eq!(&named, &kept(&active, &token).iter().filter(|id| **id != own).map(|id| id.to_string()).collect::<Vec<_>>());
            prop_assert!(!named.iter().any(|id| id == own));
            match refused.reason {
                RejectReason::FamilyLimit { limit } => {
                    // The family of the session as ranked: stored, or the token's for a start.
                    let limits = token.family_limits.as_ref().unwrap();
                    let stored_family = active.sessions.get(own).and_then(|r| r.device_family.as_ref());
                    let of = |family: Option<&String>| family.and_then(|f| limits.get(f)).copied();
                    prop_assert!(of(stored_family) == Some(limit) || of(token.device_family.as_ref()) == Some(limit));
                }
                RejectReason::AssetLimit { limit } => prop_assert_eq!(Some(limit), token.asset_limit),
                RejectReason::OverLimit { limit, .. } => prop_assert_eq!(Some(limit), token.session_limit),
                _ => {}
            }
        }
    }

    /// SPEC §3.7: the displaced sessions of an accepted heartbeat are exactly those that
    /// kept playing before it and are refused after it.
    #[test]
    fn displaced_sessions_are_exactly_those_pushed_out((stored, token, now) in policy_case()) {
        let decision = decide(&policy(), now, &token, &stored, "fresh", None);
        if let Verdict::Accept(accepted) = decision.verdict {
            let (before, _) = expire(&policy(), now, &token, &stored);
            let after = &decision.write.sessions;
            let kept_before: BTreeSet<&str> = kept(&before, &token).into_iter().collect();
            let kept_after: BTreeSet<&str> = kept(after, &token).into_iter().collect();
            let expected: BTreeSet<String> = kept_before
                .iter()
                .filter(|id| after.sessions.contains_key(**id) && !kept_after.contains(**id))
                .filter(|id| after.sessions.get(**id).unwrap().hit_counter >= u64::from(token.threshold()))
                .filter(|id| **id != accepted.session_id)
                .map(|id| id.to_string())
                .collect();
            let named: BTreeSet<String> = accepted.displaced.iter().cloned().collect();
            prop_assert_eq!(&named, &expected);
            prop_assert_eq!(named, displaced(&before, after, &token, &accepted.session_id).into_iter().collect::<BTreeSet<_>>());
            prop_assert!(!accepted.displaced.contains(&accepted.session_id));
        }
    }

    /// SPEC §3.7: a takeover that admits ends its target as `taken_over` by the admitted
    /// session, in the same write, and the limits hold after it; one that is refused
    /// writes what a plain refusal writes.
    #[test]
    fn takeovers_end_one_session_and_keep_the_limits((stored, token, now) in policy_case(), pick in 0usize..16) {
        let (active, _) = expire(&policy(), now, &token, &stored);
        let Some(target) = active.sessions.iter().filter(|(_, r)| r.is_active()).map(|(id, _)| id).nth(pick).cloned() else { return Ok(()) };
        let Ok(decision) = take_over(&policy(), now, &token, &stored, &target, "fresh", None) else {
            prop_assert!(token.session_id.as_deref() == Some(target.as_str()));
            return Ok(());
        };
        match decision.verdict {
            Verdict::Accept(accepted) => {
                let after = &decision.write.sessions;
                let ended = &after.sessions[&target];
                prop_assert_eq!(ended.ended_by, Some(EndReason::TakenOver));
                prop_assert_eq!(ended.taken_over_by.as_ref(), Some(&accepted.session_id));
                prop_assert!(decision.write.upserts.iter().any(|(id, r)| id == &target && r == ended));
                let entry = decision.write.ended.iter().find(|e| e.session_id == target).unwrap();
                prop_assert_eq!(entry.ended_by, Some(EndReason::TakenOver));
                within_limits(after, &token, &kept(after, &token))?;
            }
            Verdict::Reject(_) => {
                prop_assert_eq!(decision, decide(&policy(), now, &token, &stored, "fresh", None));
            }
        }
    }
}
