//! End-to-end behaviour of the head variant: real ZooKeeper, real `chain-replica` processes,
//! real gRPC sockets. The bodies are shared with the tail variant (tests/tail_variant.rs) in
//! tests/support/scenarios.rs.

mod support;

use support::scenarios::{self, HEAD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_replica_semantics() {
    scenarios::single_replica_semantics(HEAD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_answer_by_role() {
    scenarios::three_replicas_answer_by_role(HEAD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_sum_exactly() {
    scenarios::concurrent_clients_sum_exactly(HEAD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_head_middle_and_tail_loses_nothing() {
    scenarios::killing_head_middle_and_tail_loses_nothing(HEAD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_replica_serves_only_after_state_transfer() {
    scenarios::a_fourth_replica_serves_only_after_state_transfer(HEAD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tail_never_serves_stale_reads() {
    scenarios::a_paused_tail_never_serves_stale_reads(HEAD).await;
}
