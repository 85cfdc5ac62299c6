//! Heartbeat tokens: the encrypted `heartbeat_data` that backends, players and the server
//! pass around (SPEC §3.3).
//!
//! Four formats exist:
//!
//! - [`legacy`]: the CryptoJS `AES.encrypt(json, passphrase)` format of the Node.js server.
//!   Backends issue it today. It has no integrity check: see the module's docs.
//! - [`sealed`]: `v2.` + key id + base64url(nonce ‖ XChaCha20-Poly1305 ciphertext).
//!   Authenticated: any change to any byte is refused. The server answers in it by default.
//! - [`backend`]: `b1.` + base64url(nonce ‖ AES-256-GCM ciphertext). Authenticated, and
//!   made with primitives every language's standard library has: what non-Rust backends
//!   mint.
//! - [`compact`]: `v3.` + key id + base64url(nonce ‖ AES-256-GCM-SIV ciphertext of the compact
//!   payload). Authenticated; what a server answers in with `TOKEN_FORMAT=v3`, at a
//!   fraction of `v2.`'s cost. Only servers read it.
//!
//! Only an authenticated token begins an authenticated session: the data of a legacy
//! token open as [`Provenance::Legacy`](crate::Provenance), and a token the server
//! re-issues for such a session carries that provenance sealed inside (SPEC §3.3).
//!
//! [`TokenCodec`] opens both (legacy only when allowed) and seals the configured one.
//! Every refusal is the same [`InvalidToken`] to the outside world.

mod aead_body;
pub mod backend;
pub mod compact;
mod format;
pub mod legacy;
mod nonce;
mod refusal;
pub mod sealed;
mod session_id;

pub use format::TokenFormat;
pub use refusal::{KeyError, MAX_TOKEN_LEN, Refusal, SealError};
use refusal::{parse_object, random_bytes};

use std::fmt;

use serde_json::{Map, Value};

use crate::{DataError, HeartbeatData, Provenance};

/// A token that cannot be opened or does not hold valid heartbeat data.
///
/// Its `Display` is the one message the server answers with (406), whatever the reason;
/// [`reason`](Self::reason) is there for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Heartbeat token is not valid.")]
pub struct InvalidToken {
    reason: Refusal,
    /// The token was authentic (an authenticated format that opened under our key): what
    /// is wrong with its data was written by a key holder, and may be told.
    authentic: bool,
}

impl InvalidToken {
    pub(crate) fn new(reason: Refusal) -> Self {
        Self {
            reason,
            authentic: false,
        }
    }

    /// Why the token was refused (for logs; see [`field_error`](Self::field_error) for
    /// what may be shown to the sender).
    pub fn reason(&self) -> &Refusal {
        &self.reason
    }

    /// What is wrong with the data of an authentic token (a `v2.` or `b1.` token that
    /// opened under the server's key, so only a key holder wrote it): the missing or
    /// invalid field, which the answer may name without telling a forger anything
    /// (SPEC §3.2 "Errors that help"). `None` for every other refusal, which stays the
    /// one uniform 406.
    pub fn field_error(&self) -> Option<&DataError> {
        match &self.reason {
            Refusal::Data(error) if self.authentic => Some(error),
            _ => None,
        }
    }
}

/// A token's plaintext, by what its format holds.
enum Plaintext<'a> {
    /// JSON text (`v2.`, `b1.`, legacy).
    Json(&'a [u8]),
    /// A compact payload (`v3.`).
    Compact(&'a [u8]),
}

/// Opens and seals heartbeat tokens with one shared key.
///
/// Keys are derived once, here: opening a `v2.` token or a legacy token issued by this
/// codec derives nothing per request.
///
/// ```
/// use heartbeat_core::{HeartbeatData, Provenance, TokenCodec, TokenFormat};
///
/// let codec = TokenCodec::new("topsecret")?;
/// let data: HeartbeatData = serde_json::from_str(r#"{"user_id":13,"asset_id":14,
///     "heartbeat_cycle":3,"cycle_upper_tolerance":0.8,"timestamp":"2018-06-05T16:16:14.418Z",
///     "session_limit":1,"checking_threshold":3,"sessions_edge":10}"#)?;
///
/// let token = codec.seal(&data)?;
/// assert!(token.starts_with("v2."));
/// assert_eq!(codec.open(&token)?, data);
///
/// // Backends still issue CryptoJS tokens; they open too unless refused, as legacy-begun.
/// let legacy = codec.clone().issuing(TokenFormat::Legacy).seal(&data)?;
/// assert_eq!(codec.open(&legacy)?.user_id, data.user_id);
/// assert_eq!(codec.open(&legacy)?.provenance, Provenance::Legacy);
///
/// // Backends in other languages mint `b1.` tokens (AES-256-GCM): authenticated.
/// let backend = codec.clone().issuing(TokenFormat::Backend).seal(&data)?;
/// assert_eq!(codec.open(&backend)?, data);
/// assert!(codec.clone().accepting_legacy(false).open(&legacy).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TokenCodec {
    current: Keys,
    /// Keys of earlier rotations, newest first: tokens sealed with them still open.
    previous: std::sync::Arc<[Keys]>,
    /// Names the session a backend token begins (always the current key's).
    session_ids: session_id::SessionIdKey,
    issue: TokenFormat,
    accept_legacy: bool,
}

