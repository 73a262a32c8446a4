// protox compiles the .proto files in pure Rust, so a fresh machine needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["chain.proto", "chainrep_ext.proto", "bench/etcd_kv.proto"];
    for f in files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
