//! Owner tokens (SPEC §4): `owner.<expiry>.<base64url HMAC-SHA256(OWNER_KEY, owner ‖ "\n"
//! ‖ expiry)>`, with the expiry in unix seconds, so that knowing an owner's `uuid` is not
//! enough to read its jobs and events, and a leaked token stops working by itself.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::model::Owner;

/// What every owner token starts with.
const PREFIX: &str = "owner.";

/// The key owner tokens are signed with (`OWNER_KEY`).
///
/// ```
/// use heartbeat_core::jobs::{Owner, OwnerKey};
///
/// let key = OwnerKey::new("owner signing key");
/// let alice = Owner::new("alice")?;
/// let now = 1_800_000_000;
/// let token = key.token(&alice, now + 86_400);
/// assert!(token.starts_with("owner.1800086400."));
/// assert!(key.verify(&alice, &token, now));
/// assert!(!key.verify(&Owner::new("bob")?, &token, now));
/// assert!(!key.verify(&alice, &token, now + 86_401), "expired");
/// # Ok::<(), heartbeat_core::jobs::JobError>(())
/// ```
#[derive(Clone)]
pub struct OwnerKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerKey(..)")
    }
}

impl OwnerKey {
    /// A key from its text.
    pub fn new(key: &str) -> Self {
        Self {
            key: key.as_bytes().to_vec(),
        }
    }

    fn mac(&self, owner: &Owner, expires: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(owner.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(expires.as_bytes());
        mac
    }

    /// The owner's token, valid until `expires` (unix seconds):
    /// `owner.<expires>.<base64url HMAC-SHA256(key, owner ‖ "\n" ‖ expires)>`.
    pub fn token(&self, owner: &Owner, expires: i64) -> String {
        let expires = expires.to_string();
        let tag = self.mac(owner, &expires).finalize().into_bytes();
        format!("{PREFIX}{expires}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Whether `token` is `owner`'s and not past its expiry at `now` (unix seconds); the
    /// tag is compared in constant time. Tokens without an expiry (made before expiries)
    /// are refused: issue new ones.
    pub fn verify(&self, owner: &Owner, token: &str, now: i64) -> bool {
        let Some((expires, encoded)) = token
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('.'))
        else {
            return false;
        };
        // A tag is 32 bytes: 43 base64url characters; nothing longer is decoded. An
        // expiry is a whole number of seconds written as `i64` writes it.
        let Ok(expiry) = expires.parse::<i64>() else {
            return false;
        };
        if encoded.len() != 43 || expiry.to_string() != expires || expiry < now {
            return false;
        }
        let Ok(tag) = URL_SAFE_NO_PAD.decode(encoded) else {
            return false;
        };
        self.mac(owner, expires).verify_slice(&tag).is_ok()
    }
}
