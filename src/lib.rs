pub mod client;
pub mod core;
pub mod runtime;

#[cfg(feature = "sim")]
#[path = "../sim/mod.rs"]
pub mod sim;

pub mod pb {
    pub mod adb {
        tonic::include_proto!("adb");
    }
    pub mod chainrep {
        pub mod ext {
            tonic::include_proto!("chainrep.ext");
        }
    }
}
