//! The kinds of fault the nemesis (`sim::nemesis`) makes, and their weights: data that the run's
//! shape (`sim::run_shape`) names and the world draws its repertoire from.

use std::fmt;

/// One kind of fault the nemesis can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Crash a replica; it restarts later as a new session.
    Crash,
    /// Pause a replica (the tail, half the time) for up to three session timeouts; a client
    /// may stop seeing membership changes for as long.
    Pause,
    /// Cut two replicas off from each other.
    CutReplicas,
    /// Cut a replica off from ZooKeeper.
    CutZk,
    /// Cut a client off from a replica.
    CutClient,
    /// A client sees no membership change for a while.
    StallClientView,
    /// A new replica joins (up to `max_replicas`).
    AddReplica,
    /// Every ZooKeeper session ends at once (the root deleted).
    ExpireAll,
    /// A replica keeps its lease but acts on an old membership for a while.
    StallMembership,
    /// A gray failure: two live replicas stop reaching each other, both ways or one way, for
    /// longer than the chain takes to route around it; both keep their ZooKeeper sessions.
    BreakLink,
    /// A gray failure: a replica reaches no other replica for long, but still reaches ZooKeeper.
    IsolateReplica,
    /// Durable runs: every replica process dies at once; each disk keeps what it had synced
    /// and a prefix of the rest. They all restart on their disks.
    PowerLoss,
    /// Durable runs: a replica dies and a byte of its disk flips before it restarts.
    CorruptDisk,
}

/// The nemesis's faults and their weights: at each turn it draws one, with probability its
/// weight over the sum of the weights of the faults in the run's repertoire.
pub const FAULTS: [(Fault, u64); 11] = [
    (Fault::Crash, 40),
    (Fault::Pause, 40),
    (Fault::CutReplicas, 40),
    (Fault::CutZk, 20),
    (Fault::CutClient, 20),
    (Fault::StallClientView, 10),
    (Fault::AddReplica, 10),
    // Rare: a run goes on only once a head has adopted the retained copies.
    (Fault::ExpireAll, 3),
    (Fault::StallMembership, 20),
    (Fault::BreakLink, 15),
    (Fault::IsolateReplica, 10),
];

/// The faults of durable runs only, drawn into the repertoire after everything else the run's
/// shape draws, so that runs without disks draw exactly as before.
pub const DISK_FAULTS: [(Fault, u64); 2] = [(Fault::PowerLoss, 4), (Fault::CorruptDisk, 10)];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::Pause => "pause",
            Fault::CutReplicas => "cut-replicas",
            Fault::CutZk => "cut-zk",
            Fault::CutClient => "cut-client",
            Fault::StallClientView => "stall-client-view",
            Fault::AddReplica => "add-replica",
            Fault::ExpireAll => "expire-all",
            Fault::StallMembership => "stall-membership",
            Fault::BreakLink => "break-link",
            Fault::IsolateReplica => "isolate-replica",
            Fault::PowerLoss => "power-loss",
            Fault::CorruptDisk => "corrupt-disk",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The nemesis's own state in a run.
pub struct NemesisState {
    /// Its repertoire, with the faults' weights (see `World::new`).
    pub faults: Vec<(Fault, u64)>,
    /// Every session was ended at once: no more faults until no live replica holds a retained
    /// copy, because until a head adopts one, the copies are the only state there is.
    pub mass_loss_recovering: bool,
    /// Every process lost power: no more faults until all are back and a head adopted the best
    /// disk copy.
    pub power_loss_recovering: bool,
}
