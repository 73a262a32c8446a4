//! The gRPC tier's randomness: the core tier's ChaCha `Dice`, shared by the tasks that draw from
//! it, one stream of the seed per subsystem (as `sim::dice::Streams`), so that a draw added in
//! one subsystem does not shift the draws of the others.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::sim::dice::Dice;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One stream, shared by everything that draws from it. Every draw happens on the runtime's
/// one thread in an order the seed fixes.
#[derive(Clone)]
pub struct SharedDice(Arc<Mutex<Dice>>);

impl SharedDice {
    pub fn stream(seed: u64, stream: u64) -> Self {
        SharedDice(Arc::new(Mutex::new(Dice::stream(seed, stream))))
    }
    pub fn range(&self, lo: u64, hi: u64) -> u64 {
        lock(&self.0).range(lo, hi)
    }
    pub fn chance(&self, per_million: u64) -> bool {
        lock(&self.0).chance(per_million)
    }
    pub fn pick<T: Clone>(&self, items: &[T]) -> Option<T> {
        lock(&self.0).pick(items)
    }
    pub fn weighted<T: Copy>(&self, table: &[(T, u64)]) -> Option<T> {
        lock(&self.0).weighted(table)
    }
}

/// One `SharedDice` per subsystem, each on its own ChaCha stream of the seed. The stream ids are
/// fixed: a new subsystem takes a new id.
#[derive(Clone)]
pub struct Streams {
    /// What shapes the run, drawn before it starts (`RunShape`).
    pub shape: SharedDice,
    /// The pipes: chunk delays, which connection a reset hits, how a cut connection fails.
    pub net: SharedDice,
    /// The nemesis: when, which fault, which victim, for how long.
    pub nemesis: SharedDice,
    /// The clients: think times, operations, keys.
    pub clients: SharedDice,
    /// The coordinator: notification delays, session ids, heartbeat phases.
    pub coordinator: SharedDice,
    /// Replicas added during the run: whether each speaks only classic calls.
    pub replicas: SharedDice,
}

impl Streams {
    pub fn new(seed: u64) -> Self {
        Streams {
            shape: SharedDice::stream(seed, 1),
            net: SharedDice::stream(seed, 2),
            nemesis: SharedDice::stream(seed, 3),
            clients: SharedDice::stream(seed, 4),
            coordinator: SharedDice::stream(seed, 5),
            replicas: SharedDice::stream(seed, 6),
        }
    }
}
