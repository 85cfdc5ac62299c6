//! The authenticated `v2.` token format.
//!
//! `token = "v2." ‖ key id ‖ "." ‖ base64url-no-pad(nonce, 24 B ‖ XChaCha20-Poly1305(json) ‖
//! tag, 16 B)`, with the prefix `v2` as associated data and the key derived once from the
//! shared key by HKDF-SHA256. Any change to any byte, a truncation, another key or another
//! version is refused.
//!
//! The key id (4 base64url characters: 3 bytes HKDF-derived from the shared key, apart
//! from the cipher key) names the key a token was sealed with, so that during a key
//! rotation a token is opened with its own key in one try. Tokens sealed before key ids
//! (`"v2." ‖ body`, no second dot: base64url has no `.`) still open, trying each key. The
//! id reveals nothing a sealed token does not: a guess of the shared key can be checked
//! against any token's tag as well.
//!
//! XChaCha20-Poly1305 rather than AES-256-GCM: its 192-bit nonces can be drawn at random for
//! as many tokens as a busy fleet issues under one key (AES-GCM's 96-bit random nonces reach
//! their safe limit of 2^32 tokens in a day at 50,000 heartbeats per second).

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::KeyInit;
use serde_json::{Map, Value};

use super::aead_body::{self, split_key_id};
use super::{Refusal, SealError, parse_object};

/// What every `v2` token starts with.
pub const PREFIX: &str = "v2.";
const ASSOCIATED_DATA: &[u8] = b"v2";
const HKDF_SALT: &[u8] = b"heartbeat token v2";
const HKDF_INFO: &[u8] = b"xchacha20poly1305 key";
const HKDF_INFO_KEY_ID: &[u8] = b"key id";

/// The `v2` key, derived once from the shared key.
#[derive(Clone)]
pub struct SealedKey {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl SealedKey {
    /// Derives the token key from the shared key (HKDF-SHA256).
    pub fn derive(shared_key: &[u8]) -> Self {
        let key = aead_body::derive::<32>(shared_key, HKDF_SALT, HKDF_INFO);
        Self {
            cipher: XChaCha20Poly1305::new((&key).into()),
            id: aead_body::derive_key_id(shared_key, HKDF_SALT, HKDF_INFO_KEY_ID),
        }
    }

    /// The key id its tokens carry.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` under a fresh random nonce, prefix included.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, SealError> {
        let mut token =
            aead_body::keyed_token::<XChaCha20Poly1305>(PREFIX, &self.id, plaintext.len());
        aead_body::seal_random_into(&self.cipher, plaintext, ASSOCIATED_DATA, &mut token)?;
        Ok(token)
    }

    /// Opens the part of a token after [`PREFIX`] (with or without a key id).
    pub fn open(&self, rest: &str) -> Result<Map<String, Value>, Refusal> {
        let body = split_key_id(rest).map_or(rest, |(_, body)| body);
        self.open_with(body, parse_object)
    }

    /// Opens the part of a token after [`PREFIX`] and reads the plaintext with `parse`.
    pub(crate) fn open_with<T>(
        &self,
        body: &str,
        parse: impl Fn(&[u8]) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        aead_body::open_with(&self.cipher, body, ASSOCIATED_DATA, parse)
    }
}
