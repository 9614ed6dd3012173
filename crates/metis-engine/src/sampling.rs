//! Choosing the next token from logits: greedy, or temperature sampling filtered by top-k,
//! top-p and min-p, reproducible from a seed.
//!
//! The returned log-probability is that of the chosen token under `log_softmax(logits / T)`
//! (unfiltered), the quantity an RL trainer recomputes from temperature-scaled logits; for
//! greedy decoding it is under `log_softmax(logits)`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How to pick tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability sums to at least `top_p` (1 = off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Drop tokens whose probability is below `min_p` × the top probability (0 = off).
    pub min_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// A chosen token and its log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub token: u32,
    pub logprob: f32,
}

/// A seeded token sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Scratch buffer of (token, probability) reused across steps.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Self {
            params,
            rng: StdRng::seed_from_u64(params.seed),
            candidates: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from one row of logits, with its log-probability.
    pub fn sample(&mut self, logits: &[f32]) -> Choice {
        if logits.is_empty() {
            return Choice {
                token: 0,
                logprob: f32::NEG_INFINITY,
            };
        }
        let (token, normaliser) = self.choose(logits);
        let logprob = match normaliser {
            // Sampling already summed the tempered exponentials: no second pass.
            Some(Normaliser { max, ln_total }) => {
                (f64::from((logits[token as usize] - max) / self.params.temperature) - ln_total)
                    as f32
            }
            None => log_softmax_at(logits, token as usize, 1.0),
        };
        Choice { token, logprob }
    }

    /// Picks the next token like [`Self::sample`] (same choice, same random stream) without
    /// its log-probability, which greedy decoding would otherwise spend a pass over the
    /// vocabulary on.
    pub fn next_token(&mut self, logits: &[f32]) -> u32 {
        if logits.is_empty() {
            return 0;
        }
        self.choose(logits).0
    }

    /// The chosen token, and when sampling, the softmax normaliser it computed on the way.
    fn choose(&mut self, logits: &[f32]) -> (u32, Option<Normaliser>) {
        if self.params.is_greedy() {
            return (argmax(logits), None);
        }
        let t = self.params.temperature;
        // Probabilities of logits / T, computed stably.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.candidates.clear();
        let mut total = 0.0f64;
        for (i, &l) in logits.iter().enumerate() {
            let p = ((l - max) / t).exp();
            total += f64::from(p);
            self.candidates.push((i as u32, p));
        }
        let inv = (1.0 / total) as f32;
        self.candidates.iter_mut().for_each(|c| c.1 *= inv);

        let filtering = self.params.top_k > 0 || self.params.top_p < 1.0 || self.params.min_p > 0.0;
        if filtering {
            // Most likely first; ties by lower id so the order is deterministic.
            self.candidates
                .sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut keep = self.candidates.len();
            if self.params.top_k > 0 {
                keep = keep.min(self.params.top_k);
            }
            if self.params.top_p < 1.0 {
                let mut cum = 0.0f32;
                for (i, c) in self.candidates[..keep].iter().enumerate() {
                    cum += c.1;
                    if cum >= self.params.top_p {
                        keep = i + 1;
                        break;
                    }
                }
            }
            if self.params.min_p > 0.0 {
                let floor = self.candidates[0].1 * self.params.min_p;
                keep = self.candidates[..keep]
                    .iter()
                    .take_while(|c| c.1 >= floor)
                    .count()
                    .max(1);
            }
            self.candidates.truncate(keep.max(1));
        }
        let mass: f32 = self.candidates.iter().map(|c| c.1).sum();
        let mut r = self.rng.random::<f32>() * mass;
        let mut token = self.candidates[self.candidates.len() - 1].0;
        for &(id, p) in &self.candidates {
            if r < p {
                token = id;
                break;
            }
            r -= p;
        }
        let normaliser = Normaliser {
            max,
            ln_total: total.ln(),
        };
        (token, Some(normaliser))
    }
}

