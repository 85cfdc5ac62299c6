//! Heartbeat tokens: the encrypted `heartbeat_data` that backends, players and the server
//! pass around (SPEC §3.3).
//!
//! Two formats exist:
//!
//! - [`legacy`]: the CryptoJS `AES.encrypt(json, passphrase)` format of the Node.js server.
//!   Backends issue it today. It has no integrity check: see the module's docs.
//! - [`sealed`]: `v2.` + base64url(nonce ‖ XChaCha20-Poly1305 ciphertext). Authenticated:
//!   any change to any byte is refused.
//!
//! [`TokenCodec`] opens both (legacy only when allowed) and seals the configured one.
//! Every refusal is the same [`InvalidToken`] to the outside world.

pub mod legacy;
pub mod sealed;

use std::fmt;

use serde_json::{Map, Value};

use crate::{DataError, HeartbeatData, JsonDataError};

/// Longest token accepted, in bytes. Longer input is refused before any other work, so no
/// work is proportional to the size of a hostile input.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Which format [`TokenCodec::seal`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TokenFormat {
    /// The authenticated `v2.` format. The default.
    #[default]
    Sealed,
    /// The CryptoJS format, for fleets that still run Node.js servers beside this one.
    Legacy,
}

impl TokenFormat {
    /// The format a token is written in, by its prefix (`v2.` or not); says nothing of
    /// whether it opens.
    pub fn of(token: &str) -> TokenFormat {
        if token.starts_with(sealed::PREFIX) {
            TokenFormat::Sealed
        } else {
            TokenFormat::Legacy
        }
    }
}

impl std::str::FromStr for TokenFormat {
    type Err = String;

    /// `v2` (or `sealed`) and `legacy`, as `TOKEN_FORMAT` takes them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v2" | "sealed" => Ok(TokenFormat::Sealed),
            "legacy" | "cryptojs" => Ok(TokenFormat::Legacy),
            other => Err(format!(
                "unknown token format `{other}`: expected `v2` or `legacy`"
            )),
        }
    }
}

/// Why a token was refused. For logs and tests only: the outside world sees one
/// [`InvalidToken`], whatever the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Longer than [`MAX_TOKEN_LEN`].
    TooLong,
    /// Not the layout of any accepted format (bad hex, bad base64, wrong lengths, a legacy
    /// token where legacy tokens are not accepted).
    Malformed,
    /// Decryption failed: bad padding (legacy) or failed authentication (v2).
    Decryption,
    /// The plaintext is not UTF-8 JSON.
    NotJson,
    /// The plaintext is JSON but not an object.
    NotAnObject,
    /// The object is not valid heartbeat data.
    Data(DataError),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooLong => write!(f, "longer than {MAX_TOKEN_LEN} bytes"),
            Refusal::Malformed => f.write_str("not the layout of an accepted token format"),
            Refusal::Decryption => f.write_str("decryption or authentication failed"),
            Refusal::NotJson => f.write_str("plaintext is not UTF-8 JSON"),
            Refusal::NotAnObject => f.write_str("plaintext is not a JSON object"),
            Refusal::Data(error) => write!(f, "invalid heartbeat data: {error}"),
        }
    }
}

/// A token that cannot be opened or does not hold valid heartbeat data.
///
/// Its `Display` is the one message the server answers with (406), whatever the reason;
/// [`reason`](Self::reason) is there for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Heartbeat token is not valid.")]
pub struct InvalidToken {
    reason: Refusal,
}

impl InvalidToken {
    pub(crate) fn new(reason: Refusal) -> Self {
        Self { reason }
    }

    /// Why the token was refused (never show this to the sender).
    pub fn reason(&self) -> &Refusal {
        &self.reason
    }
}

/// A token that could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The token would be longer than [`MAX_TOKEN_LEN`] and so could never be opened.
    #[error("the token would be {len} bytes, longer than the {MAX_TOKEN_LEN} bytes accepted")]
    TooLarge {
        /// The length it would have had.
        len: usize,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
    /// The heartbeat data could not be written as JSON.
    #[error("the heartbeat data cannot be written as JSON: {0}")]
    Encode(String),
}

/// A shared key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    #[error("the shared key is empty")]
    Empty,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
    /// The heartbeat data could not be written as JSON.
    #[error("the heartbeat data cannot be written as JSON: {0}")]
    Encode(String),
}

