//! [`NonceSequence`]: the 96-bit AES-GCM nonces of the `b1.` tokens a server seals itself
//! (`TOKEN_FORMAT=b1`), unique by construction rather than by chance.
//!
//! A server seals a token per heartbeat, so random 96-bit nonces would reach GCM's limit of
//! 2^32 random nonces per key (NIST SP 800-38D §8.3) within a day at 50,000 heartbeats a
//! second. Each sequence instead takes a random 96-bit start and counts up from it
//! (the deterministic construction of SP 800-38D §8.2.1, a random 32-bit fixed field and a
//! 64-bit counter that starts at a random value): one process never repeats a nonce, and two
//! processes (or two starts of one) repeat one only if their runs of nonces overlap, about
//! `tokens of one run / 2^95` for each pair of runs. A fleet that starts a million
//! processes over its life, each sealing 2^40 tokens, has about one chance in 2^16 of such an
//! overlap, where random nonces would have collided long before.
//!
//! The price: two tokens of one player show how many tokens its instance sealed in between,
//! and the fixed field names the process. `v3.` tokens (AES-GCM-SIV, random nonces) show
//! neither: docs/operations.md recommends them over a server issuing `b1.`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of a nonce.
pub(crate) const NONCE_LEN: usize = 12;

/// Hands out nonces: a random 32-bit field fixed for the sequence, then a 64-bit counter
/// from a random start, big-endian.
#[derive(Debug)]
pub(crate) struct NonceSequence {
    fixed: [u8; 4],
    counter: AtomicU64,
}

impl NonceSequence {
    /// A sequence with a random fixed field and a random start, from the thread's CSPRNG.
    pub(crate) fn new() -> Self {
        Self {
            fixed: rand::random(),
            counter: AtomicU64::new(rand::random()),
        }
    }

    /// The next nonce; never the same twice from one sequence (the counter wraps after
    /// 2^64 nonces, far beyond any server's life).
    pub(crate) fn next(&self) -> [u8; NONCE_LEN] {
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.fixed);
        nonce[4..].copy_from_slice(&count.to_be_bytes());
        nonce
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_counts_up_under_its_fixed_field_and_two_sequences_differ() {
        let sequence = NonceSequence::new();
        let first = sequence.next();
        let second = sequence.next();
        assert_eq!(first[..4], second[..4]);
        let count = |nonce: [u8; NONCE_LEN]| u64::from_be_bytes(nonce[4..].try_into().unwrap());
        assert_eq!(count(second), count(first).wrapping_add(1));
        let other = NonceSequence::new();
        assert_ne!(other.next(), sequence.next());
    }

    #[test]
    fn threads_sharing_a_sequence_never_get_the_same_nonce() {
        let sequence = std::sync::Arc::new(NonceSequence::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let sequence = sequence.clone();
                std::thread::spawn(move || (0..1000).map(|_| sequence.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<_> = threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }
}
