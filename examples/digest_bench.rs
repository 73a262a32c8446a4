//! What keeping the state digest costs each write (docs/storage.md, "Rejoining while the chain
//! runs"): `StateDigest::set` (two entry hashes) and `History::push` (the key copied into the
//! ring), per update, on keys of the benchmark's shape. Prints figures; asserts nothing.
//!
//! `cargo run --release --example digest_bench`

use std::time::Instant;

use chainrep::core::{History, StateDigest};

fn main() {
    const UPDATES: u64 = 2_000_000;
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i:06}")).collect();
    let mut digest = StateDigest::default();
    let started = Instant::now();
    for i in 0..UPDATES {
        let key = &keys[(i % 1000) as usize];
        digest.set(key, i as i32, i as i32 + 1);
    }
    let set_ns = started.elapsed().as_nanos() as f64 / UPDATES as f64;
    let mut history = History::starting_at(0, digest);
    let started = Instant::now();
    for i in 0..UPDATES {
        history.push(i + 1, &keys[(i % 1000) as usize], digest);
    }
    let push_ns = started.elapsed().as_nanos() as f64 / UPDATES as f64;
    println!(
        "digest: {set_ns:.0} ns per update (two entry hashes); history: {push_ns:.0} ns per update; {UPDATES} updates, keys of 10 bytes"
    );
    println!("(final digest {:x}, so the loop is not optimised away)", digest.0);
}
