use std::io::Write;
use std::pin::pin;
use std::process::ExitCode;

use actix_web::rt::signal::{ctrl_c, unix};
use event_booking::configuration::Settings;
use event_booking::startup::{Application, LISTENING};
use futures::future::select;

fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("event-booking: {error}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(&settings.log_level),
    )
    .init();
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
