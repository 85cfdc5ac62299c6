//! What every token format shares, at the bottom of `token/`: why a token is refused
//! ([`Refusal`]) or cannot be made ([`SealError`]), the size bound, and the plaintext and
//! randomness helpers.

use std::fmt;

use serde_json::{Map, Value};

use crate::{CompactDataError, DataError, JsonDataError};

/// Longest token accepted, in bytes. Longer input is refused before any other work, so no
/// work is proportional to the size of a hostile input.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a token was refused. For logs and tests only: the outside world sees one
/// [`InvalidToken`](super::InvalidToken), whatever the reason.
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
    /// A call that needs an authenticated session got a token of a session a legacy
    /// token began (SPEC §3.3 "Provenance").
    Unauthenticated,
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
            Refusal::Unauthenticated => {
                f.write_str("the session was begun with a legacy token, not an authenticated one")
            }
        }
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

impl From<CompactDataError> for Refusal {
    fn from(error: CompactDataError) -> Self {
        match error {
            CompactDataError::Data(error) => Refusal::Data(error),
            _ => Refusal::Malformed,
        }
    }
}

/// Parses plaintext as a JSON object. Used by every JSON format, after decryption, on every
/// path.
pub(super) fn parse_object(plaintext: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(plaintext) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Refusal::NotAnObject),
        Err(_) => Err(Refusal::NotJson),
    }
}

/// Fills `buf` from the operating system's random number generator.
/// Nonces, IVs and salts: from the thread's CSPRNG (ChaCha12, seeded and periodically
/// reseeded from the operating system), so sealing costs no system call.
pub(super) fn random_bytes(buf: &mut [u8]) -> Result<(), String> {
    use rand::TryRngCore;
    rand::rng()
        .try_fill_bytes(buf)
        .map_err(|error| error.to_string())
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
