//! The crypto-js test vectors of `tests/vectors/cryptojs-tokens.json` (SPEC §3.3), made by
//! the real `crypto-js@3`: fixed and random tokens, tokens that must be refused, and the
//! legacy format's bit-flip weakness.

#![allow(clippy::unwrap_used)]

use heartbeat_core::token::Refusal;
use heartbeat_core::token::legacy::{self, LegacyKey};
use heartbeat_core::{HeartbeatData, Id, TokenCodec};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/cryptojs-tokens.json")).expect("vectors are JSON")
}

fn field<'a>(vector: &'a Value, name: &str) -> &'a str {
    vector[name]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {name} missing in {vector}"))
}

fn hex16(text: &str) -> [u8; 16] {
    hex::decode(text)
        .expect("hex")
        .try_into()
        .expect("16 bytes")
}

#[test]
fn fixed_vectors_seal_to_the_exact_token_and_open_to_the_exact_plaintext() {
    let vectors = vectors();
    let fixed = vectors["fixed"].as_array().expect("fixed vectors");
    assert!(fixed.len() >= 5);
    for vector in fixed {
        let passphrase = field(vector, "passphrase").as_bytes();
        let salt = hex16(field(vector, "salt_hex"));
        let iv = hex16(field(vector, "iv_hex"));
        let plaintext = field(vector, "plaintext");
        let token = field(vector, "token");

        assert_eq!(
            hex::encode(legacy::derive_key(passphrase, &salt)),
            field(vector, "key_hex")
        );
        assert_eq!(
            legacy::seal_with(passphrase, &salt, &iv, plaintext.as_bytes()),
            token
        );
        let key = LegacyKey::new(passphrase).unwrap();
        assert_eq!(key.open_plaintext(token).unwrap(), plaintext.as_bytes());
        let expected: Value = serde_json::from_str(plaintext).unwrap();
        assert_eq!(Value::Object(key.open(token).unwrap()), expected);
    }
}

#[test]
fn random_vectors_open_to_the_exact_plaintext() {
    let vectors = vectors();
    let random = vectors["random"].as_array().expect("random vectors");
    assert!(!random.is_empty());
    for vector in random {
        let key = LegacyKey::new(field(vector, "passphrase").as_bytes()).unwrap();
        let plaintext = field(vector, "plaintext");
        assert_eq!(
            key.open_plaintext(field(vector, "token")).unwrap(),
            plaintext.as_bytes(),
            "{vector}"
        );
    }
}

#[test]
fn invalid_vectors_are_refused_with_the_one_public_error() {
    let vectors = vectors();
    let invalid = vectors["invalid"].as_array().expect("invalid vectors");
    assert!(invalid.len() >= 10);
    for vector in invalid {
        let passphrase = field(vector, "passphrase");
        let token = field(vector, "token");
        let refusal = LegacyKey::new(passphrase.as_bytes())
            .unwrap()
            .open(token)
            .unwrap_err();
        let error = TokenCodec::new(passphrase)
            .unwrap()
            .open(token)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Heartbeat token is not valid.",
            "{}",
            field(vector, "why")
        );
        let expected = match field(vector, "why") {
            "plaintext is not JSON" => Some(Refusal::NotJson),
            "plaintext is JSON but not an object" => Some(Refusal::NotAnObject),
            "ciphertext not base64"
            | "salt only"
            | "salt and iv only"
            | "non-hex salt"
            | "empty string"
            | "ciphertext not a whole block" => Some(Refusal::Malformed),
            _ => None,
        };
        if let Some(expected) = expected {
            assert_eq!(refusal, expected, "{}", field(vector, "why"));
        }
    }
}

#[test]
fn legacy_bit_flip_is_the_known_weakness_of_the_legacy_format() {
    let vectors = vectors();
    let flip = &vectors["legacy_bit_flip"];
    let codec = TokenCodec::new(field(flip, "passphrase")).unwrap();

    let original = codec.open(field(flip, "original_token")).unwrap();
    let forged = codec.open(field(flip, "forged_token")).unwrap();
    assert_eq!(original.user_id, Id::Int(13));
    // Without the key, the forger became user 93: the legacy format cannot notice.
    assert_eq!(forged.user_id, Id::Int(93));
    let expected: HeartbeatData = serde_json::from_str(field(flip, "forged_plaintext")).unwrap();
    // What the forger gains: a legacy-begun session, never an authenticated one (SPEC §3.3).
    assert_eq!(forged.provenance, heartbeat_core::Provenance::Legacy);
    assert_eq!(
        forged,
        HeartbeatData {
            provenance: heartbeat_core::Provenance::Legacy,
            ..expected
        }
    );
}

#[test]
fn the_same_bit_flip_against_a_v2_token_is_refused() {
    let vectors = vectors();
    let flip = &vectors["legacy_bit_flip"];
    let codec = TokenCodec::new(field(flip, "passphrase")).unwrap();
    let data = codec.open(field(flip, "original_token")).unwrap();
    let token = codec.seal(&data).unwrap();
    assert!(token.starts_with("v2."));

    // Flip every bit of every byte of the sealed body, one at a time (`v2.` ‖ key id ‖
    // `.` ‖ body).
    let (key_id, body) = token[3..].split_once('.').unwrap();
    let raw =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, body).unwrap();
    for index in 0..raw.len() {
        for bit in 0..8 {
            let mut forged = raw.clone();
            forged[index] ^= 1 << bit;
            let forged = format!(
                "v2.{key_id}.{}",
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &forged)
            );
            let refusal = codec.open(&forged).unwrap_err();
            assert_eq!(refusal.reason(), &Refusal::Decryption);
        }
    }
}
