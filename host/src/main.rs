//! The `sluice` binary: parse the command line, hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = sluice::cli::Cli::parse();
    sluice::cli::init_logging(&cli.log_level, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sluice::cli::main(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("error: {}", sluice::base::secrets::redact(&text));
            std::process::ExitCode::FAILURE
        }
    }
}
