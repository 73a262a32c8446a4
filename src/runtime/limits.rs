//! How large one incoming gRPC message may be, per method.
//!
//! tonic sets the decoding limit per service, but the services of chain.proto mix methods whose
//! messages carry a whole state (`stateTransfer`, our `Replicate` stream) with client and peer
//! methods whose valid messages are around a kilobyte. One service-wide limit big enough for
//! the first lets a caller make the replica buffer hundreds of MiB per call of the second kind
//! before any check can refuse it. So every service is registered twice, once per limit, behind
//! [`BySize`], which picks the instance from the request path. tonic refuses a message over the
//! instance's limit from the 5-byte gRPC length prefix, before buffering its body, with
//! `OUT_OF_RANGE` "... found N bytes, the limit is: L bytes".

use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::server::NamedService;

/// The small limit never goes below this: a valid client or small peer message is under
/// 1.1 KiB with the default 1024-byte key limit, so 64 KiB leaves room for any reasonable
/// change to the messages while keeping a flood of oversized calls cheap (each costs the
/// replica at most this much before it is refused).
pub const MIN_SMALL_MESSAGE_BYTES: usize = 64 * 1024;

/// Room beside the key in the largest small message: a tail-variant `increment` also carries
/// the client's callback host (a DNS name is at most 253 bytes), a port, a cxid, a delta and
/// the field tags, under 300 bytes in all.
const NON_KEY_HEADROOM: usize = 4 * 1024;

/// The paths whose request messages may legitimately be large: a state transfer carries the
/// whole state, a `Replicate` batch up to 512 updates. `PullState` is not here: its request is
/// two fields; only its reply carries a state, and replies are limited by the encoding limit,
/// which stays large on both instances.
pub const STATE_CARRYING_PATHS: [&str; 4] = [
    "/adb.HeadChainReplica/stateTransfer",
    "/adb.TailChainReplica/stateTransfer",
    "/chainrep.ext.ChainExt/Replicate",
    "/chainrep.ext.ChainExt/DeltaTransfer",
];

/// The decoding limit of every method but the state-carrying ones. It follows the key limit
/// (`--max-key-bytes` goes up to 1 MiB) so that a key the head accepts also fits the
/// `proposeStateUpdate` that carries it down the chain.
pub fn small_message_limit(max_key_bytes: usize) -> usize {
    max_key_bytes.saturating_add(NON_KEY_HEADROOM).max(MIN_SMALL_MESSAGE_BYTES)
}

/// Whether a request to `path` may carry a large message.
pub fn carries_state(path: &str) -> bool {
    STATE_CARRYING_PATHS.contains(&path)
}

/// The two decoding limits of one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageLimits {
    /// Client methods and the small peer methods.
    pub small: usize,
    /// The state-carrying methods; also the encoding limit of every reply.
    pub large: usize,
}

impl MessageLimits {
    /// Build the service twice with `make(decoding limit, encoding limit)`, one per limit.
    pub fn split<S>(self, make: impl Fn(usize, usize) -> S) -> BySize<S> {
        BySize {
            small: make(self.small, self.large),
            large: make(self.large, self.large),
        }
    }
}

/// Two instances of one generated gRPC server that differ only in their decoding limit;
/// requests to [`STATE_CARRYING_PATHS`] go to `large`, everything else to `small`.
#[derive(Clone)]
pub struct BySize<S> {
    small: S,
    large: S,
}

impl<S, B> Service<http::Request<B>> for BySize<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Either may take the next request, so both must be ready. (tonic's generated
        // servers always are.)
        match self.small.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.large.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if carries_state(request.uri().path()) {
            self.large.call(request)
        } else {
            self.small.call(request)
        }
    }
}

