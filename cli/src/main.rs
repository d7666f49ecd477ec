//! The `rudder` binary: parse the command line, run it, print any error as one line.
//!
//! Exit codes as kubectl's: 0 success (and `--help`, `--version`), 1 any error, usage errors
//! included; `diff` and `status` return their own codes for results.

use clap::Parser;

fn main() {
    let cli = match rudder_cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => std::process::exit(rudder_cli::usage_exit(&e, std::env::args_os().len() <= 1)),
    };
    std::process::exit(match run(cli) {
        Ok(code) => code,
        Err(e) => {
            match e.downcast::<rudder_cli::CliError>() {
                // `rudder get pods | head` closing the pipe is not a failure to report.
                Ok(e) if e.is_broken_pipe() => 0,
                Ok(rudder_cli::CliError::Reported) => 1,
                Ok(e) => {
                    eprintln!("{e}");
                    1
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
    });
}

fn run(cli: rudder_cli::Cli) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))?;
    Ok(rt.block_on(rudder_cli::run(cli))?)
}
