//! `cargo run --release --bin loadtest -- --help`; the benchmark: `scripts/bench.sh`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loadtest::{bench, Options};

/// Load the booking server, then verify that what it stores is what its clients were told.
#[derive(Parser)]
#[command(name = "loadtest", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Benchmark>,
    #[command(flatten)]
    options: Options,
}

#[derive(Subcommand)]
enum Benchmark {
    /// Every scenario for a fixed time, recovery and memory; writes BENCHMARKS.md.
    Bench(bench::BenchOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Benchmark::Bench(options)) = cli.command {
        return match bench::run(&options) {
            Ok(markdown) => {
                println!("\n{markdown}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("loadtest bench: {error}");
                ExitCode::from(2)
            }
        };
    }
    let options = cli.options;
    let report = match loadtest::run(&options) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("loadtest: {error}");
            return ExitCode::from(2);
        }
    };
    if options.json {
        println!("{}", report.to_json());
    } else {
        report.print_text();
    }
    if let Some(path) = &options.html {
        if let Err(error) = loadtest::html::write(&report, &options, path) {
            eprintln!("loadtest: writing {}: {error}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.verification.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
