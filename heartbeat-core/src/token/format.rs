//! [`TokenFormat`]: the formats a token is written in, told apart by their prefix.

use super::{backend, compact, sealed};

/// Which format [`TokenCodec::seal`](super::TokenCodec::seal) writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TokenFormat {
    /// The authenticated `v2.` format. The default.
    #[default]
    Sealed,
    /// The CryptoJS format, for fleets that still run Node.js servers beside this one.
    Legacy,
    /// The `b1.` backend format (AES-256-GCM): what backends without XChaCha20 mint. A
    /// server issuing it answers in it too (`TOKEN_FORMAT=b1`): cheaper than
    /// [`Sealed`](Self::Sealed) where the CPU has AES-NI.
    Backend,
    /// The `v3.` server format (AES-256-GCM-SIV over a compact payload,
    /// [`compact`](super::compact)): what a server answers in with `TOKEN_FORMAT=v3`, at a
    /// fraction of [`Sealed`](Self::Sealed)'s cost where the CPU has AES-NI. Only servers
    /// read it: every server of the fleet must read it (this build or later) before any
    /// issues it.
    Compact,
}

impl TokenFormat {
    /// The format a token is written in, by its prefix (`v2.`, `b1.` or neither); says
    /// nothing of whether it opens.
    pub fn of(token: &str) -> TokenFormat {
        if token.starts_with(sealed::PREFIX) {
            TokenFormat::Sealed
        } else if token.starts_with(backend::PREFIX) {
            TokenFormat::Backend
        } else if token.starts_with(compact::PREFIX) {
            TokenFormat::Compact
        } else {
            TokenFormat::Legacy
        }
    }

    /// The name `TOKEN_FORMAT` gives it: `v2`, `v3`, `b1` or `legacy`.
    pub fn name(self) -> &'static str {
        match self {
            TokenFormat::Sealed => "v2",
            TokenFormat::Compact => "v3",
            TokenFormat::Backend => "b1",
            TokenFormat::Legacy => "legacy",
        }
    }

    /// True for the formats that refuse any tampering (`v2.`, `v3.` and `b1.`).
    pub fn is_authenticated(self) -> bool {
        self != TokenFormat::Legacy
    }
}

impl std::str::FromStr for TokenFormat {
    type Err = String;

    /// `v2` (or `sealed`), `v3`, `b1` (or `backend`) and `legacy` (or `cryptojs`), as
    /// `TOKEN_FORMAT` takes them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v2" | "sealed" => Ok(TokenFormat::Sealed),
            "v3" => Ok(TokenFormat::Compact),
            "legacy" | "cryptojs" => Ok(TokenFormat::Legacy),
            "b1" | "backend" => Ok(TokenFormat::Backend),
            other => Err(format!(
                "unknown token format `{other}`: expected `v2`, `v3`, `b1` or `legacy`"
            )),
        }
    }
}
