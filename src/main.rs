use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::process::ExitCode;

use actix_web::rt::signal::{ctrl_c, unix};
use clap::{Parser, Subcommand};
use event_booking::configuration::Settings;
use event_booking::probe;
use event_booking::startup::{Application, LISTENING};
use event_booking::telemetry::REQUEST_LOG;
use futures::future::select;

/// Sells event tickets over HTTP. Settings: config/default.toml (built in), a
/// file named by BOOKING_CONFIG, then BOOKING_* environment variables.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Calls GET /health on the configured port of this host; exit 0 if it
    /// answers 200, else 1. For a container HEALTHCHECK without curl.
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("event-booking: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings),
        Command::Healthcheck => healthcheck(&settings),
    }
}

fn serve(settings: Settings) -> ExitCode {
    // The request lines are `info` too: quiet unless asked for (or RUST_LOG says otherwise).
    let mut filter = settings.log_level.clone();
    if !settings.log_requests {
        filter.push_str(&format!(",{REQUEST_LOG}=warn"));
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).init();
    log::info!("configuration: {settings:?}");

    let served = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)?;
        // On stdout, for whoever started us (tests, scripts): the port may have been 0.
        println!("{LISTENING}http://{}", app.address());
        let _ = std::io::stdout().flush();
        app.run_until(shutdown_signal()).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            eprintln!("event-booking: {error}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (orchestrators) or SIGINT (Ctrl-C): both stop gracefully.
async fn shutdown_signal() {
    match unix::signal(unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            select(pin!(ctrl_c()), pin!(terminate.recv())).await;
        }
        Err(error) => {
            log::warn!("cannot listen for SIGTERM ({error}); only Ctrl-C stops gracefully");
            let _ = ctrl_c().await;
        }
    }
}

/// Exit 0 if `/health` answers 200 on this host's configured port.
fn healthcheck(settings: &Settings) -> ExitCode {
    // A server listening on every interface is reached on loopback.
    let host = match settings.host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let address = SocketAddr::new(host, settings.port);
    match probe::get(address, "/health") {
        Ok(status_line) if probe::is_ok(&status_line) => ExitCode::SUCCESS,
        Ok(status_line) => {
            eprintln!("event-booking healthcheck: {address} answered {status_line:?}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("event-booking healthcheck: {address}: {error}");
            ExitCode::FAILURE
        }
    }
}
