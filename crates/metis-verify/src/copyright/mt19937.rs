//! numpy's legacy `RandomState`: MT19937 seeded with `init_genrand`, and the bounded `uint64`
//! draw `randint(low, high, dtype=np.uint64)` makes. datasketch derives its MinHash
//! permutations from `np.random.RandomState(seed)`, so the permutations are computed here
//! exactly as numpy computes them rather than stored.
//!
//! Sources: numpy `numpy/random/src/mt19937/mt19937.{c,h}` (`mt19937_seed`, `mt19937_gen`,
//! `mt19937_next`, `mt19937_next64`) and `numpy/random/src/distributions/distributions.c`
//! (`random_bounded_uint64_fill`, `bounded_masked_uint64`); `RandomState.randint` uses the
//! masked-rejection variant.

const STATE_LEN: usize = 624;
const PERIOD: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The Mersenne Twister state of a legacy `np.random.RandomState`.
pub(super) struct LegacyRandomState {
    key: [u32; STATE_LEN],
    pos: usize,
}

impl LegacyRandomState {
    /// `np.random.RandomState(seed)` for an integer seed: Knuth's initialisation
    /// (`mt19937_seed`, the reference `init_genrand`).
    pub(super) fn new(seed: u32) -> Self {
        let mut key = [0u32; STATE_LEN];
        let mut value = seed;
        for (pos, slot) in key.iter_mut().enumerate() {
            *slot = value;
            value = 1_812_433_253u32
                .wrapping_mul(value ^ (value >> 30))
                .wrapping_add(pos as u32 + 1);
        }
        LegacyRandomState {
            key,
            pos: STATE_LEN,
        }
    }

    /// Regenerates the whole state block (`mt19937_gen`).
    fn twist(&mut self) {
        for i in 0..STATE_LEN {
            let y = (self.key[i] & UPPER_MASK) | (self.key[(i + 1) % STATE_LEN] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.key[i] = self.key[(i + PERIOD) % STATE_LEN] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// One tempered 32-bit output (`mt19937_next`).
    fn next_u32(&mut self) -> u32 {
        if self.pos == STATE_LEN {
            self.twist();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `mt19937_next64`: the first 32-bit draw is the high half (checked against numpy by the
    /// parity fixture; C leaves the operand order of `a << 32 | b` unspecified).
    fn next_u64(&mut self) -> u64 {
        let high = u64::from(self.next_u32());
        let low = u64::from(self.next_u32());
        (high << 32) | low
    }

    /// `randint(low, high, dtype=np.uint64)` for a range wider than 32 bits: draws 64-bit
    /// values, masks them to the smallest all-ones mask covering `high - low - 1`, and rejects
    /// those above it. (numpy takes a buffered 32-bit path for narrower ranges, which this
    /// crate never needs.)
    pub(super) fn randint_u64(&mut self, low: u64, high: u64) -> u64 {
        let range = high - low - 1;
        debug_assert!(
            range > u64::from(u32::MAX),
            "only the 64-bit path is implemented"
        );
        let mask = u64::MAX >> range.leading_zeros();
        loop {
            let value = self.next_u64() & mask;
            if value <= range {
                return low + value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs of the reference MT19937 for `init_genrand(5489)` (the default seed
    /// of Matsumoto and Nishimura's `mt19937ar.c`; also `std::mt19937` in C++11, whose
    /// 10,000th output is 4123659995).
    #[test]
    fn matches_the_reference_generator() {
        let mut rng = LegacyRandomState::new(5489);
        assert_eq!(rng.next_u32(), 3_499_211_612);
        assert_eq!(rng.next_u32(), 581_869_302);
        let mut rng = LegacyRandomState::new(5489);
        let tenth_thousand = (0..10_000).map(|_| rng.next_u32()).last();
        assert_eq!(tenth_thousand, Some(4_123_659_995));
    }

    /// `np.random.RandomState(1).randint(1, 2**61 - 1, dtype=np.uint64)` is
    /// 775169054918279404 (datasketch's first permutation multiplier for seed 1).
    #[test]
    fn first_bounded_draw_matches_numpy() {
        let mut rng = LegacyRandomState::new(1);
        assert_eq!(rng.randint_u64(1, (1 << 61) - 1), 775_169_054_918_279_404);
    }
}
