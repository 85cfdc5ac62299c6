//! Owner tokens (SPEC §4): `owner.<base64url HMAC-SHA256(OWNER_KEY, owner)>`, so that
//! knowing an owner's `uuid` is not enough to read its jobs and events.

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
/// let token = key.token(&alice);
/// assert!(token.starts_with("owner."));
/// assert!(key.verify(&alice, &token));
/// assert!(!key.verify(&Owner::new("bob")?, &token));
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

    fn mac(&self, owner: &Owner) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(owner.as_str().as_bytes());
        mac
    }

    /// The owner's token: `owner.<base64url HMAC-SHA256(key, owner)>`.
    pub fn token(&self, owner: &Owner) -> String {
        let tag = self.mac(owner).finalize().into_bytes();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Whether `token` is `owner`'s, compared in constant time.
    pub fn verify(&self, owner: &Owner, token: &str) -> bool {
        let Some(encoded) = token.strip_prefix(PREFIX) else {
            return false;
        };
        // A tag is 32 bytes: 43 base64url characters; nothing longer is decoded.
        if encoded.len() != 43 {
            return false;
        }
        let Ok(tag) = URL_SAFE_NO_PAD.decode(encoded) else {
            return false;
        };
        self.mac(owner).verify_slice(&tag).is_ok()
    }
}
