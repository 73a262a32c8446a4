//! The run's trace: a hash of every event, and with `CHAIN_SIM_TRACE=1` the events themselves.

use std::fmt::Debug;

use crate::core::Millis;

pub struct Trace {
    hash: u64,
    print: bool,
    pub events: u64,
}

impl Trace {
    pub fn new(print: bool) -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            print,
            events: 0,
        }
    }

    fn mix(&mut self, bytes: &[u8]) {
        // FNV-1a: stable across platforms and Rust versions, unlike `DefaultHasher`.
        for b in bytes {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn record(&mut self, at: Millis, ev: &impl Debug) {
        self.events += 1;
        let line = format!("{at:>7} {ev:?}");
        self.mix(line.as_bytes());
        if self.print {
            println!("{line}");
        }
    }

    pub fn note(&mut self, at: Millis, what: &str) {
        let line = format!("{at:>7} -- {what}");
        self.mix(line.as_bytes());
        if self.print {
            println!("{line}");
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }
}
