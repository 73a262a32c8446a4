pub mod core;
pub mod runtime;

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
