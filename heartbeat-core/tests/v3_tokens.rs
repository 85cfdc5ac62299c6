//! The `v3.` server token against vectors made by Python's `cryptography` (OpenSSL) and a
//! postcard encoder written from docs/spec.md: implementations independent of the
//! RustCrypto (AES-GCM-SIV) and postcard crates this codec uses.

#![allow(clippy::unwrap_used)]

mod vector_files;

use heartbeat_core::token::compact::CompactKey;
use heartbeat_core::{HeartbeatData, TokenCodec, TokenFormat};
use serde_json::Value;
use vector_files::text;

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/v3-tokens.json")).unwrap()
}

/// `made_by` names the script that made the vectors, which the repository ships.
#[test]
fn the_script_that_made_the_vectors_exists() {
    vector_files::assert_maker_ships(&vectors());
}

#[test]
fn the_rust_codec_writes_the_payload_and_seals_the_token_python_made() {
    let vectors = vectors();
    let tokens = vectors["tokens"].as_array().unwrap();
    assert!(tokens.len() >= 2);
    for vector in tokens {
        let data: HeartbeatData = serde_json::from_value(vector["data"].clone()).unwrap();
        let payload = hex::decode(text(vector, "payload_hex")).unwrap();
        assert_eq!(data.to_compact_vec(), payload, "{}", text(vector, "name"));
        let nonce: [u8; 12] = hex::decode(text(vector, "nonce_hex"))
            .unwrap()
            .try_into()
            .unwrap();
        let key = CompactKey::derive(text(vector, "shared_key").as_bytes());
        assert_eq!(
            key.seal_with_nonce(&nonce, &payload).unwrap(),
            text(vector, "token")
        );
        let codec = TokenCodec::new(text(vector, "shared_key")).unwrap();
        assert_eq!(codec.open(text(vector, "token")).unwrap(), data);
        assert_eq!(TokenFormat::of(text(vector, "token")), TokenFormat::Compact);
        assert_eq!(
            text(vector, "token")[3..7],
            *text(vector, "key_id"),
            "the key id"
        );
    }
}

#[test]
fn every_refused_v3_vector_is_refused_alike() {
    let vectors = vectors();
    let refused = vectors["refused"].as_array().unwrap();
    assert!(refused.len() >= 9);
    for vector in refused {
        let codec = TokenCodec::new(text(vector, "shared_key")).unwrap();
        let error = codec.open(text(vector, "token")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Heartbeat token is not valid.",
            "{}",
            text(vector, "why")
        );
    }
}
