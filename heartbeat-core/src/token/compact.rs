//! The `v3.` server token: what the server answers heartbeats with under
//! `TOKEN_FORMAT=v3`, cheap to open and seal on CPUs with AES-NI (SPEC §3.3,
//! `docs/spec.md` "The v3 server token").
//!
//! ```text
//! key    = HKDF-SHA256(ikm = shared key as UTF-8, salt = "heartbeat token v3",
//!                      info = "aes-256-gcm-siv key", length = 32)
//! key id = base64url(HKDF-SHA256(same ikm and salt, info = "key id", length = 3))
//! nonce  = 12 random bytes, fresh for every token
//! ct     = AES-256-GCM-SIV(key, nonce, plaintext = the compact heartbeat data,
//!                          associated data = "v3")         (ciphertext ‖ 16-byte tag)
//! token  = "v3." ‖ key id ‖ "." ‖ base64url-no-padding(nonce ‖ ct)
//! ```
//!
//! AES-GCM-SIV (RFC 8452), not AES-GCM: a server seals a token per heartbeat, and random
//! 96-bit GCM nonces reach their limit of 2^32 tokens per key within a day at 50,000
//! heartbeats a second, after which a repeated nonce gives the authentication key away.
//! GCM-SIV derives a key for every nonce, so random nonces stay safe for as many tokens as
//! a fleet seals, and even a repeated nonce only shows that two tokens are the same. A
//! counted nonce would avoid repeats too, but would tell every player how many tokens its
//! instance seals.
//!
//! The plaintext is [`HeartbeatData::to_compact_vec`](crate::HeartbeatData::to_compact_vec)
//! (postcard), not JSON: only servers read these tokens, and reading it costs a fraction of
//! parsing JSON. Backends keep minting JSON tokens (`b1.`, `v2.`). The key id names the key
//! a token was sealed with, as in `v2.`, so a key rotation opens it in one try.

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::KeyInit;

use super::aead_body;
use super::{Refusal, SealError};

/// What every `v3` token starts with.
pub const PREFIX: &str = "v3.";
/// The associated data every `v3` token is sealed with.
pub const ASSOCIATED_DATA: &[u8] = b"v3";
/// HKDF-SHA256 salt of the `v3` key and key id.
pub const HKDF_SALT: &[u8] = b"heartbeat token v3";
/// HKDF-SHA256 info of the `v3` key.
pub const HKDF_INFO: &[u8] = b"aes-256-gcm-siv key";
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 12;
/// HKDF-SHA256 info of the `v3` key id.
pub const HKDF_INFO_KEY_ID: &[u8] = b"key id";

/// The `v3` key, derived once from the shared key.
#[derive(Clone)]
pub struct CompactKey {
    cipher: Aes256GcmSiv,
    id: String,
}

impl CompactKey {
    /// Derives the key and key id from the shared key (HKDF-SHA256).
    pub fn derive(shared_key: &[u8]) -> Self {
        let key = aead_body::derive::<32>(shared_key, HKDF_SALT, HKDF_INFO);
        Self {
            cipher: Aes256GcmSiv::new((&key).into()),
            id: aead_body::derive_key_id(shared_key, HKDF_SALT, HKDF_INFO_KEY_ID),
        }
    }

    /// The key id its tokens carry.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Seals a compact `payload` under a fresh random nonce, prefix included.
    pub fn seal(&self, payload: &[u8]) -> Result<String, SealError> {
        let mut token = aead_body::keyed_token::<Aes256GcmSiv>(PREFIX, &self.id, payload.len());
        aead_body::seal_random_into(&self.cipher, payload, ASSOCIATED_DATA, &mut token)?;
        Ok(token)
    }

    /// Seals `payload` under `nonce`. Deterministic: how the test vectors are made and
    /// checked. Never reuse a nonce for real tokens: use [`seal`](Self::seal).
    pub fn seal_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        payload: &[u8],
    ) -> Result<String, SealError> {
        let mut token = aead_body::keyed_token::<Aes256GcmSiv>(PREFIX, &self.id, payload.len());
        aead_body::seal_into(&self.cipher, nonce, payload, ASSOCIATED_DATA, &mut token)?;
        Ok(token)
    }

    /// Opens the body of a token (after its prefix and key id) and reads the payload with
    /// `parse`.
    pub(crate) fn open_with<T>(
        &self,
        body: &str,
        parse: impl Fn(&[u8]) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        aead_body::open_with(&self.cipher, body, ASSOCIATED_DATA, parse)
    }
}
