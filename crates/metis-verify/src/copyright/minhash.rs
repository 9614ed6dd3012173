//! datasketch's `MinHash` with its defaults (`num_perm=128`, `seed=1`, `sha1_hash32`), bit for
//! bit: HarmBench's reference hashes are pickled datasketch MinHashes, so a signature computed
//! here must equal the one datasketch computes for the same words.
//!
//! Source: `datasketch/minhash.py` and `datasketch/hashfunc.py` (datasketch 1.x; the
//! "legacy" scheme that 2.0 keeps under that name): the permutations are
//! `(randint(1, p), randint(0, p))` pairs drawn from `np.random.RandomState(seed)` with
//! `p = 2**61 - 1`; a value `b` hashes to `hv = struct.unpack('<I', sha1(b).digest()[:4])`;
//! permutation `k` maps it to `((a_k * hv + b_k) % p) & (2**32 - 1)`, with numpy's `uint64`
//! wrap-around in `a_k * hv + b_k`; each of the 128 slots keeps the minimum, starting at
//! `2**32 - 1`; `jaccard` is the fraction of equal slots.

use std::sync::OnceLock;

use sha1::{Digest, Sha1};

use super::mt19937::LegacyRandomState;

/// Number of permutations (datasketch's default, and HarmBench's).
pub const NUM_PERM: usize = 128;
/// Permutation seed (datasketch's default, and HarmBench's).
pub const SEED: u32 = 1;

const MERSENNE_PRIME: u64 = (1 << 61) - 1;
const MAX_HASH: u64 = (1 << 32) - 1;

/// The permutation parameters of datasketch's `MinHash(num_perm=128, seed=1)`:
/// `permutations[0]` is `a`, `permutations[1]` is `b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permutations {
    pub a: [u64; NUM_PERM],
    pub b: [u64; NUM_PERM],
}

/// The seed-1 permutations, computed once with numpy's legacy generator.
pub fn permutations() -> &'static Permutations {
    static PERMUTATIONS: OnceLock<Permutations> = OnceLock::new();
    PERMUTATIONS.get_or_init(|| {
        let mut rng = LegacyRandomState::new(SEED);
        let mut permutations = Permutations {
            a: [0; NUM_PERM],
            b: [0; NUM_PERM],
        };
        // datasketch draws a then b for each permutation in turn (a list of pairs, transposed).
        for k in 0..NUM_PERM {
            permutations.a[k] = rng.randint_u64(1, MERSENNE_PRIME);
            permutations.b[k] = rng.randint_u64(0, MERSENNE_PRIME);
        }
        permutations
    })
}

/// datasketch's `sha1_hash32`: the first four bytes of the SHA-1 digest, little-endian.
pub fn sha1_hash32(bytes: &[u8]) -> u32 {
    let digest = Sha1::digest(bytes);
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// One MinHash signature: 128 slots, each the minimum permuted hash of the values seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MinHash {
    values: [u32; NUM_PERM],
}

impl Default for MinHash {
    /// An empty MinHash: every slot at `2**32 - 1`, as datasketch initialises it.
    fn default() -> Self {
        MinHash {
            values: [u32::MAX; NUM_PERM],
        }
    }
}

impl MinHash {
    /// An empty MinHash (no value seen).
    pub fn new() -> Self {
        Self::default()
    }

    /// A signature from its 128 slot values (datasketch's `hashvalues`).
    pub fn from_values(values: [u32; NUM_PERM]) -> Self {
        MinHash { values }
    }

    /// The MinHash of a sequence of words, each fed to `update` as UTF-8.
    pub fn from_words<'a>(words: impl IntoIterator<Item = &'a str>) -> Self {
        let mut minhash = MinHash::new();
        for word in words {
            minhash.update(word.as_bytes());
        }
        minhash
    }

    /// The 128 slot values (datasketch's `hashvalues`, which fit in 32 bits).
    pub fn values(&self) -> &[u32; NUM_PERM] {
        &self.values
    }

    /// Whether no value has been seen (datasketch's `is_empty`).
    pub fn is_empty(&self) -> bool {
        self.values.iter().all(|&v| v == u32::MAX)
    }

    /// datasketch's `update(b)`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.update_hash(sha1_hash32(bytes));
    }

    /// `update` for a value already hashed with [`sha1_hash32`] (the sliding windows hash
    /// each word once and feed it to every window holding it).
    pub(super) fn update_hash(&mut self, hash: u32) {
        let permutations = permutations();
        let hash = u64::from(hash);
        for ((slot, &a), &b) in self
            .values
            .iter_mut()
            .zip(&permutations.a)
            .zip(&permutations.b)
        {
            // numpy computes `a * hv + b` in uint64 and wraps; the mask keeps 32 bits.
            let permuted = (a.wrapping_mul(hash).wrapping_add(b) % MERSENNE_PRIME) & MAX_HASH;
            *slot = (*slot).min(permuted as u32);
        }
    }

    /// datasketch's `jaccard`: the fraction of the 128 slots on which both signatures agree.
    pub fn jaccard(&self, other: &MinHash) -> f64 {
        let equal = self
            .values
            .iter()
            .zip(&other.values)
            .filter(|(a, b)| a == b)
            .count();
        equal as f64 / NUM_PERM as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_minhash_keeps_every_slot_at_the_maximum() {
        let empty = MinHash::new();
        assert!(empty.is_empty());
        assert_eq!(empty.jaccard(&MinHash::from_words([])), 1.0);
        let word = MinHash::from_words(["word"]);
        assert!(!word.is_empty());
        assert!(word.values().iter().all(|&v| v < u32::MAX));
    }

    #[test]
    fn update_is_idempotent_and_order_free() {
        let a = MinHash::from_words(["a", "b", "c", "a"]);
        let b = MinHash::from_words(["c", "b", "a"]);
        assert_eq!(a, b);
        assert_eq!(a.jaccard(&b), 1.0);
    }

    #[test]
    fn sha1_hash32_reads_the_digest_little_endian() {
        // sha1(b"") = da39a3ee5e6b4b0d...; struct.unpack('<I', ...) of da 39 a3 ee.
        assert_eq!(sha1_hash32(b""), 0xeea3_39da);
    }
}
