//! The `b1.` backend token format against vectors made by Node's `node:crypto` (OpenSSL),
//! an implementation independent of the RustCrypto crates (docs/backends.md).

#![allow(clippy::unwrap_used)]

mod vector_files;

use heartbeat_core::token::backend::BackendKey;
use heartbeat_core::{HeartbeatData, Provenance, TokenCodec, TokenFormat};
use serde_json::Value;
use vector_files::text;

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/backend-tokens.json")).unwrap()
}

/// `made_by` names the script that made the vectors, which the repository ships.
#[test]
fn the_script_that_made_the_vectors_exists() {
    vector_files::assert_maker_ships(&vectors());
}

#[test]
fn the_rust_codec_seals_what_node_seals_and_opens_it() {
    for vector in vectors()["tokens"].as_array().unwrap() {
        let key = BackendKey::derive(text(vector, "shared_key").as_bytes());
        let nonce: [u8; 12] = hex::decode(text(vector, "nonce_hex"))
            .unwrap()
            .try_into()
            .unwrap();
        let plaintext = text(vector, "plaintext");
        assert_eq!(
            key.seal_with_nonce(&nonce, plaintext.as_bytes()).unwrap(),
            text(vector, "token")
        );
        let codec = TokenCodec::new(text(vector, "shared_key")).unwrap();
        let opened = codec.open(text(vector, "token")).unwrap();
        let expected: HeartbeatData = serde_json::from_str(plaintext).unwrap();
        assert_eq!(opened, expected);
        assert_eq!(opened.provenance, Provenance::Authenticated);
        assert!(codec.open_authenticated(text(vector, "token")).is_ok());
        assert_eq!(TokenFormat::of(text(vector, "token")), TokenFormat::Backend);
    }
}

#[test]
fn every_tampered_b1_token_is_refused_alike() {
    for vector in vectors()["refused"].as_array().unwrap() {
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

#[test]
fn b1_tokens_open_under_a_previous_key_and_without_legacy() {
    let token = text(&vectors()["tokens"][0], "token").to_owned();
    let rotated = TokenCodec::new("the new key")
        .unwrap()
        .with_previous_keys(["topsecret"])
        .unwrap()
        .accepting_legacy(false);
    assert_eq!(rotated.open(&token).unwrap().user_id.to_string(), "13");
    assert!(
        TokenCodec::new("the new key")
            .unwrap()
            .open(&token)
            .is_err()
    );
}
