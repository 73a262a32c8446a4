//! proto/chain.proto must stay wire-identical to the shared file other implementations use.
//! We keep it byte-identical, which is the simplest way to be sure.

#[test]
fn chain_proto_matches_the_shared_file() {
    let ours = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/chain.proto")).expect("proto/chain.proto");
    let shared_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/chain.proto");
    match std::fs::read_to_string(shared_path) {
        Ok(shared) => assert_eq!(ours, shared, "proto/chain.proto differs from ../shared/chain.proto"),
        // A checkout without the shared directory beside it can only check what it has.
        Err(e) => {
            eprintln!("../shared/chain.proto not readable ({e}); checking the package and services only");
            for needle in [
                "package adb;",
                "service HeadChainReplica",
                "service TailChainReplica",
                "service TailClient",
            ] {
                assert!(ours.contains(needle), "proto/chain.proto lost {needle:?}");
            }
        }
    }
}