/// The keys of one shared key, one per format, each derived once.
#[derive(Clone)]
struct Keys {
    sealed: sealed::SealedKey,
    legacy: legacy::LegacyKey,
    backend: backend::BackendKey,
    compact: compact::CompactKey,
}

impl Keys {
    fn derive(shared_key: &str) -> Result<Self, KeyError> {
        if shared_key.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self {
            sealed: sealed::SealedKey::derive(shared_key.as_bytes()),
            legacy: legacy::LegacyKey::new(shared_key.as_bytes())?,
            backend: backend::BackendKey::derive(shared_key.as_bytes()),
            compact: compact::CompactKey::derive(shared_key.as_bytes()),
        })
    }
}

impl fmt::Debug for TokenCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCodec")
            .field("issue", &self.issue)
            .field("accept_legacy", &self.accept_legacy)
            .field("previous_keys", &self.previous.len())
            .finish_non_exhaustive()
    }
}

impl TokenCodec {
    /// A codec for `shared_key` that issues [`TokenFormat::Sealed`] and accepts legacy tokens.
    pub fn new(shared_key: &str) -> Result<Self, KeyError> {
        Ok(Self {
            current: Keys::derive(shared_key)?,
            previous: std::sync::Arc::new([]),
            session_ids: session_id::SessionIdKey::derive(shared_key.as_bytes()),
            issue: TokenFormat::Sealed,
            accept_legacy: true,
        })
    }

    /// The same codec, also opening tokens sealed with `previous` keys (a key rotation:
    /// SPEC §6 `SHARED_KEY_PREVIOUS`), tried in order after the current key. Tokens are
    /// always sealed with the current key, so a playing device moves to it at its next
    /// heartbeat. A token no key opens costs one try per key, whatever is wrong with it.
    ///
    /// ```
    /// use heartbeat_core::{HeartbeatData, Id, TokenCodec};
    ///
    /// let data = HeartbeatData::builder(Id::Int(1), Id::Int(2)).build()?;
    /// let old = TokenCodec::new("the key of last year")?.seal(&data)?;
    /// let codec = TokenCodec::new("the key of this year")?.with_previous_keys(["the key of last year"])?;
    /// assert_eq!(codec.open(&old)?, data);
    /// assert!(TokenCodec::new("the key of this year")?.open(&old).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_previous_keys<'a>(
        mut self,
        previous: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, KeyError> {
        self.previous = previous
            .into_iter()
            .map(Keys::derive)
            .collect::<Result<Vec<_>, _>>()?
            .into();
        Ok(self)
    }

    /// The same codec, issuing `format`.
    pub fn issuing(mut self, format: TokenFormat) -> Self {
        self.issue = format;
        self
    }

    /// The same codec, accepting legacy tokens or not.
    pub fn accepting_legacy(mut self, accept: bool) -> Self {
        self.accept_legacy = accept;
        self
    }

    /// The format [`seal`](Self::seal) writes.
    pub fn issue_format(&self) -> TokenFormat {
        self.issue
    }

    /// Seals `data` in the configured format.
    pub fn seal(&self, data: &HeartbeatData) -> Result<String, SealError> {
        match self.issue {
            TokenFormat::Compact => self.seal_bytes(&data.to_compact_vec()),
            _ => self.seal_bytes(&data.to_json_vec()),
        }
    }

    /// Seals any plaintext in the configured format: JSON text, or for
    /// [`TokenFormat::Compact`] a compact payload.
    pub fn seal_bytes(&self, plaintext: &[u8]) -> Result<String, SealError> {
        let token = match self.issue {
            TokenFormat::Sealed => self.current.sealed.seal(plaintext)?,
            TokenFormat::Legacy => self.current.legacy.seal(plaintext)?,
            TokenFormat::Backend => self.current.backend.seal(plaintext)?,
            TokenFormat::Compact => self.current.compact.seal(plaintext)?,
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(SealError::TooLarge { len: token.len() });
        }
        Ok(token)
    }

