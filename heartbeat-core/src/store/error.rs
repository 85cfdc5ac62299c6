//! The one error every store maps into, and the answer of a compare-and-set.

use std::error::Error as StdError;

/// A boxed error from a store's client library, kept as the source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a store operation failed. Every store maps its own errors into this.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached now (connection refused, timed out, closed). Worth a
    /// retry later: the server answers 503 with `Retry-After`.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What happened, for logs.
        message: String,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },
    /// Concurrent writers kept changing the same state: the compare-and-set lost every
    /// one of its bounded attempts.
    #[error("contention on `{key}` did not clear after {attempts} attempts")]
    Contention {
        /// What was contended (a user id or job id).
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Stored data could not be read or written in the expected shape.
    #[error("stored data is corrupt: {message}")]
    Corrupt {
        /// What is wrong, for logs.
        message: String,
        /// The decoding error.
        #[source]
        source: Option<BoxError>,
    },
    /// The store holds as much as it is allowed to (the memory store's job cap): nothing
    /// was written. Worth a retry later, once finished jobs have been dropped: the server
    /// answers 503 with `Retry-After`.
    #[error("store full: {message}")]
    Full {
        /// What is full, and its cap.
        message: String,
    },
    /// Any other failure of the backing store.
    #[error("store failed: {message}")]
    Backend {
        /// What happened, for logs.
        message: String,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// An [`Unavailable`](Self::Unavailable) error with its source.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A [`Corrupt`](Self::Corrupt) error with its source.
    pub fn corrupt(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Corrupt {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A [`Backend`](Self::Backend) error with its source.
    pub fn backend(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// True when the failure is transient and a retry later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. }
                | StoreError::Contention { .. }
                | StoreError::Full { .. }
        )
    }
}

/// Whether a compare-and-set applied its write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Commit {
    /// The state was unchanged and the write is stored.
    Applied,
    /// Someone changed the state since it was loaded; nothing was written.
    Conflict,
}
