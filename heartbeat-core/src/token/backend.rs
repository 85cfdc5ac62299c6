//! The `b1.` backend token: an authenticated token any backend mints with its language's
//! standard crypto library (SPEC §3.3 "Authenticated tokens from any backend").
//!
//! ```text
//! key   = HKDF-SHA256(ikm = shared key as UTF-8,
//!                     salt = "heartbeat backend token b1",
//!                     info = "aes-256-gcm key", length = 32)
//! nonce = 12 random bytes, fresh for every token
//! ct    = AES-256-GCM(key, nonce, plaintext = heartbeat_data as UTF-8 JSON,
//!                     associated data = "b1")            (ciphertext ‖ 16-byte tag)
//! token = "b1." ‖ base64url-no-padding(nonce ‖ ct)
//! ```
//!
//! AES-256-GCM and HKDF-SHA256 are in the standard libraries of Node (`node:crypto`),
//! Java (`javax.crypto`, HKDF as two `HmacSHA256` calls), .NET (`AesGcm`, `HKDF`), Go
//! (`crypto/aes`, `crypto/cipher`, `crypto/hkdf`), PHP (`openssl_encrypt`, `hash_hkdf`)
//! and Python (`cryptography`). Random 96-bit nonces are safe here because a backend mints
//! one token per playback, not per heartbeat: far below the 2^32 tokens per key that
//! random GCM nonces allow. A server that seals `b1.` tokens itself (`TOKEN_FORMAT=b1`)
//! seals one per heartbeat, so it takes its nonces from a nonce sequence (unique by
//! construction, `nonce.rs`) instead; readers cannot tell the difference.
//!
//! `docs/backends.md` describes the format byte for byte, with test vectors
//! (`heartbeat-core/tests/vectors/backend-tokens.json`) and snippets for six languages.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;

use std::sync::Arc;

use super::nonce::NonceSequence;
use super::{Refusal, SealError, aead_body};

/// What every backend token starts with.
pub const PREFIX: &str = "b1.";
/// The associated data every backend token is sealed with.
pub const ASSOCIATED_DATA: &[u8] = b"b1";
/// HKDF-SHA256 salt of the backend token key.
pub const HKDF_SALT: &[u8] = b"heartbeat backend token b1";
/// HKDF-SHA256 info of the backend token key.
pub const HKDF_INFO: &[u8] = b"aes-256-gcm key";
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 12;

/// The `b1` key, derived once from the shared key.
#[derive(Clone)]
pub struct BackendKey {
    cipher: Aes256Gcm,
    /// Where a server's own `b1.` tokens get their nonces.
    nonces: Arc<NonceSequence>,
}

impl BackendKey {
    /// Derives the AES-256-GCM key from the shared key (HKDF-SHA256, the salt and info
    /// above).
    pub fn derive(shared_key: &[u8]) -> Self {
        let key = aead_body::derive::<32>(shared_key, HKDF_SALT, HKDF_INFO);
        Self {
            cipher: Aes256Gcm::new((&key).into()),
            nonces: Arc::new(NonceSequence::new()),
        }
    }

    /// Seals `plaintext` under the next nonce of this key's nonce sequence (unique, so a
    /// server may seal a token per heartbeat), prefix included.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, SealError> {
        self.seal_with_nonce(&self.nonces.next(), plaintext)
    }

    /// Seals `plaintext` under `nonce`. Deterministic: how the test vectors are made and
    /// checked. Never reuse a nonce for real tokens: use [`seal`](Self::seal).
    pub fn seal_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<String, SealError> {
        let mut token = String::from(PREFIX);
        aead_body::seal_into(&self.cipher, nonce, plaintext, ASSOCIATED_DATA, &mut token)?;
        Ok(token)
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
