pub mod bench;
pub mod cli;
pub mod client;
pub mod core;
pub mod runtime;
pub mod status;
pub mod storage;

#[cfg(feature = "sim")]
#[path = "../sim/mod.rs"]
pub mod sim;

pub mod pb {
    pub mod adb {
        tonic::include_proto!("adb");
    }
    /// etcd's KV service, for benchmarking against etcd only.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod chainrep {
        pub mod ext {
            tonic::include_proto!("chainrep.ext");
        }
    }
}