/// `log(sum(exp((l - max) / T)))` over a row, and the `max` it is relative to.
struct Normaliser {
    max: f32,
    ln_total: f64,
}

/// Index of the largest logit; ties go to the lowest index (as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// `log_softmax(logits / t)[index]`.
pub fn log_softmax_at(logits: &[f32], index: usize, t: f32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) / t;
    let lse: f64 = logits
        .iter()
        .map(|&l| f64::from(l / t - max).exp())
        .sum::<f64>()
        .ln();
    (f64::from(logits[index] / t - max) - lse) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_lowest_index_on_ties() {
        let mut s = Sampler::new(SamplingParams::default());
        let c = s.sample(&[1.0, 3.0, 3.0, 0.5]);
        assert_eq!(c.token, 1);
        let expected = 3.0 - (1f64.exp() + 2.0 * 3f64.exp() + 0.5f64.exp()).ln();
        assert!((f64::from(c.logprob) - expected).abs() < 1e-5);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_probabilities() {
        let params = SamplingParams {
            temperature: 1.0,
            seed: 42,
            ..SamplingParams::default()
        };
        let logits = [0.0f32, 1.0, 2.0];
        let draw = |n| {
            let mut s = Sampler::new(params);
            (0..n).map(|_| s.sample(&logits).token).collect::<Vec<_>>()
        };
        assert_eq!(draw(50), draw(50));
        let counts = draw(20_000).iter().fold([0usize; 3], |mut c, &t| {
            c[t as usize] += 1;
            c
        });
        let z: f64 = (0..3).map(|i| (i as f64).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let expected = (i as f64).exp() / z;
            assert!((c as f64 / 20_000.0 - expected).abs() < 0.02, "{counts:?}");
        }
    }

    #[test]
    fn filters_restrict_the_support() {
        let logits = [5.0f32, 4.9, 0.0, -1.0];
        for params in [
            SamplingParams {
                temperature: 1.0,
                top_k: 2,
                seed: 1,
                ..Default::default()
            },
            SamplingParams {
                temperature: 1.0,
                top_p: 0.9,
                seed: 2,
                ..Default::default()
            },
            SamplingParams {
                temperature: 1.0,
                min_p: 0.5,
                seed: 3,
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(params);
            for _ in 0..500 {
                assert!(s.sample(&logits).token < 2, "{params:?}");
            }
        }
        let mut k1 = Sampler::new(SamplingParams {
            temperature: 2.0,
            top_k: 1,
            ..Default::default()
        });
        assert_eq!(k1.sample(&logits).token, 0);
    }

    #[test]
    fn next_token_makes_the_same_choices_as_sample() {
        let logits: Vec<f32> = (0..500).map(|i| ((i * 37) % 101) as f32 / 9.0).collect();
        for params in [
            SamplingParams::default(),
            SamplingParams {
                temperature: 0.8,
                top_p: 0.9,
                seed: 11,
                ..SamplingParams::default()
            },
        ] {
            let mut with = Sampler::new(params);
            let mut without = Sampler::new(params);
            for _ in 0..50 {
                let c = with.sample(&logits);
                assert_eq!(c.token, without.next_token(&logits));
                let t = if params.is_greedy() {
                    1.0
                } else {
                    params.temperature
                };
                let expected = log_softmax_at(&logits, c.token as usize, t);
                assert!(
                    (c.logprob - expected).abs() < 1e-5,
                    "{} vs {expected}",
                    c.logprob
                );
            }
        }
    }

    #[test]
    fn logprob_uses_temperature_scaled_logits() {
        let logits = [1.0f32, 2.0];
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.5,
            seed: 9,
            ..Default::default()
        });
        let c = s.sample(&logits);
        let scaled = [2.0f64, 4.0];
        let lse = (scaled[0].exp() + scaled[1].exp()).ln();
        assert!((f64::from(c.logprob) - (scaled[c.token as usize] - lse)).abs() < 1e-5);
    }
}
