//! `cargo run --release --bin loadtest -- --help`

use std::process::ExitCode;

use clap::Parser;
use event_booking::loadtest::{self, Options};

fn main() -> ExitCode {
    let options = Options::parse();
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
    if report.verification.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
