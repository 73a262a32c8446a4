//! What the quiet phase (`sim::quiet`) and the clean new head (`sim::new_head`) measure, for
//! `checks::cost` to judge.

use crate::core::{Millis, RequestKind};

/// Peer requests sent, by method (duplicates the network makes are not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerSends {
    pub propose: u64,
    pub transfer: u64,
    pub xid_processed: u64,
    pub get_latest_xid: u64,
    pub pull_state: u64,
    pub held: u64,
}

impl PeerSends {
    pub fn count(&mut self, kind: RequestKind) {
        let counter = match kind {
            RequestKind::Propose(_) => &mut self.propose,
            RequestKind::Transfer(_) => &mut self.transfer,
            RequestKind::XidProcessed(_) => &mut self.xid_processed,
            RequestKind::GetLatestXid => &mut self.get_latest_xid,
            RequestKind::PullState => &mut self.pull_state,
            RequestKind::Held => &mut self.held,
        };
        *counter += 1;
    }

    pub fn total(&self) -> u64 {
        self.propose + self.transfer + self.xid_processed + self.get_latest_xid + self.pull_state + self.held
    }
}

/// A chain with nothing to do must send nothing for this long.
pub const IDLE_MS: Millis = 1_000;

/// What the quiet phase measured.
#[derive(Clone, Debug)]
pub struct Quiet {
    /// Chain length during the phase (it does not change: no faults, nothing joins).
    pub members: usize,
    /// Updates the head issued.
    pub writes: u64,
    /// From the first operation until the sent lists drained.
    pub busy_ms: Millis,
    pub busy: PeerSends,
    pub idle: PeerSends,
}

/// What the clean case measured.
#[derive(Clone, Debug)]
pub struct CleanNewHead {
    /// From the newcomer's start until it held the state.
    pub pulling_ms: Millis,
    pub sends: PeerSends,
}
