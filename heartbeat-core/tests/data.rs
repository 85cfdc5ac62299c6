//! `heartbeat_data` parsing: types kept, numeric strings, unknown fields, field errors.

#![allow(clippy::unwrap_used)]

use heartbeat_core::{DataError, HeartbeatData, Id, RejectStrategy};
use serde_json::{Value, json};

fn base() -> Value {
    json!({"user_id":13,"asset_id":"movie/14","heartbeat_cycle":3,"cycle_upper_tolerance":0.8,
           "timestamp":"2018-06-05T16:16:14.418Z","session_limit":1,"checking_threshold":3,
           "sessions_edge":10})
}

fn with(field: &str, value: Value) -> Value {
    let mut object = base();
    object[field] = value;
    object
}

fn error_of(value: Value) -> DataError {
    HeartbeatData::from_json(value).unwrap_err()
}

#[test]
fn ids_keep_their_json_type() {
    let data = HeartbeatData::from_json(base()).unwrap();
    assert_eq!(data.user_id, Id::Int(13));
    assert_eq!(data.asset_id, Id::Str("movie/14".into()));
    let written = serde_json::to_value(&data).unwrap();
    assert_eq!(written["user_id"], json!(13));
    assert_eq!(written["asset_id"], json!("movie/14"));
    let string_user = HeartbeatData::from_json(with("user_id", json!("13"))).unwrap();
    assert_eq!(
        serde_json::to_value(&string_user).unwrap()["user_id"],
        json!("13")
    );
}

#[test]
fn numeric_strings_are_numbers() {
    let mut object = base();
    object["heartbeat_cycle"] = json!(" 3.5 ");
    object["session_limit"] = json!("2");
    object["sessions_edge"] = json!(5.0);
    let data = HeartbeatData::from_json(object).unwrap();
    assert_eq!(data.heartbeat_cycle.get(), 3.5);
    assert_eq!(data.session_limit, Some(2));
    assert_eq!(data.sessions_edge, Some(5));
    let written = serde_json::to_value(&data).unwrap();
    assert_eq!(written["heartbeat_cycle"], json!(3.5));
    assert_eq!(written["cycle_upper_tolerance"], json!(0.8));
    assert_eq!(written["session_limit"], json!(2));
}

#[test]
fn unknown_fields_and_unknown_strategies_are_kept() {
    let mut object = with("reject_strategy", json!("NEWEST_WINS"));
    object["tenant"] = json!({"id": 7});
    let data = HeartbeatData::from_json(object).unwrap();
    assert_eq!(data.reject_strategy, None);
    assert_eq!(data.strategy(), RejectStrategy::LeastRecent);
    let written = serde_json::to_value(&data).unwrap();
    assert_eq!(written["tenant"], json!({"id": 7}));
    assert_eq!(written["reject_strategy"], json!("NEWEST_WINS"));

    let known = HeartbeatData::from_json(with("reject_strategy", json!("MOST_RECENT"))).unwrap();
    assert_eq!(known.strategy(), RejectStrategy::MostRecent);
    assert!(known.extra.is_empty());
}

#[test]
fn timestamps_are_written_like_to_iso_string() {
    let data =
        HeartbeatData::from_json(with("timestamp", json!("2018-06-05T18:16:14.4+02:00"))).unwrap();
    assert_eq!(
        serde_json::to_value(&data).unwrap()["timestamp"],
        json!("2018-06-05T16:16:14.400Z")
    );
}