    /// Opens a token to its heartbeat data. The data of a legacy token are
    /// [`Provenance::Legacy`], whatever they say.
    pub fn open(&self, token: &str) -> Result<HeartbeatData, InvalidToken> {
        let mut data = self
            .open_with(token, |plaintext| match plaintext {
                Plaintext::Json(json) => {
                    HeartbeatData::from_json_slice(json).map_err(Refusal::from)
                }
                Plaintext::Compact(payload) => {
                    HeartbeatData::from_compact_slice(payload).map_err(Refusal::from)
                }
            })
            .map_err(|mut invalid| {
                invalid.authentic = TokenFormat::of(token).is_authenticated();
                invalid
            })?;
        if !TokenFormat::of(token).is_authenticated() {
            data.provenance = Provenance::Legacy;
        }
        Ok(data)
    }

    /// Opens a token of an authenticated session only (SPEC §3.3 "Provenance"): a legacy
    /// token, which anyone can forge by flipping bits, and a sealed token of a session a
    /// legacy token began are refused like any invalid token. For the calls that act on
    /// or reveal other sessions of the user (takeover, notices).
    pub fn open_authenticated(&self, token: &str) -> Result<HeartbeatData, InvalidToken> {
        let data = self.open(token)?;
        if data.provenance.is_authenticated() {
            Ok(data)
        } else {
            Err(InvalidToken::new(Refusal::Unauthenticated))
        }
    }

    /// The id of the session `token` starts when it starts one (a backend token; a token
    /// whose session is gone, cloned or too early): the same for every presentation of the
    /// same token, on every server sharing the key, so that a device re-sending one token
    /// continues one playback instead of starting an uncounted new session each time
    /// (SPEC §3.2). `data` are the token's, as [`open`](Self::open) read them.
    ///
    /// The id is a keyed hash (HMAC-SHA256 under a key derived from the shared key) of the
    /// token (of a `v2.` or `b1.` token, the prefix through its random nonce; of a legacy
    /// token, all of it in a canonical form: hex in lower case, base64 without padding),
    /// and its provenance; shaped as a UUID v4. Nobody without the key
    /// can tell it from a random one or guess it.
    pub fn token_session_id(&self, token: &str, data: &HeartbeatData) -> String {
        self.session_ids
            .session_id(token, data.provenance, self.current.sealed.id())
    }

    /// Opens a token to its JSON object, without checking it is heartbeat data (a `v3.`
    /// token's data are checked: its payload is not JSON).
    pub fn open_json(&self, token: &str) -> Result<Map<String, Value>, InvalidToken> {
        self.open_with(token, |plaintext| match plaintext {
            Plaintext::Json(json) => parse_object(json),
            Plaintext::Compact(payload) => {
                let data = HeartbeatData::from_compact_slice(payload)?;
                parse_object(&data.to_json_vec())
            }
        })
    }

    /// Checks the length, decrypts in the token's format and reads the plaintext with
    /// `parse`.
    fn open_with<T>(
        &self,
        token: &str,
        parse: impl Fn(Plaintext<'_>) -> Result<T, Refusal>,
    ) -> Result<T, InvalidToken> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(InvalidToken::new(Refusal::TooLong));
        }
        let json = |plaintext: &[u8]| parse(Plaintext::Json(plaintext));
        let v2_body = token.strip_prefix(sealed::PREFIX);
        let backend_body = token.strip_prefix(backend::PREFIX);
        let mut keys = std::iter::once(&self.current).chain(self.previous.iter());
        // A v3 token names its key: one try.
        if let Some(rest) = token.strip_prefix(compact::PREFIX) {
            let opened = match aead_body::split_key_id(rest) {
                Some((id, body)) => match keys.find(|keys| keys.compact.id() == id) {
                    Some(keys) => keys
                        .compact
                        .open_with(body, |payload| parse(Plaintext::Compact(payload))),
                    None => Err(Refusal::Decryption),
                },
                None => Err(Refusal::Malformed),
            };
            return opened.map_err(InvalidToken::new);
        }
        if v2_body.is_none() && backend_body.is_none() && !self.accept_legacy {
            return Err(InvalidToken::new(Refusal::Malformed));
        }
        // So does a v2 token sealed since key ids.
        if let Some((id, body)) = v2_body.and_then(aead_body::split_key_id) {
            let opened = match keys.find(|keys| keys.sealed.id() == id) {
                Some(keys) => keys.sealed.open_with(body, json),
                None => Err(Refusal::Decryption),
            };
            return opened.map_err(InvalidToken::new);
        }
        // Tokens without a key id (legacy and b1 ones, and v2 ones sealed before key ids):
        // each key in turn; the current key's refusal says what is wrong with the token.
        let mut first_refusal = None;
        for keys in keys {
            let opened = match (v2_body, backend_body) {
                (Some(body), _) => keys.sealed.open_with(body, json),
                (None, Some(body)) => keys.backend.open_with(body, json),
                (None, None) => keys.legacy.open_with(token, json),
            };
            match opened {
                Ok(opened) => return Ok(opened),
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        Err(InvalidToken::new(
            first_refusal.unwrap_or(Refusal::Malformed),
        ))
    }
}
