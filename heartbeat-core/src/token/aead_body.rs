//! The body both authenticated formats share: `base64url-no-pad(nonce ‖ AEAD ciphertext ‖
//! tag)`, sealed and opened with any RustCrypto AEAD (XChaCha20-Poly1305 for `v2.`,
//! AES-256-GCM for `b1.`, AES-256-GCM-SIV for `v3.`), and the key id the server's formats (`v2.`, `v3.`)
//! put before it.
//!
//! The body is encoded and decoded with `base64-simd` (AVX2, SSE4.1 or NEON, detected at
//! run time): every heartbeat opens and seals one, and the scalar `base64` crate took
//! about a twentieth of a heartbeat's instructions there. Both refuse the same strings
//! (padding, other alphabets, non-zero trailing bits): a body has one spelling.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::generic_array::typenum::Unsigned;
use chacha20poly1305::aead::{AeadInPlace, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

use super::{Refusal, SealError, random_bytes};

/// Seals `plaintext` with `associated_data` under `nonce` (the cipher's nonce size), and
/// appends the body to `token`. The raw bytes are sealed in place, in one buffer.
pub(crate) fn seal_into<A: AeadInPlace>(
    cipher: &A,
    nonce: &[u8],
    plaintext: &[u8],
    associated_data: &[u8],
    token: &mut String,
) -> Result<(), SealError> {
    let nonce_len = A::NonceSize::USIZE;
    let mut raw = Vec::with_capacity(nonce_len + plaintext.len() + A::TagSize::USIZE);
    raw.extend_from_slice(nonce);
    raw.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(
            Nonce::<A>::from_slice(nonce),
            associated_data,
            &mut raw[nonce_len..],
        )
        .map_err(|_| SealError::TooLarge {
            len: plaintext.len(),
        })?;
    raw.extend_from_slice(&tag);
    base64_simd::URL_SAFE_NO_PAD.encode_append(&raw, token);
    Ok(())
}

/// Seals under a fresh random nonce, appending the body to `token`.
pub(crate) fn seal_random_into<A: AeadInPlace>(
    cipher: &A,
    plaintext: &[u8],
    associated_data: &[u8],
    token: &mut String,
) -> Result<(), SealError> {
    // The largest nonce of the ciphers used here (XChaCha20's, 24 bytes).
    let mut nonce = [0u8; 24];
    let nonce = &mut nonce[..A::NonceSize::USIZE];
    random_bytes(nonce).map_err(SealError::Random)?;
    seal_into(cipher, nonce, plaintext, associated_data, token)
}

/// Opens a body: decodes it, checks its length, authenticates and decrypts it in place,
/// and reads the plaintext with `parse`.
pub(crate) fn open_with<A: AeadInPlace, T>(
    cipher: &A,
    body: &str,
    associated_data: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<T, Refusal>,
) -> Result<T, Refusal> {
    let mut raw = decode(body)?;
    let (nonce_len, tag_len) = (A::NonceSize::USIZE, A::TagSize::USIZE);
    let Some(message_len) = raw.len().checked_sub(nonce_len + tag_len) else {
        return Err(Refusal::Malformed);
    };
    let (nonce, rest) = raw.split_at_mut(nonce_len);
    let (message, tag) = rest.split_at_mut(message_len);
    cipher
        .decrypt_in_place_detached(
            Nonce::<A>::from_slice(nonce),
            associated_data,
            message,
            Tag::<A>::from_slice(tag),
        )
        .map_err(|_| Refusal::Decryption)?;
    parse(message)
}

/// The bytes of a body: strict base64url without padding.
fn decode(body: &str) -> Result<Vec<u8>, Refusal> {
    base64_simd::URL_SAFE_NO_PAD
        .decode_to_vec(body)
        .map_err(|_| Refusal::Malformed)
}

/// HKDF-SHA256 of the shared key under `salt`, `N` bytes for `info`: how every key of
/// `token/` but the legacy one (the AEAD keys, the key ids, the playback ids' HMAC key) is
/// derived, once.
pub(crate) fn derive<const N: usize>(shared_key: &[u8], salt: &[u8], info: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    // The keys and ids here are far below HKDF-SHA256's limit of 255 * 32 bytes: this
    // cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(salt), shared_key).expand(info, &mut out);
    out
}

/// The key id of the key derived under `salt`: 3 more HKDF bytes (`info`), as the
/// [`KEY_ID_LEN`] base64url characters `v2.` and `v3.` tokens carry after their prefix.
pub(crate) fn derive_key_id(shared_key: &[u8], salt: &[u8], info: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(derive::<3>(shared_key, salt, info))
}

/// The start of a token that names its key, `prefix ‖ key id ‖ "."`, with room for the
/// body [`seal_into`] appends for a plaintext of `plaintext_len` bytes.
pub(crate) fn keyed_token<A: AeadInPlace>(
    prefix: &str,
    key_id: &str,
    plaintext_len: usize,
) -> String {
    let raw_len = A::NonceSize::USIZE + plaintext_len + A::TagSize::USIZE;
    let mut token =
        String::with_capacity(prefix.len() + key_id.len() + 1 + (raw_len * 4).div_ceil(3));
    token.push_str(prefix);
    token.push_str(key_id);
    token.push('.');
    token
}

/// Characters of a key id (3 bytes in base64url).
pub(crate) const KEY_ID_LEN: usize = 4;

/// Splits the part of a `v2.` or `v3.` token after its prefix into its key id and body;
/// `None` without a key id (`v2.` tokens sealed before key ids: base64url has no `.`).
pub(crate) fn split_key_id(rest: &str) -> Option<(&str, &str)> {
    rest.split_once('.')
        .filter(|(id, _)| id.len() == KEY_ID_LEN)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Bodies are read exactly as the `base64` crate's strict base64url without
        /// padding reads them (what earlier builds used): the same strings refused (bad
        /// lengths, non-zero trailing bits, padding, other alphabets), the same bytes.
        #[test]
        fn bodies_decode_as_strict_base64url_did(
            body in prop_oneof!["[A-Za-z0-9_-]{0,48}", "[A-Za-z0-9_+/= .\n-]{0,48}"],
        ) {
            prop_assert_eq!(decode(&body).ok(), URL_SAFE_NO_PAD.decode(&body).ok());
        }

        /// Sealed bytes are written as that engine writes them, and read back.
        #[test]
        fn bodies_encode_as_strict_base64url_did(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut body = String::new();
            base64_simd::URL_SAFE_NO_PAD.encode_append(&raw, &mut body);
            prop_assert_eq!(&body, &URL_SAFE_NO_PAD.encode(&raw));
            prop_assert_eq!(decode(&body).ok(), Some(raw));
        }
    }
}