#[test]
fn errors_name_the_field() {
    let missing = |field: &str| {
        let mut object = base();
        object.as_object_mut().unwrap().remove(field);
        error_of(object)
    };
    assert_eq!(missing("user_id"), DataError::Missing { field: "user_id" });
    assert_eq!(
        missing("heartbeat_cycle"),
        DataError::Missing {
            field: "heartbeat_cycle"
        }
    );
    assert_eq!(error_of(json!([1])), DataError::NotAnObject);

    let invalid = [
        ("user_id", json!(1.5)),
        ("user_id", json!("")),
        ("user_id", json!("x".repeat(257))),
        ("asset_id", json!(true)),
        ("session_id", json!(5)),
        ("heartbeat_cycle", json!(0)),
        ("heartbeat_cycle", json!("soon")),
        ("cycle_upper_tolerance", json!(-1)),
        ("cycle_lower_tolerance", json!("NaN")),
        ("session_limit", json!(1.5)),
        ("checking_threshold", json!(-1)),
        ("sessions_edge", json!(1e12)),
        ("started_at", json!(12)),
        ("device", json!("")),
        ("device", json!("x".repeat(65))),
        ("device", json!(7)),
        ("device_family", json!("t".repeat(33))),
        ("family_limits", json!({"tv": -1})),
        ("family_limits", json!({"tv": "one"})),
        ("family_limits", json!({"": 1})),
        ("family_limits", json!([1])),
        (
            "family_limits",
            Value::Object((0..33).map(|n| (format!("f{n}"), json!(1))).collect()),
        ),
        ("asset_limit", json!(-2)),
    ];
    for (field, value) in invalid {
        match error_of(with(field, value.clone())) {
            DataError::Invalid { field: named, .. } => assert_eq!(named, field, "{value}"),
            other => panic!("{field}={value}: {other:?}"),
        }
    }
    let message = error_of(with("session_limit", json!("many"))).to_string();
    assert!(
        message.starts_with("`session_limit` must be a whole number"),
        "{message}"
    );
}

#[test]
fn optional_fields_default() {
    let data = HeartbeatData::from_json(base()).unwrap();
    assert_eq!(data.cycle_lower_tolerance.get(), 0.0);
    assert!(data.is_from_backend());
    assert_eq!(data.started_at, None);
    let with_null = HeartbeatData::from_json(with("session_id", Value::Null)).unwrap();
    assert!(with_null.is_from_backend());
}

#[test]
fn the_builder_makes_backend_data_that_seals_and_opens() {
    use heartbeat_core::{DataError, RejectStrategy, Timestamp, TokenCodec};
    let at: Timestamp = "2026-01-01T00:00:00.000Z".parse().unwrap();
    let data = HeartbeatData::builder(13, "movie-14")
        .cycle(3.5)
        .lower_tolerance(0.5)
        .upper_tolerance(1.0)
        .strategy(RejectStrategy::MostRecent)
        .timestamp(at)
        .session_limit(2)
        .checking_threshold(3)
        .extra("tenant", "acme")
        .extra("session_id", "not from a builder")
        .build()
        .unwrap();
    let expected = HeartbeatData::from_json(json!({
        "user_id": 13, "asset_id": "movie-14", "heartbeat_cycle": 3.5,
        "cycle_lower_tolerance": 0.5, "cycle_upper_tolerance": 1,
        "reject_strategy": "MOST_RECENT", "timestamp": "2026-01-01T00:00:00.000Z",
        "session_limit": 2, "checking_threshold": 3, "sessions_edge": 12, "tenant": "acme",
    }))
    .unwrap();
    assert_eq!(data, expected);
    let codec = TokenCodec::new("builder key").unwrap();
    assert_eq!(codec.open(&codec.seal(&data).unwrap()).unwrap(), data);

    let refused = |builder: heartbeat_core::HeartbeatDataBuilder| builder.build().unwrap_err();
    assert!(matches!(
        refused(HeartbeatData::builder(1, 2).cycle(0.0)),
        DataError::Invalid {
            field: "heartbeat_cycle",
            ..
        }
    ));
    assert!(matches!(
        refused(HeartbeatData::builder(1, 2).upper_tolerance(f64::NAN)),
        DataError::Invalid {
            field: "cycle_upper_tolerance",
            ..
        }
    ));
    assert!(matches!(
        refused(HeartbeatData::builder("", 2)),
        DataError::Invalid {
            field: "user_id",
            ..
        }
    ));
}

