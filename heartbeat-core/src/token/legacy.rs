//! The CryptoJS token format of the Node.js heartbeat server, byte-compatible with
//! `crypto-js` `AES.encrypt(json, passphrase)`.
//!
//! `token = hex(salt, 16 B) ‖ hex(iv, 16 B) ‖ base64(AES-256-CBC/PKCS#7(json))` with
//! `key = PBKDF2-HMAC-SHA1(passphrase, salt, 3 iterations, 32 B)`.
//!
//! # Known weakness
//!
//! The format has no integrity check. Whoever holds a token can flip bits of the IV and so
//! rewrite the first 16 bytes of the plaintext without the key: `{"user_id":13,...` becomes
//! `{"user_id":93,...`. Use the [`sealed`](super::sealed) format wherever every server of a
//! fleet can read it; accept legacy tokens only from backends that cannot issue `v2.` yet.
//!
//! # Uniform refusals
//!
//! [`LegacyKey::open`] does the same steps for every input of a given length: it decodes,
//! derives the key, decrypts, checks the padding in constant time and parses the JSON even
//! when an earlier step already failed, and reports the first failure only at the end. A
//! padding error therefore costs what a JSON error costs, and there is no padding oracle.

use aes::Aes256;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard base64 with or without `=` padding, as crypto-js reads it (SPEC §3.5).
const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
use cbc::cipher::block_padding::{NoPadding, Pkcs7};
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use serde_json::{Map, Value};
use sha1::Sha1;
use subtle::{ConditionallySelectable, ConstantTimeEq, ConstantTimeLess};

use super::{Refusal, SealError, parse_object, random_bytes};
use crate::KeyError;

const SALT_LEN: usize = 16;
const IV_LEN: usize = 16;
const BLOCK: usize = 16;
pub(crate) const HEADER_HEX_LEN: usize = 2 * (SALT_LEN + IV_LEN);
const PBKDF2_ROUNDS: u32 = 3;

type Encryptor = cbc::Encryptor<Aes256>;
type Decryptor = cbc::Decryptor<Aes256>;

/// A derived AES-256 key.
type Key = [u8; 32];

/// Derives the AES key from a passphrase and a salt: PBKDF2-HMAC-SHA1, 3 rounds, 32 bytes,
/// as the tokens of the Node.js server are made.
pub fn derive_key(passphrase: &[u8], salt: &[u8; SALT_LEN]) -> Key {
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha1>(passphrase, salt, PBKDF2_ROUNDS, &mut key);
    key
}

/// Seals `plaintext` with an explicit salt and IV. Deterministic: this is how the test
/// vectors are checked. Use [`LegacyKey::seal`] for real tokens.
pub fn seal_with(
    passphrase: &[u8],
    salt: &[u8; SALT_LEN],
    iv: &[u8; IV_LEN],
    plaintext: &[u8],
) -> String {
    encode(salt, iv, &derive_key(passphrase, salt), plaintext)
}

