//! The world's side of durable runs (`sim::disks` holds the disks): a new incarnation recovers
//! its disk, what a replica asks of its storage goes to its log after every step, a sync event
//! follows, and a crash leaves the disk as a power loss would.

use crate::sim::disks::{ProcDisk, SimStorage};
use crate::sim::env::SimReplica;
use crate::sim::events::Ev;
use crate::sim::violation::{Invariant, Violation};
use crate::sim::world::World;

/// A sync follows the first write after the last one within this many milliseconds: the time a
/// log thread takes to wake up and `fdatasync`. Writes made meanwhile join the same sync.
const MAX_SYNC_DELAY_MS: u64 = 4;
/// ...and one in ten times it is slow (a disk busy with something else): more writes are then
/// unsynced when a crash comes, and more crashes tear one.
const SLOW_SYNC_MS: (u64, u64) = (5, 40);

impl World {
    /// Durable runs: the new incarnation's replica starts from what its disk recovers.
    pub(super) fn attach_disk(&mut self, proc: usize, replica: SimReplica) -> SimReplica {
        if !self.cfg.durable {
            return replica;
        }
        let disk = self.procs[proc].disk.get_or_insert_with(ProcDisk::default);
        match disk.open() {
            Ok((copy, note)) => {
                let storage = Box::new(SimStorage(disk.queue.clone()));
                self.trace.note(self.clock.0.get(), &format!("replica {proc}: {note}"));
                replica.with_storage(storage, copy)
            }
            Err(e) => {
                // `SimDisk` injects no I/O errors: anything else is the log's own failure.
                self.fail(Violation::new(Invariant::Disk, format!("replica {proc}: recovery failed: {e}")));
                replica
            }
        }
    }

    /// After a step: the replica's storage requests go to its log; a sync is scheduled.
    pub(super) fn drain_disk(&mut self, proc: usize) {
        let incarnation = self.procs[proc].incarnation;
        let Some(disk) = self.procs[proc].disk.as_mut() else { return };
        let commands = disk.take_commands();
        if commands.is_empty() {
            return;
        }
        let Some(log) = disk.log.as_mut() else { return };
        let mut failed = None;
        for c in commands {
            if let Err(e) = log.apply(c) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            // The core asked for something a log must refuse (an xid out of order).
            self.fail(Violation::new(
                Invariant::Disk,
                format!("replica {proc}: the log refused a request: {e}"),
            ));
            return;
        }
        if !disk.sync_scheduled {
            disk.sync_scheduled = true;
            let t = if self.dice.disk.chance(100_000) {
                self.dice.disk.range(SLOW_SYNC_MS.0, SLOW_SYNC_MS.1)
            } else {
                self.dice.disk.range(0, MAX_SYNC_DELAY_MS + 1)
            };
            self.schedule(t, Ev::DiskSync { proc, incarnation });
        }
    }

    /// A group commit, reported to the replica.
    pub(super) fn disk_sync(&mut self, proc: usize) {
        let Some(disk) = self.procs[proc].disk.as_mut() else { return };
        disk.sync_scheduled = false;
        let Some(log) = disk.log.as_mut() else { return };
        let synced = match log.sync() {
            Ok(s) => s,
            Err(e) => {
                self.fail(Violation::new(Invariant::Disk, format!("replica {proc}: sync failed: {e}")));
                return;
            }
        };
        let (view, checks) = self.observed();
        checks.disk_synced(&view, proc);
        self.with_replica(proc, |r| r.on_durable(synced.epoch, synced.xid));
    }

    /// The process died: its disk keeps what was synced and a prefix of the rest.
    pub(super) fn crash_disk(&mut self, proc: usize) {
        if let Some(disk) = self.procs[proc].disk.as_mut() {
            disk.lose_power(self.dice.disk.rng());
        }
    }

    /// Bit rot on `proc`'s disk (down at the time): which file and offset, if any byte was there.
    pub fn corrupt_disk(&mut self, proc: usize) -> Option<(String, usize)> {
        let disk = self.procs[proc].disk.as_ref()?;
        disk.disk.corrupt(self.dice.disk.rng())
    }
}