/// What the Node server accepts (SPEC §3.1, §3.5): a timestamp that is absent or cannot be
/// read, and absent or `null` limits (no limit, threshold 0, no edge). Absent fields stay
/// absent in re-issued tokens, as Node's `JSON.stringify` drops `undefined`.
#[test]
fn what_the_node_server_accepts_is_read() {
    let mut object = base();
    let fields = object.as_object_mut().unwrap();
    for field in ["timestamp", "session_limit", "checking_threshold"] {
        fields.remove(field);
    }
    fields.insert("sessions_edge".into(), Value::Null);
    let data = HeartbeatData::from_json(object).unwrap();
    assert_eq!(data.timestamp, None);
    assert_eq!(
        (
            data.session_limit,
            data.checking_threshold,
            data.sessions_edge
        ),
        (None, None, None)
    );
    assert_eq!(data.threshold(), 0);
    let written = serde_json::to_value(&data).unwrap();
    for field in [
        "timestamp",
        "session_limit",
        "checking_threshold",
        "sessions_edge",
    ] {
        assert!(written.get(field).is_none(), "{field} in {written}");
    }
    for unreadable in [json!("yesterday"), json!(12), json!("2018-06-05T25:00:00Z")] {
        let data = HeartbeatData::from_json(with("timestamp", unreadable.clone())).unwrap();
        assert_eq!(data.timestamp, None, "{unreadable}");
    }
    let php =
        HeartbeatData::from_json(with("timestamp", json!("2018-06-05T16:16:14+0000"))).unwrap();
    assert_eq!(
        php.timestamp.unwrap().to_string(),
        "2018-06-05T16:16:14.000Z"
    );
}

/// The §3.1 device and policy fields: read with the same leniency as the other counts,
/// written back in sorted field order, and built by the builder under the same rules.
#[test]
fn device_fields_and_limit_policies_round_trip() {
    let mut object = base();
    object["device"] = json!("Living-room TV (ünïcode, 64 chars max)");
    object["device_family"] = json!("tv");
    object["family_limits"] = json!({"tv": 1, "mobile": "2"});
    object["asset_limit"] = json!("1");
    let data = HeartbeatData::from_json(object).unwrap();
    assert_eq!(
        data.device.as_deref(),
        Some("Living-room TV (ünïcode, 64 chars max)")
    );
    assert_eq!(data.device_family.as_deref(), Some("tv"));
    let limits = data.family_limits.clone().unwrap();
    assert_eq!((limits["tv"], limits["mobile"]), (1, 2));
    assert_eq!(data.asset_limit, Some(1));
    assert!(data.extra.is_empty(), "known fields are not extra");
    let written = serde_json::to_string(&data).unwrap();
    assert!(
        written.starts_with(r#"{"asset_id":"movie/14","asset_limit":1,"#),
        "{written}"
    );
    assert!(
        written.contains(r#""family_limits":{"mobile":2,"tv":1}"#),
        "{written}"
    );
    assert_eq!(
        HeartbeatData::from_json_slice(written.as_bytes()).unwrap(),
        data
    );

    // Sixty-four characters of any script are allowed; the limit is in characters.
    assert!(HeartbeatData::from_json(with("device", json!("é".repeat(64)))).is_ok());
    let nulls = HeartbeatData::from_json(with("family_limits", Value::Null)).unwrap();
    assert_eq!(nulls.family_limits, None);

    let built = HeartbeatData::builder(13, 14)
        .device("Phone")
        .device_family("mobile")
        .family_limit("tv", 1)
        .family_limit("mobile", 2)
        .asset_limit(1)
        .build()
        .unwrap();
    assert_eq!(built.family_limits.unwrap().len(), 2);
    let too_long = HeartbeatData::builder(13, 14)
        .device("x".repeat(65))
        .build();
    assert!(matches!(
        too_long,
        Err(DataError::Invalid {
            field: "device",
            ..
        })
    ));
    let bad_family = HeartbeatData::builder(13, 14).family_limit("", 1).build();
    assert!(matches!(
        bad_family,
        Err(DataError::Invalid {
            field: "family_limits",
            ..
        })
    ));
}
