//! The kinds of fault the gRPC tier's nemesis (`grpc::nemesis`) makes, and their weights: data
//! that the run's shape (`grpc::run_shape`) names and the nemesis draws from.

use std::fmt;

/// One kind of fault the nemesis can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Crash a replica; it comes back later as a new process with a new session.
    Crash,
    /// Cut two replicas off from each other.
    CutReplicas,
    /// Cut a replica off from the coordinator.
    CutCoordinator,
    /// Cut a client off from a replica.
    CutClient,
    /// A client sees no membership change for a while.
    StallClientView,
    /// A new replica joins (up to `max_replicas`); about one in four speaks only classic calls.
    AddReplica,
    /// Bytes between two places (replicas, or a replica and a client) take longer for a while,
    /// around or past the RPC deadlines.
    SlowLink,
    /// A connection between replicas is reset.
    ResetConnection,
}

/// The nemesis's faults and their weights: at each turn it draws one, with probability its
/// weight over the sum of the weights of the faults in the run's repertoire.
pub const FAULTS: [(Fault, u64); 8] = [
    (Fault::Crash, 2),
    (Fault::CutReplicas, 2),
    (Fault::CutCoordinator, 2),
    (Fault::CutClient, 1),
    (Fault::StallClientView, 1),
    (Fault::AddReplica, 1),
    (Fault::SlowLink, 1),
    (Fault::ResetConnection, 1),
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::CutReplicas => "cut-replicas",
            Fault::CutCoordinator => "cut-coordinator",
            Fault::CutClient => "cut-client",
            Fault::StallClientView => "stall-client-view",
            Fault::AddReplica => "add-replica",
            Fault::SlowLink => "slow-link",
            Fault::ResetConnection => "reset-connection",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
