//! Compiles `proto/*.proto` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/rudder.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Object JSON is shared, not copied, between the store, watchers and the wire.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
