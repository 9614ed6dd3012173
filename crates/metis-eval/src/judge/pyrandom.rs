//! CPython's `random.Random` seeded with a string, far enough to draw `random()`: AlpacaEval
//! decides which output the judge sees first with `random.Random(seed).choices([False, True])`
//! on a string seed (`alpaca_eval/utils.py: random_seeded_choice`), and reproducing that coin
//! exactly keeps Metis' judge prompts identical to upstream's.
//!
//! What CPython 3 does (`Lib/random.py: Random.seed`, version 2, and
//! `Modules/_randommodule.c: random_seed`, `init_by_array`, `genrand_uint32`,
//! `random_random`):
//! 1. the seed string's UTF-8 bytes, followed by their SHA-512 digest, read as one big-endian
//!    unsigned integer;
//! 2. that integer cut into 32-bit words, least significant first, as many as its bit length
//!    needs (at least one);
//! 3. Mersenne Twister MT19937 initialised with `init_by_array` on those words;
//! 4. `random()` = `(a·2^26 + b) / 2^53` with `a = genrand >> 5`, `b = genrand >> 6`.

use sha2::{Digest, Sha512};

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The generator state of a `random.Random` instance.
pub struct PyRandom {
    mt: [u32; N],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a `str` seed.
    pub fn from_str_seed(seed: &str) -> Self {
        let mut bytes = seed.as_bytes().to_vec();
        bytes.extend_from_slice(&Sha512::digest(seed.as_bytes()));
        Self::from_big_endian(&bytes)
    }

    /// Seeds from a non-negative integer given as big-endian bytes (CPython's `random_seed`).
    fn from_big_endian(bytes: &[u8]) -> Self {
        let significant = match bytes.iter().position(|&b| b != 0) {
            Some(first) => &bytes[first..],
            None => &[][..],
        };
        // 32-bit words, least significant first; zero still takes one word.
        let mut key: Vec<u32> = significant
            .rchunks(4)
            .map(|chunk| chunk.iter().fold(0u32, |w, &b| (w << 8) | u32::from(b)))
            .collect();
        if key.is_empty() {
            key.push(0);
        }
        Self::init_by_array(&key)
    }

    fn init_genrand(seed: u32) -> Self {
        let mut mt = [0u32; N];
        mt[0] = seed;
        for i in 1..N {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Self { mt, index: N }
    }

    fn init_by_array(key: &[u32]) -> Self {
        let mut g = Self::init_genrand(19_650_218);
        let mt = &mut g.mt;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        g
    }

    fn twist(&mut self) {
        let mag = |y: u32| if y & 1 == 0 { 0 } else { MATRIX_A };
        for k in 0..N {
            let y = (self.mt[k] & UPPER_MASK) | (self.mt[(k + 1) % N] & LOWER_MASK);
            self.mt[k] = self.mt[(k + M) % N] ^ (y >> 1) ^ mag(y);
        }
        self.index = 0;
    }

    /// `genrand_uint32`: the next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random()`: a float in [0, 1) with 53 random bits.
    pub fn random(&mut self) -> f64 {
        let a = f64::from(self.next_u32() >> 5);
        let b = f64::from(self.next_u32() >> 6);
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `choices(population)[0]` without weights: `population[floor(random() · len)]`.
    pub fn choice<'p, T>(&mut self, population: &'p [T]) -> &'p T {
        let n = population.len() as f64;
        let k = (self.random() * n).floor() as usize;
        &population[k.min(population.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by CPython 3.11:
    /// `r = random.Random(s); [r.random() for _ in range(2)]` and `random.Random(0).random()`.
    #[test]
    fn matches_cpython() {
        let mut r = PyRandom::from_str_seed("metis");
        assert_eq!(r.random(), 0.319_425_023_432_446_16);
        assert_eq!(r.random(), 0.091_827_512_657_409_96);
        let mut zero = PyRandom::from_big_endian(&[0]);
        assert_eq!(zero.random(), 0.844_421_851_525_048_1);
        let mut unicode = PyRandom::from_str_seed("héllo ✓");
        assert_eq!(unicode.random(), 0.559_275_413_722_680_4);
    }

    /// `random.Random(s).choices([False, True])[0]` in CPython 3.11.
    #[test]
    fn choice_matches_cpython() {
        let pick = |s: &str| *PyRandom::from_str_seed(s).choice(&[false, true]);
        let cpython = [
            ("a", false),
            ("b", true),
            ("c", false),
            ("d", false),
            ("is_switched_outputs2+2123", false),
        ];
        for (seed, want) in cpython {
            assert_eq!(pick(seed), want, "{seed}");
        }
    }
}