/// Opens and seals heartbeat tokens with one shared key.
///
/// Keys are derived once, here: opening a `v2.` token or a legacy token issued by this
/// codec derives nothing per request.
///
/// ```
/// use heartbeat_core::{HeartbeatData, TokenCodec, TokenFormat};
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
/// // Backends still issue CryptoJS tokens; they open too unless refused.
/// let legacy = codec.clone().issuing(TokenFormat::Legacy).seal(&data)?;
/// assert_eq!(codec.open(&legacy)?, data);
/// assert!(codec.clone().accepting_legacy(false).open(&legacy).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TokenCodec {
    sealed: sealed::SealedKey,
    legacy: legacy::LegacyKey,
    /// Keys of earlier rotations, newest first: tokens sealed with them still open.
    previous: std::sync::Arc<[(sealed::SealedKey, legacy::LegacyKey)]>,
    issue: TokenFormat,
    accept_legacy: bool,
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
        if shared_key.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self {
            sealed: sealed::SealedKey::derive(shared_key.as_bytes()),
            legacy: legacy::LegacyKey::new(shared_key.as_bytes())?,
            previous: std::sync::Arc::new([]),
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
        let mut keys = Vec::new();
        for key in previous {
            if key.is_empty() {
                return Err(KeyError::Empty);
            }
            keys.push((
                sealed::SealedKey::derive(key.as_bytes()),
                legacy::LegacyKey::new(key.as_bytes())?,
            ));
        }
        self.previous = keys.into();
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
        // Plain data always serializes; an error here would be a bug in `Serialize`.
        let json =
            serde_json::to_vec(data).map_err(|error| SealError::Encode(error.to_string()))?;
        self.seal_bytes(&json)
    }

    /// Seals any plaintext in the configured format.
    pub fn seal_bytes(&self, plaintext: &[u8]) -> Result<String, SealError> {
        let token = match self.issue {
            TokenFormat::Sealed => self.sealed.seal(plaintext)?,
            TokenFormat::Legacy => self.legacy.seal(plaintext)?,
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(SealError::TooLarge { len: token.len() });
        }
        Ok(token)
    }

    /// Opens a token to its heartbeat data.
    pub fn open(&self, token: &str) -> Result<HeartbeatData, InvalidToken> {
        self.open_with(token, |plaintext| {
            HeartbeatData::from_json_slice(plaintext).map_err(Refusal::from)
        })
    }

    /// Opens an authenticated (v2) token only: a legacy token, which anyone can forge by
    /// flipping bits (SPEC §3.3), is refused like any invalid token. For the calls that
    /// act on or reveal other sessions of the user (takeover, notices).
    pub fn open_authenticated(&self, token: &str) -> Result<HeartbeatData, InvalidToken> {
        match TokenFormat::of(token) {
            TokenFormat::Sealed => self.open(token),
            TokenFormat::Legacy => Err(InvalidToken::new(Refusal::Malformed)),
        }
    }

    /// Opens a token to its JSON object, without checking it is heartbeat data.
    pub fn open_json(&self, token: &str) -> Result<Map<String, Value>, InvalidToken> {
        self.open_with(token, parse_object)
    }

    /// Checks the length, decrypts in the token's format and reads the plaintext with
    /// `parse`.
    fn open_with<T>(
        &self,
        token: &str,
        parse: impl Fn(&[u8]) -> Result<T, Refusal>,
    ) -> Result<T, InvalidToken> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(InvalidToken::new(Refusal::TooLong));
        }
        let v2_body = token.strip_prefix(sealed::PREFIX);
        if v2_body.is_none() && !self.accept_legacy {
            return Err(InvalidToken::new(Refusal::Malformed));
        }
        let mut keys = std::iter::once((&self.sealed, &self.legacy)).chain(
            self.previous
                .iter()
                .map(|(sealed, legacy)| (sealed, legacy)),
        );
        // A v2 token names its key: one try.
        if let Some((id, body)) = v2_body.and_then(sealed::split_key_id) {
            let opened = match keys.find(|(sealed, _)| sealed.id() == id) {
                Some((sealed, _)) => sealed.open_with(body, &parse),
                None => Err(Refusal::Decryption),
            };
            return opened.map_err(InvalidToken::new);
        }
        // Tokens without a key id (legacy ones, and v2 ones sealed before key ids): each
        // key in turn; the current key's refusal says what is wrong with the token.
        let mut first_refusal = None;
        for (sealed, legacy) in keys {
            let opened = match v2_body {
                Some(body) => sealed.open_with(body, &parse),
                None => legacy.open_with(token, &parse),
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

impl From<JsonDataError> for Refusal {
    fn from(error: JsonDataError) -> Self {
        match error {
            JsonDataError::NotJson => Refusal::NotJson,
            JsonDataError::NotAnObject => Refusal::NotAnObject,
            JsonDataError::Data(error) => Refusal::Data(error),
        }
    }
}

/// Parses plaintext as a JSON object. Used by both formats, after decryption, on every path.
fn parse_object(plaintext: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(plaintext) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Refusal::NotAnObject),
        Err(_) => Err(Refusal::NotJson),
    }
}

/// Fills `buf` from the operating system's random number generator.
/// Nonces, IVs and salts: from the thread's CSPRNG (ChaCha12, seeded and periodically
/// reseeded from the operating system), so sealing costs no system call.
fn random_bytes(buf: &mut [u8]) -> Result<(), String> {
    use rand::TryRngCore;
    rand::rng()
        .try_fill_bytes(buf)
        .map_err(|error| error.to_string())
}
