//! The token codec: v2 and v3 tampering, truncation, keys, versions, lengths; legacy switches.

#![allow(clippy::unwrap_used)]

use heartbeat_core::token::{MAX_TOKEN_LEN, Refusal};
use heartbeat_core::{HeartbeatData, TokenCodec, TokenFormat};

fn data() -> HeartbeatData {
    serde_json::from_str(
        r#"{"user_id":"user-äöü","asset_id":14,"heartbeat_cycle":3,"cycle_upper_tolerance":0.8,
            "timestamp":"2018-06-05T16:16:14.418Z","session_limit":1,"checking_threshold":3,
            "sessions_edge":10,"tenant":{"plan":"gold"}}"#,
    )
    .unwrap()
}

/// `prefix` ‖ key id (4 characters) ‖ `.` ‖ body: URL-safe characters only (`.` is
/// unreserved).
fn assert_keyed_and_url_safe(token: &str, prefix: &str) {
    let rest = token.strip_prefix(prefix).unwrap();
    let (key_id, body) = rest.split_once('.').unwrap();
    assert_eq!(key_id.len(), 4);
    assert!(
        body.bytes()
            .chain(key_id.bytes())
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
}

#[test]
fn v2_round_trips_and_is_url_safe() {
    let codec = TokenCodec::new("k").unwrap();
    let token = codec.seal(&data()).unwrap();
    assert_keyed_and_url_safe(&token, "v2.");
    assert_eq!(codec.open(&token).unwrap(), data());
    // Fresh nonce per token; the key id is the key's.
    let again = codec.seal(&data()).unwrap();
    assert_ne!(again, token);
    assert!(again.starts_with(&token[..8]));
}

/// Key ids (rotation): a token names its key, so it opens with the current or a previous
/// key in one try; tokens sealed before key ids still open; a token whose key id names no
/// configured key is refused like any other invalid token.
#[test]
fn v2_tokens_name_their_key() {
    let old = TokenCodec::new("last year's key").unwrap();
    let new = TokenCodec::new("this year's key").unwrap();
    let rotated = TokenCodec::new("this year's key")
        .unwrap()
        .with_previous_keys(["last year's key"])
        .unwrap();
    let from_old = old.seal(&data()).unwrap();
    let from_new = new.seal(&data()).unwrap();
    assert_ne!(
        from_old[3..7],
        from_new[3..7],
        "different keys, different ids"
    );
    assert_eq!(rotated.open(&from_old).unwrap(), data());
    assert_eq!(rotated.open(&from_new).unwrap(), data());
    // Before key ids: `v2.` ‖ body.
    let (_, body) = from_old[3..].split_once('.').unwrap();
    let without_id = format!("v2.{body}");
    assert_eq!(rotated.open(&without_id).unwrap(), data());
    assert_eq!(old.open(&without_id).unwrap(), data());
    assert!(new.open(&without_id).is_err());
    // Another key's id on this body, or an unknown id: refused.
    let swapped = format!("v2.{}.{body}", &from_new[3..7]);
    assert!(rotated.open(&swapped).is_err());
    assert!(new.open(&from_old).is_err());
    assert!(rotated.open(&format!("v2.AAAA.{body}")).is_err());
}

#[test]
fn v2_refuses_truncation_wrong_key_and_other_versions() {
    let codec = TokenCodec::new("right key").unwrap();
    let token = codec.seal(&data()).unwrap();
    for cut in [3, 10, 30, token.len() - 1] {
        assert!(codec.open(&token[..cut]).is_err(), "cut at {cut}");
    }
    let other = TokenCodec::new("wrong key").unwrap();
    assert_eq!(
        other.open(&token).unwrap_err().reason(),
        &Refusal::Decryption
    );
    let v3 = token.replacen("v2.", "v3.", 1);
    assert!(codec.open(&v3).is_err());
    let appended = format!("{token}A");
    assert!(codec.open(&appended).is_err());
    assert_eq!(
        codec.open("v2.!!!").unwrap_err().reason(),
        &Refusal::Malformed
    );
}

#[test]
fn every_refusal_has_the_same_public_message() {
    let codec = TokenCodec::new("k").unwrap();
    let too_long = "a".repeat(MAX_TOKEN_LEN + 1);
    let not_data = codec.seal_bytes(br#"{"user_id":1}"#).unwrap();
    let not_json = codec.seal_bytes(b"not json").unwrap();
    let array = codec.seal_bytes(b"[1,2]").unwrap();
    let cases = [
        ("", Refusal::Malformed),
        (too_long.as_str(), Refusal::TooLong),
        (not_json.as_str(), Refusal::NotJson),
        (array.as_str(), Refusal::NotAnObject),
    ];
    for (token, reason) in cases {
        let error = codec.open(token).unwrap_err();
        assert_eq!(error.to_string(), "Heartbeat token is not valid.");
        assert_eq!(error.reason(), &reason);
    }
    let error = codec.open(&not_data).unwrap_err();
    assert!(
        matches!(error.reason(), Refusal::Data(_)),
        "{:?}",
        error.reason()
    );
    assert_eq!(error.to_string(), "Heartbeat token is not valid.");
}

#[test]
fn legacy_tokens_issued_here_open_here_and_can_be_refused() {
    let codec = TokenCodec::new("topsecret")
        .unwrap()
        .issuing(TokenFormat::Legacy);
    let token = codec.seal(&data()).unwrap();
    assert!(token.bytes().take(64).all(|b| b.is_ascii_hexdigit()));
    // Legacy tokens open as legacy-begun, whatever they carry (SPEC §3.3).
    let expected = HeartbeatData {
        provenance: heartbeat_core::Provenance::Legacy,
        ..data()
    };
    assert_eq!(codec.open(&token).unwrap(), expected);
    // Another process (another salt) opens it too: same passphrase is all it takes.
    assert_eq!(
        TokenCodec::new("topsecret").unwrap().open(&token).unwrap(),
        expected
    );
    let strict = codec.accepting_legacy(false);
    assert_eq!(
        strict.open(&token).unwrap_err().reason(),
        &Refusal::Malformed
    );
}

#[test]
fn sealing_refuses_tokens_too_long_to_open() {
    let codec = TokenCodec::new("k").unwrap();
    let mut big = data();
    big.extra
        .insert("blob".into(), "x".repeat(MAX_TOKEN_LEN).into());
    assert!(codec.seal(&big).is_err());
}

#[test]
fn empty_key_is_refused() {
    assert!(TokenCodec::new("").is_err());
}

#[test]
fn token_format_names() {
    assert_eq!("v2".parse::<TokenFormat>().unwrap(), TokenFormat::Sealed);
    assert_eq!("b1".parse::<TokenFormat>().unwrap(), TokenFormat::Backend);
    assert_eq!("V3".parse::<TokenFormat>().unwrap(), TokenFormat::Compact);
    assert_eq!(
        "LEGACY".parse::<TokenFormat>().unwrap(),
        TokenFormat::Legacy
    );
    assert!(
        "v1".parse::<TokenFormat>()
            .unwrap_err()
            .contains("expected `v2`, `v3`, `b1` or `legacy`")
    );
    // Each format's name parses back to it (`TOKEN_FORMAT`, check-config).
    for format in [
        TokenFormat::Sealed,
        TokenFormat::Compact,
        TokenFormat::Backend,
        TokenFormat::Legacy,
    ] {
        assert_eq!(format.name().parse::<TokenFormat>().unwrap(), format);
    }
}

fn v3_codec(key: &str) -> TokenCodec {
    TokenCodec::new(key).unwrap().issuing(TokenFormat::Compact)
}

/// The raw bytes of a `v3.` token's body (nonce ‖ ciphertext ‖ tag).
fn v3_raw(token: &str) -> Vec<u8> {
    use base64::Engine as _;
    let (_, body) = token[3..].split_once('.').unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .unwrap()
}

#[test]
fn v3_round_trips_names_its_key_and_draws_its_nonces() {
    let codec = v3_codec("k");
    let token = codec.seal(&data()).unwrap();
    assert_keyed_and_url_safe(&token, "v3.");
    assert_eq!(codec.open(&token).unwrap(), data());
    // Every codec opens it, whatever it issues, legacy accepted or not.
    let v2_codec = TokenCodec::new("k").unwrap().accepting_legacy(false);
    assert_eq!(v2_codec.open(&token).unwrap(), data());
    assert!(v2_codec.open_authenticated(&token).is_ok());
    assert_eq!(TokenFormat::of(&token), TokenFormat::Compact);
    // A fresh random nonce per token: nothing in one token says how many others its
    // server sealed.
    let nonces: std::collections::BTreeSet<Vec<u8>> = (0..64)
        .map(|_| v3_raw(&codec.clone().seal(&data()).unwrap())[..12].to_vec())
        .collect();
    assert_eq!(nonces.len(), 64);
    // The compact payload is far shorter than v2's JSON.
    assert!(token.len() < TokenCodec::new("k").unwrap().seal(&data()).unwrap().len());
    // A key rotation opens it with its own key in one try; another key refuses it.
    let rotated = TokenCodec::new("new")
        .unwrap()
        .with_previous_keys(["k"])
        .unwrap();
    assert_eq!(rotated.open(&token).unwrap(), data());
    assert_eq!(
        TokenCodec::new("new")
            .unwrap()
            .open(&token)
            .unwrap_err()
            .reason(),
        &Refusal::Decryption
    );
}

#[test]
fn v3_refuses_any_change_truncation_and_relabelling() {
    let codec = v3_codec("right key");
    let token = codec.seal(&data()).unwrap();
    for at in 0..token.len() {
        let mut bytes = token.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(bytes).unwrap();
        let error = codec.open(&changed).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Heartbeat token is not valid.",
            "at {at}"
        );
    }
    for cut in [3, 7, 8, 30, token.len() - 1] {
        assert!(codec.open(&token[..cut]).is_err(), "cut at {cut}");
    }
    // The same body under another prefix (other associated data, other key): refused.
    let (_, body) = token[3..].split_once('.').unwrap();
    assert!(codec.open(&format!("b1.{body}")).is_err());
    assert!(codec.open(&token.replacen("v3.", "v2.", 1)).is_err());
    // Without a key id: malformed (v3 tokens always carry one).
    assert_eq!(
        codec.open(&format!("v3.{body}")).unwrap_err().reason(),
        &Refusal::Malformed
    );
}

/// What a key holder seals as a `v3.` payload is read by the rules JSON data are read by:
/// bytes that are not a payload are malformed, a payload breaking a field rule names the
/// field (an authentic token's error may be told), and neither opens.
#[test]
fn v3_payloads_are_checked_like_json_data() {
    let codec = v3_codec("k");
    let garbage = codec.seal_bytes(b"\xff\xff\xff").unwrap();
    assert_eq!(
        codec.open(&garbage).unwrap_err().reason(),
        &Refusal::Malformed
    );
    let mut payload = data().to_compact_vec();
    payload.push(0);
    let trailing = codec.seal_bytes(&payload).unwrap();
    assert_eq!(
        codec.open(&trailing).unwrap_err().reason(),
        &Refusal::Malformed
    );
    let mut zero_cycle = data();
    zero_cycle.heartbeat_cycle = heartbeat_core::Seconds::ZERO;
    let token = codec.seal(&zero_cycle).unwrap();
    let error = codec.open(&token).unwrap_err();
    assert_eq!(
        error.field_error().map(ToString::to_string).as_deref(),
        Some("`heartbeat_cycle` must be greater than zero")
    );
    // Its JSON object, as an operator's tools read it.
    let token = codec.seal(&data()).unwrap();
    let object = codec.open_json(&token).unwrap();
    assert_eq!(
        serde_json::Value::Object(object),
        serde_json::to_value(data()).unwrap()
    );
}

/// A server sealing `b1.` itself (`TOKEN_FORMAT=b1`) seals one per heartbeat: its nonces
/// come from a sequence (one fixed field, a counter one further per token, shared by the
/// codec's clones), never repeated, as random 96-bit GCM nonces would be past 2^32 tokens.
#[test]
fn b1_tokens_a_server_seals_count_their_nonces() {
    use base64::Engine as _;
    let codec = TokenCodec::new("k").unwrap().issuing(TokenFormat::Backend);
    let raw = |token: String| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token[3..])
            .unwrap()
    };
    let first = raw(codec.seal(&data()).unwrap());
    let second = raw(codec.clone().seal(&data()).unwrap());
    assert_eq!(first[..4], second[..4]);
    let count = |raw: &[u8]| u64::from_be_bytes(raw[4..12].try_into().unwrap());
    assert_eq!(count(&second), count(&first).wrapping_add(1));
    assert_eq!(codec.open(&codec.seal(&data()).unwrap()).unwrap(), data());
}

