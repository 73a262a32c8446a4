//! The core's traits, implemented over the simulated world: virtual time and outboxes that
//! the world drains after every step of a replica.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::core::{ClientOrigin, ClientToken, Clock, Coordinator, Member, Millis, Network, NodeId, PeerRequest, Replica, WriteOutcome};

/// The replica core as the simulator runs it.
pub type SimReplica = Replica<SimClock, SimNet, SimCoord>;

/// Virtual time shared by every replica of one run.
#[derive(Clone, Default)]
pub struct SimClock(pub Rc<Cell<Millis>>);

impl Clock for SimClock {
    fn now(&self) -> Millis {
        self.0.get()
    }
}

/// Something a replica asked the world to do.
#[derive(Clone, Debug)]
pub enum Outgoing {
    Peer { to: Member, epoch: u64, request: PeerRequest },
    Complete { token: ClientToken, outcome: WriteOutcome },
    Notify { origin: ClientOrigin },
    Join,
    MarkChainHeld,
    Rejoin,
    ReportSuspect { suspect: NodeId, seen_version: Option<u64> },
    LeaveChain,
    RemoveMember { suspect: NodeId },
}

pub type Outbox = Rc<RefCell<Vec<Outgoing>>>;

pub struct SimNet(pub Outbox);

impl Network for SimNet {
    fn send(&mut self, to: &Member, epoch: u64, request: PeerRequest) {
        self.0.borrow_mut().push(Outgoing::Peer {
            to: to.clone(),
            epoch,
            request,
        });
    }
    fn complete_client(&mut self, token: ClientToken, outcome: WriteOutcome) {
        self.0.borrow_mut().push(Outgoing::Complete { token, outcome });
    }
    fn notify_client(&mut self, origin: &ClientOrigin) {
        self.0.borrow_mut().push(Outgoing::Notify { origin: origin.clone() });
    }
}

pub struct SimCoord(pub Outbox);

impl Coordinator for SimCoord {
    fn join(&mut self) {
        self.0.borrow_mut().push(Outgoing::Join);
    }
    fn mark_chain_held(&mut self) {
        self.0.borrow_mut().push(Outgoing::MarkChainHeld);
    }
    fn rejoin(&mut self) {
        self.0.borrow_mut().push(Outgoing::Rejoin);
    }
    fn report_suspect(&mut self, suspect: NodeId, seen_version: Option<u64>) {
        self.0.borrow_mut().push(Outgoing::ReportSuspect { suspect, seen_version });
    }
    fn leave_chain(&mut self) {
        self.0.borrow_mut().push(Outgoing::LeaveChain);
    }
    fn remove_member(&mut self, suspect: NodeId) {
        self.0.borrow_mut().push(Outgoing::RemoveMember { suspect });
    }
}