impl<S: NamedService> NamedService for BySize<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use std::future::{ready, Ready};

    use prost::Message;

    use super::*;
    use crate::pb::adb;

    /// Answers with the decoding limit it was built with, so a test sees which instance
    /// took a request.
    #[derive(Clone)]
    struct Tagged(usize);

    impl Service<http::Request<()>> for Tagged {
        type Response = usize;
        type Error = std::convert::Infallible;
        type Future = Ready<Result<usize, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            ready(Ok(self.0))
        }
    }

    async fn routed(path: &str) -> usize {
        let limits = MessageLimits { small: 10, large: 1000 };
        let mut svc = limits.split(|decode, encode| {
            assert_eq!(encode, 1000, "replies may be large on both instances");
            Tagged(decode)
        });
        let request = http::Request::builder().uri(format!("http://replica{path}")).body(()).unwrap();
        svc.call(request).await.unwrap()
    }

    #[tokio::test]
    async fn only_state_carrying_methods_get_the_large_limit() {
        for path in STATE_CARRYING_PATHS {
            assert_eq!(routed(path).await, 1000, "{path}");
        }
        for path in [
            "/adb.HeadChainReplica/increment",
            "/adb.HeadChainReplica/delete",
            "/adb.HeadChainReplica/get",
            "/adb.HeadChainReplica/proposeStateUpdate",
            "/adb.HeadChainReplica/getLatestXid",
            "/adb.HeadChainReplica/xidProcessed",
            "/adb.TailChainReplica/increment",
            "/adb.TailChainReplica/delete",
            "/adb.TailChainReplica/get",
            "/adb.TailChainReplica/proposeStateUpdate",
            "/adb.TailChainReplica/getLatestXid",
            "/adb.TailClient/cxidProcessed",
            "/chainrep.ext.ChainExt/PullState",
            "/chainrep.ext.ChainExt/Describe",
            "/grpc.health.v1.Health/Check",
        ] {
            assert_eq!(routed(path).await, 10, "{path}");
        }
    }

    #[tokio::test]
    async fn near_misses_of_a_state_carrying_path_stay_small() {
        for path in [
            "/adb.HeadChainReplica/stateTransfer/",
            "/adb.HeadChainReplica/stateTransferX",
            "/adb.HeadChainReplica/StateTransfer",
            "/x/adb.HeadChainReplica/stateTransfer",
            "/adb.TailClient/stateTransfer",
            "/chainrep.ext.ChainExt/replicate",
            "/",
        ] {
            assert_eq!(routed(path).await, 10, "{path}");
        }
    }

    #[test]
    fn the_small_limit_follows_the_key_limit_with_a_floor() {
        assert_eq!(small_message_limit(1024), MIN_SMALL_MESSAGE_BYTES);
        assert_eq!(small_message_limit(1), MIN_SMALL_MESSAGE_BYTES);
        assert_eq!(small_message_limit(1 << 20), (1 << 20) + NON_KEY_HEADROOM);
        assert_eq!(small_message_limit(usize::MAX), usize::MAX);
    }

    /// The largest valid small messages (a key at the limit, the longest DNS name as callback
    /// host, every number at its widest) must fit, at the default key limit and the largest.
    #[test]
    fn the_largest_valid_small_messages_fit() {
        for max_key in [1024, 1 << 20] {
            let key = "k".repeat(max_key);
            let limit = small_message_limit(max_key);
            let sizes = [
                adb::TailIncrementRequest {
                    key: key.clone(),
                    incr_value: i32::MIN,
                    host: "h".repeat(253),
                    port: 65535,
                    cxid: i32::MIN,
                }
                .encoded_len(),
                adb::TailDeleteRequest {
                    key: key.clone(),
                    host: "h".repeat(253),
                    port: 65535,
                    cxid: i32::MIN,
                }
                .encoded_len(),
                adb::HeadStateUpdateRequest {
                    src: u64::MAX,
                    xid: u64::MAX,
                    key: key.clone(),
                    value: i32::MIN,
                }
                .encoded_len(),
                adb::TailStateUpdateRequest {
                    src: u64::MAX,
                    xid: u64::MAX,
                    key: key.clone(),
                    value: i32::MIN,
                    host: "h".repeat(253),
                    port: 65535,
                    cxid: i32::MIN,
                }
                .encoded_len(),
            ];
            for size in sizes {
                assert!(size <= limit, "a valid message of {size} bytes over the limit {limit}");
            }
        }
    }
}
