//! The id of the session a backend token begins (SPEC §3.2: a backend token presented
//! again is the same playback).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{TokenFormat, aead_body, legacy, sealed};
use crate::Provenance;

const HKDF_SALT: &[u8] = b"heartbeat backend session id";
/// Base64url characters of the longest nonce (XChaCha20's 24 bytes); a `b1.` or `v3.`
/// token's 12-byte nonce and the first bytes of its ciphertext fit in them.
const NONCE_CHARS: usize = 32;
const HKDF_INFO: &[u8] = b"hmac-sha256 key";

/// The HMAC key that names backend tokens' sessions, derived once from the shared key.
#[derive(Clone)]
pub(crate) struct SessionIdKey {
    mac: Hmac<Sha256>,
}

impl SessionIdKey {
    pub(crate) fn derive(shared_key: &[u8]) -> Self {
        let key = aead_body::derive::<32>(shared_key, HKDF_SALT, HKDF_INFO);
        Self {
            // HMAC takes keys of any length: this cannot fail.
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!()),
        }
    }

    /// A UUID-v4-shaped id from HMAC(provenance ‖ canonical token). `v2_key_id` is the
    /// current key's id, which a `v2.` token sealed before key ids is read with.
    pub(crate) fn session_id(
        &self,
        token: &str,
        provenance: Provenance,
        v2_key_id: &str,
    ) -> String {
        let mut mac = self.mac.clone();
        mac.update(match provenance {
            Provenance::Authenticated => b"authenticated\0",
            Provenance::Legacy => b"legacy\0\0\0\0\0\0\0\0",
        });
        match TokenFormat::of(token) {
            // Strict base64url without padding: one spelling per token. Its nonce (random
            // or from a nonce sequence: unique either way, and bound to the rest by the AEAD tag: only the key's holder makes another
            // token with it) names it: the prefix up to the nonce's end is hashed.
            // A `v2.` token without its key id (as tokens were sealed before key ids) is
            // the same token with the current key's: taking the id out must not start a
            // second playback.
            TokenFormat::Sealed
                if let Some(body) = token
                    .strip_prefix(sealed::PREFIX)
                    .filter(|rest| aead_body::split_key_id(rest).is_none()) =>
            {
                mac.update(sealed::PREFIX.as_bytes());
                mac.update(v2_key_id.as_bytes());
                mac.update(b".");
                mac.update(&body.as_bytes()[..NONCE_CHARS.min(body.len())]);
            }
            TokenFormat::Sealed | TokenFormat::Backend | TokenFormat::Compact => {
                let nonce_end = token
                    .rfind('.')
                    .map_or(0, |dot| dot + 1 + NONCE_CHARS)
                    .min(token.len());
                mac.update(&token.as_bytes()[..nonce_end]);
            }
            // Hex in either case and base64 with or without padding open alike (SPEC
            // §3.5): all spellings of one token name one session.
            TokenFormat::Legacy => {
                let (header, body) = token.split_at(legacy::HEADER_HEX_LEN.min(token.len()));
                mac.update(header.to_ascii_lowercase().as_bytes());
                mac.update(body.trim_end_matches('=').as_bytes());
            }
        }
        let digest = mac.finalize().into_bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_legacy_token_name_one_session_and_provenance_separates() {
        let key = SessionIdKey::derive(b"k");
        let lower = format!("{}{}", "ab".repeat(32), "QUJD==");
        let upper = format!("{}{}", "AB".repeat(32), "QUJD");
        let id = key.session_id(&lower, Provenance::Legacy, "AAAA");
        assert_eq!(id, key.session_id(&upper, Provenance::Legacy, "AAAA"));
        assert_ne!(
            id,
            key.session_id(&lower, Provenance::Authenticated, "AAAA")
        );
        assert_ne!(
            id,
            SessionIdKey::derive(b"other").session_id(&lower, Provenance::Legacy, "AAAA")
        );
        assert_eq!(
            uuid::Uuid::parse_str(&id).map(|u| u.get_version_num()),
            Ok(4)
        );
    }
}
