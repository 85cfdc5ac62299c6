//! Legacy tokens sealed here open with the real `crypto-js@3`, and the other way round
//! (SPEC §3.3, §7), from fixed vectors that `tools/cryptojs/make-vectors.js` made with it:
//! unicode passphrases and ids, and every PKCS#7 padding length from 1 to 16.
//!
//! AES-CBC is deterministic for a key and IV, so sealing the same plaintext with the same
//! salt and IV to the same bytes as crypto-js proves that crypto-js opens what we seal.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use heartbeat_core::token::legacy::{self, LegacyKey};
use heartbeat_core::{HeartbeatData, TokenCodec, TokenFormat};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    roundtrip: Vec<Roundtrip>,
    wrong_passphrase: Vec<WrongPassphrase>,
}

#[derive(Deserialize)]
struct Roundtrip {
    passphrase: String,
    salt_hex: String,
    iv_hex: String,
    plaintext: String,
    padding: usize,
    token: String,
}

#[derive(Deserialize)]
struct WrongPassphrase {
    passphrase: String,
    token: String,
    refused_by_cryptojs: bool,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("vectors/cryptojs-roundtrip.json")).unwrap()
}

fn hex16(text: &str) -> [u8; 16] {
    hex::decode(text).unwrap().try_into().unwrap()
}

#[test]
fn the_vectors_cover_every_padding_length_and_unicode() {
    let vectors = vectors().roundtrip;
    let paddings: BTreeSet<usize> = vectors.iter().map(|vector| vector.padding).collect();
    assert_eq!(paddings, (1..=16).collect());
    assert!(vectors.iter().any(|vector| !vector.passphrase.is_ascii()));
    assert!(vectors.iter().any(|vector| !vector.plaintext.is_ascii()));
}

#[test]
fn what_cryptojs_seals_we_seal_to_the_same_bytes() {
    for vector in vectors().roundtrip {
        let sealed = legacy::seal_with(
            vector.passphrase.as_bytes(),
            &hex16(&vector.salt_hex),
            &hex16(&vector.iv_hex),
            vector.plaintext.as_bytes(),
        );
        assert_eq!(sealed, vector.token, "padding {}", vector.padding);
    }
}

#[test]
fn what_cryptojs_seals_opens_to_the_exact_plaintext_and_data() {
    for vector in vectors().roundtrip {
        let key = LegacyKey::new(vector.passphrase.as_bytes()).unwrap();
        assert_eq!(
            key.open_plaintext(&vector.token).unwrap(),
            vector.plaintext.as_bytes()
        );
        let codec = TokenCodec::new(&vector.passphrase).unwrap();
        let expected: HeartbeatData = serde_json::from_str(&vector.plaintext).unwrap();
        // Legacy tokens open as legacy-begun (SPEC §3.3), whatever they carry.
        let expected = HeartbeatData {
            provenance: heartbeat_core::Provenance::Legacy,
            ..expected
        };
        assert_eq!(codec.open(&vector.token).unwrap(), expected);
    }
}

#[test]
fn data_sealed_by_the_codec_opens_as_cryptojs_would() {
    for vector in vectors().roundtrip {
        let data: HeartbeatData = serde_json::from_str(&vector.plaintext).unwrap();
        let codec = TokenCodec::new(&vector.passphrase)
            .unwrap()
            .issuing(TokenFormat::Legacy);
        let token = codec.seal(&data).unwrap();
        // The layout crypto-js reads: hex salt, hex IV, then standard base64.
        assert!(
            token[..64].bytes().all(|b| b.is_ascii_hexdigit()),
            "{token}"
        );
        // Opening is byte-for-byte crypto-js's (the vectors above): the plaintext is JSON
        // that reads back to the same data.
        let key = LegacyKey::new(vector.passphrase.as_bytes()).unwrap();
        let plaintext = key.open_plaintext(&token).unwrap();
        let reread: HeartbeatData = serde_json::from_slice(&plaintext).unwrap();
        assert_eq!(reread, data);
    }
}

#[test]
fn tokens_cryptojs_refuses_with_another_passphrase_are_refused_here() {
    for vector in vectors().wrong_passphrase {
        assert!(vector.refused_by_cryptojs);
        let codec = TokenCodec::new(&vector.passphrase).unwrap();
        assert!(codec.open(&vector.token).is_err());
    }
}

/// crypto-js reads base64 without its `=` padding and hex in either case, so tokens that
/// lost their padding (a URL-unsafe transport) or came upper-cased open too (SPEC §3.5).
#[test]
fn tokens_without_base64_padding_or_in_upper_case_hex_open() {
    let mut unpadded = 0;
    for vector in vectors().roundtrip {
        let codec = TokenCodec::new(&vector.passphrase).unwrap();
        let expected = codec.open(&vector.token).unwrap();
        let stripped = vector.token.trim_end_matches('=');
        unpadded += usize::from(stripped.len() != vector.token.len());
        assert_eq!(codec.open(stripped).unwrap(), expected);
        let upper = format!(
            "{}{}",
            vector.token[..64].to_ascii_uppercase(),
            &vector.token[64..]
        );
        assert_eq!(codec.open(&upper).unwrap(), expected);
    }
    assert!(unpadded > 0, "some vectors end in padding");
}