/// A `v3.` payload whose unknown fields hold a known field's name would read one way here
/// and another once re-sealed as JSON: refused, unless it is what JSON reading itself
/// leaves there (an unknown `reject_strategy` value).
#[test]
fn v3_payloads_cannot_shadow_a_known_field() {
    let codec = v3_codec("k");
    for (name, value) in [
        ("provenance", serde_json::json!("legacy")),
        ("session_limit", serde_json::json!(1)),
        ("reject_strategy", serde_json::json!("MOST_RECENT")),
    ] {
        let mut data = data();
        data.session_limit = None;
        data.extra.insert(name.to_owned(), value);
        let token = codec.seal(&data).unwrap();
        assert_eq!(
            codec.open(&token).unwrap_err().reason(),
            &Refusal::Malformed,
            "{name}"
        );
    }
    // What JSON reading keeps: an unknown strategy, among the unknown fields.
    let json: HeartbeatData = serde_json::from_str(
        r#"{"user_id":1,"asset_id":2,"heartbeat_cycle":3,"cycle_upper_tolerance":1,
            "reject_strategy":"SOMETIMES"}"#,
    )
    .unwrap();
    assert_eq!(json.extra["reject_strategy"], "SOMETIMES");
    assert_eq!(codec.open(&codec.seal(&json).unwrap()).unwrap(), json);
}

/// A `v2.` backend token with its key id taken out still opens (as tokens sealed before
/// key ids do), and names the same playback: stripping the id must not start a second
/// one (a second `checking_threshold` grace, outside the restart budget).
#[test]
fn a_v2_token_without_its_key_id_names_the_same_playback() {
    let codec = TokenCodec::new("k").unwrap();
    let token = codec.seal(&data()).unwrap();
    let (_, body) = token[3..].split_once('.').unwrap();
    let keyless = format!("v2.{body}");
    let opened = codec.open(&keyless).unwrap();
    assert_eq!(opened, data());
    assert_eq!(
        codec.token_session_id(&keyless, &opened),
        codec.token_session_id(&token, &data())
    );
    // Another token's playback is another.
    let other = codec.seal(&data()).unwrap();
    assert_ne!(
        codec.token_session_id(&other, &data()),
        codec.token_session_id(&token, &data())
    );
}
