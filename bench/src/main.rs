//! `rudder-bench`: Rudder's API server beside a single-member etcd. The logic is in the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = rudder_bench::Args::parse();
    // Interrupting drops the benchmark future, and with it the guards that kill both servers.
    let outcome = tokio::select! {
        r = rudder_bench::run(args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        // Every figure was printed; a missed target is a result to read, not a crash.
        Ok(_report) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nrudder-bench: ERROR: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