fn encode(salt: &[u8; SALT_LEN], iv: &[u8; IV_LEN], key: &Key, plaintext: &[u8]) -> String {
    let ciphertext =
        Encryptor::new(key.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let mut token = String::with_capacity(HEADER_HEX_LEN + ciphertext.len().div_ceil(3) * 4);
    token.push_str(&hex::encode(salt));
    token.push_str(&hex::encode(iv));
    STANDARD.encode_string(&ciphertext, &mut token);
    token
}

/// A passphrase, with one salt and its derived key kept for the tokens this process seals.
///
/// Sealing reuses that salt (with a fresh random IV per token), so neither sealing nor
/// opening a token this process issued derives a key; tokens from elsewhere carry their
/// own salt and cost one PBKDF2 (3 rounds).
#[derive(Clone)]
pub struct LegacyKey {
    passphrase: Vec<u8>,
    own_salt: [u8; SALT_LEN],
    own_key: Key,
}

impl LegacyKey {
    /// Prepares `passphrase`, drawing this process's salt.
    pub fn new(passphrase: &[u8]) -> Result<Self, KeyError> {
        let mut own_salt = [0u8; SALT_LEN];
        random_bytes(&mut own_salt).map_err(KeyError::Random)?;
        Ok(Self {
            passphrase: passphrase.to_vec(),
            own_key: derive_key(passphrase, &own_salt),
            own_salt,
        })
    }

    /// Seals `plaintext` with a fresh random IV.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, SealError> {
        let mut iv = [0u8; IV_LEN];
        random_bytes(&mut iv).map_err(SealError::Random)?;
        Ok(encode(&self.own_salt, &iv, &self.own_key, plaintext))
    }

    /// Opens a token to its JSON object. Every input of the same length takes the same
    /// steps; see the module docs.
    pub fn open(&self, token: &str) -> Result<Map<String, Value>, Refusal> {
        self.open_with(token, parse_object)
    }

    /// As [`open`](Self::open), reading the plaintext with `parse`.
    pub(crate) fn open_with<T>(
        &self,
        token: &str,
        parse: impl Fn(&[u8]) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let (plaintext, failure) = self.decrypt(token);
        // Parsed on every path, so a padding error costs what a JSON error costs.
        let parsed = parse(&plaintext);
        match failure {
            Some(refusal) => Err(refusal),
            None => parsed,
        }
    }

    /// Opens a token to its plaintext bytes, without reading them as JSON.
    pub fn open_plaintext(&self, token: &str) -> Result<Vec<u8>, Refusal> {
        match self.decrypt(token) {
            (_, Some(refusal)) => Err(refusal),
            (plaintext, None) => Ok(plaintext),
        }
    }

    /// Decodes and decrypts with the same steps for every input of a given length; returns
    /// the plaintext (garbage when anything failed) and the first failure.
    fn decrypt(&self, token: &str) -> (Vec<u8>, Option<Refusal>) {
        let mut first_failure: Option<Refusal> = None;
        let mut fail = |refusal: Refusal| {
            first_failure.get_or_insert(refusal);
        };
        let bytes = token.as_bytes();

        let mut salt = [0u8; SALT_LEN];
        let mut iv = [0u8; IV_LEN];
        let body = if bytes.len() >= HEADER_HEX_LEN {
            let (salt_hex, rest) = bytes.split_at(2 * SALT_LEN);
            let (iv_hex, body) = rest.split_at(2 * IV_LEN);
            if hex::decode_to_slice(salt_hex, &mut salt).is_err()
                | hex::decode_to_slice(iv_hex, &mut iv).is_err()
            {
                fail(Refusal::Malformed);
            }
            body
        } else {
            fail(Refusal::Malformed);
            &[][..]
        };

        let mut buffer = STANDARD_ANY_PADDING.decode(body).unwrap_or_else(|_| {
            fail(Refusal::Malformed);
            Vec::new()
        });
        if buffer.is_empty() || buffer.len() % BLOCK != 0 {
            fail(Refusal::Malformed);
            let whole_blocks = buffer.len().div_ceil(BLOCK).max(1) * BLOCK;
            buffer.resize(whole_blocks, 0);
        }

        let key = if salt == self.own_salt {
            self.own_key
        } else {
            derive_key(&self.passphrase, &salt)
        };
        let len = Decryptor::new((&key).into(), (&iv).into())
            .decrypt_padded_mut::<NoPadding>(&mut buffer)
            .map(<[u8]>::len)
            .unwrap_or(0);
        let (plaintext_len, padding_ok) = unpad_constant_time(&buffer[..len]);
        if !padding_ok {
            fail(Refusal::Decryption);
        }
        buffer.truncate(plaintext_len);
        (buffer, first_failure)
    }
}

/// The length without PKCS#7 padding, and whether the padding was valid, computed without
/// branching on the secret bytes. With bad padding the length is the whole buffer.
fn unpad_constant_time(plaintext: &[u8]) -> (usize, bool) {
    let Some(&last) = plaintext.last() else {
        return (0, false);
    };
    let tail = &plaintext[plaintext.len().saturating_sub(BLOCK)..];
    // 1 <= last <= 16
    let mut valid = !last.ct_eq(&0)
        & last.ct_lt(&(BLOCK as u8 + 1))
        & subtle::Choice::from(u8::from(BLOCK <= plaintext.len()));
    for (distance, byte) in tail.iter().rev().enumerate() {
        // Bytes within the padding must equal `last`.
        let inside = (distance as u8).ct_lt(&last);
        valid &= !inside | byte.ct_eq(&last);
    }
    let strip = u8::conditional_select(&0, &last, valid);
    (plaintext.len() - usize::from(strip), bool::from(valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpad_accepts_only_pkcs7() {
        let mut block = [b'a'; 16];
        block[15] = 1;
        assert_eq!(unpad_constant_time(&block), (15, true));
        block[12..].copy_from_slice(&[4, 4, 4, 4]);
        assert_eq!(unpad_constant_time(&block), (12, true));
        block[12] = 3;
        assert_eq!(unpad_constant_time(&block), (16, false));
        assert_eq!(unpad_constant_time(&[16u8; 16]), (0, true));
        assert_eq!(unpad_constant_time(&[17u8; 16]), (16, false));
        let mut zero = [b'a'; 16];
        zero[15] = 0;
        assert_eq!(unpad_constant_time(&zero), (16, false));
        assert_eq!(unpad_constant_time(&[]), (0, false));
    }
}
