//! Compiles the hand-written etcd subset with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/etcd.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Values are shared, not copied, between the workload and the wire.
        .bytes(".")
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
