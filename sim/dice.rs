//! The run's only source of randomness: ChaCha seeded from the run's seed.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct Dice(ChaCha8Rng);

impl Dice {
    pub fn new(seed: u64) -> Self {
        Dice(ChaCha8Rng::seed_from_u64(seed))
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.0.next_u64() % (hi - lo)
    }

    /// True with probability `per_million` / 1e6.
    pub fn chance(&mut self, per_million: u64) -> bool {
        self.range(0, 1_000_000) < per_million
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        Some(items[self.range(0, items.len() as u64) as usize].clone())
    }

    /// One of `table`'s items, each with probability its weight over the sum of the weights
    /// (`None` if they sum to 0).
    pub fn weighted<T: Copy>(&mut self, table: &[(T, u64)]) -> Option<T> {
        let total: u64 = table.iter().map(|&(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        let mut r = self.range(0, total);
        for &(item, w) in table {
            if r < w {
                return Some(item);
            }
            r -= w;
        }
        None
    }
}
