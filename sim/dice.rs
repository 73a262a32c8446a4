//! The run's only source of randomness: ChaCha seeded from the run's seed, one stream per
//! subsystem (`Streams`), so that a draw added or removed in one subsystem does not shift the
//! draws of the others.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct Dice(ChaCha8Rng);

impl Dice {
    /// The run's ChaCha key with its own stream: independent of every other stream's draws.
    pub fn stream(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Dice(rng)
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

    /// The generator itself, for code that draws through `rand_core` (the simulated disk).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.0
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

/// One `Dice` per subsystem of the world, each on its own ChaCha stream of the seed. The
/// stream ids are fixed: a new subsystem takes a new id.
pub struct Streams {
    /// What shapes the run, drawn before it starts (`RunShape`).
    pub shape: Dice,
    /// Message delays, drops and duplicates, between replicas and between clients and replicas.
    pub net: Dice,
    /// The nemesis: when, which fault, which victim, for how long.
    pub nemesis: Dice,
    /// The clients: operations, keys, think times, backoffs.
    pub clients: Dice,
    /// The ZooKeeper model: session ids, which queued listings a replica acts on.
    pub zk: Dice,
    /// The targeted scenarios after the fault phase.
    pub scenario: Dice,
    /// The foreign peer's bad requests.
    pub foreign: Dice,
    /// Replica processes: the phase of each new incarnation's timers.
    pub procs: Dice,
    /// Durable runs' disks: sync delays, what a crash keeps, which byte rots.
    pub disk: Dice,
    /// Which processes speak the chain's classic messages as another implementation does.
    pub dialect: Dice,
}

impl Streams {
    pub fn new(seed: u64) -> Self {
        Streams {
            shape: Dice::stream(seed, 1),
            net: Dice::stream(seed, 2),
            nemesis: Dice::stream(seed, 3),
            clients: Dice::stream(seed, 4),
            zk: Dice::stream(seed, 5),
            scenario: Dice::stream(seed, 6),
            foreign: Dice::stream(seed, 7),
            procs: Dice::stream(seed, 8),
            disk: Dice::stream(seed, 9),
            dialect: Dice::stream(seed, 10),
        }
    }
}
