//! Durable runs: right after a sync, a replica's disk holds no more than its snapshot policy
//! allows: the snapshot, the log since it up to the policy's bound (`SnapshotPolicy::due`
//! snapshots past it), a segment header per segment, and the zeros preallocated ahead of the
//! last segment's records. Files a snapshot replaced are gone.

use crate::sim::disks::{log_config, snapshot_policy};
use crate::sim::view::WorldView;
use crate::sim::violation::{Invariant, Violation};

/// Header bytes of one segment file.
const SEGMENT_HEADER: u64 = 32;

pub fn check(w: &WorldView, proc: usize) -> Option<Violation> {
    let disk = w.procs[proc].disk.as_ref()?;
    let log = disk.log.as_ref()?.log();
    let policy = snapshot_policy();
    let snapshot = log.snapshot_bytes();
    let log_bound = policy.min_log_bytes.max(policy.store_ratio * snapshot);
    let bound = snapshot + log_bound + SEGMENT_HEADER * log.segment_count() + log_config().preallocate_bytes;
    let used = disk.disk.total_bytes();
    (used > bound).then(|| {
        Violation::new(
            Invariant::Disk,
            format!(
                "replica {proc}: {used} bytes on disk after a sync, over the bound {bound} (snapshot {snapshot}, log {}, {} segments)",
                log.log_bytes(),
                log.segment_count()
            ),
        )
    })
}
