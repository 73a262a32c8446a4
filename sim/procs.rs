//! A replica process as the world runs it: its incarnation, whether it is up, the core replica,
//! what the replica asked for, and its shape after its last step.

use crate::sim::disks::ProcDisk;
use crate::sim::env::Outbox;
pub use crate::sim::env::SimReplica;
use crate::sim::events::Ev;
use crate::sim::shape::Shape;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Up,
    Paused,
    Crashed,
}

pub struct Proc {
    pub incarnation: u32,
    pub status: Status,
    pub replica: Option<SimReplica>,
    pub outbox: Outbox,
    pub addr: String,
    /// The replica's shape after its last step.
    pub shape: Shape,
    /// What reached the process while it was paused, in order.
    pub(super) held: Vec<Ev>,
    /// Durable runs: the process's disk, which outlives its incarnations.
    pub disk: Option<ProcDisk>,
    /// Its `proposeStateUpdate` and `stateTransfer` name no session, as another
    /// implementation's do: its successors take it for one and watch it (`core::suspicion`).
    pub unnamed: bool,
}
