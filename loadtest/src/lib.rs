//! A load generator for the booking API that, after the storm, verifies that
//! the booking invariants held: what the server stores is exactly what its
//! clients were told, nothing is oversold, and the waiting list is a FIFO.
//!
//! Load runs on several threads, each with its own actix runtime and HTTP
//! client, and `--concurrency` connections in all, each sending its next
//! request as soon as the previous one is answered (a closed loop, like wrk).

mod api;
pub mod bench;
pub mod cluster;
mod cpu;
pub mod html;
mod report;
mod scenario;
pub mod spawn;
mod verify;

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use futures::stream::{self, StreamExt};

pub use api::Routes;
use api::{Api, Outcome};
pub use report::{Report, Verification};
pub use scenario::Scenario;
use scenario::{Op, Plan, Ratios, Rng};
use spawn::SpawnedServer;

#[derive(clap::Args, Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    /// Base URL of a running server.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Start the release server beside this binary on a free port with a temporary database.
    #[arg(long)]
    pub spawn: bool,
    #[arg(long, value_enum, default_value_t = Scenario::Drop)]
    pub scenario: Scenario,
    /// Tickets of each event.
    #[arg(long, default_value_t = 1_000)]
    pub tickets: u32,
    /// Distinct users; each books once.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// Events of the spread scenario.
    #[arg(long, default_value_t = 1_000)]
    pub events: usize,
    /// Churn: share of requests that cancel a booked user's ticket.
    #[arg(long, default_value_t = 0.3)]
    pub cancel_ratio: f64,
    /// Checkout: share of holds confirmed; the others lapse.
    #[arg(long, default_value_t = 0.5)]
    pub confirm_ratio: f64,
    /// Checkout: seconds each hold lasts (1 to 86400).
    #[arg(long, default_value_t = 2)]
    pub hold_secs: u32,
    /// Connections, each with one request in flight at a time.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Load threads; 0 means one per CPU core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Send an `Idempotency-Key` (unique per request) with every book and cancel.
    #[arg(long)]
    pub idempotency_keys: bool,
    /// Which routes to drive (and verify through): the old ones, or those
    /// with the event in the path.
    #[arg(long, value_enum, default_value_t = Routes::Legacy)]
    pub api: Routes,
    /// A refused request (503 `server_busy`, 429) makes its connection wait
    /// the `Retry-After` the server sent, plus a random share of it again,
    /// as a well-behaved client does.
    #[arg(long)]
    pub honor_retry_after: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Skip the verification after the run.
    #[arg(long)]
    pub no_verify: bool,
    /// Also write the report as one self-contained HTML page, with charts,
    /// to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
}

impl Options {
    /// The documented defaults, as if no option were given.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            options: Options,
        }
        <Defaults as clap::Parser>::parse_from(["loadtest"]).options
    }
}

/// Runs one scenario against the configured (or spawned) server.
pub fn run(options: &Options) -> Result<Report, String> {
    let server = options.spawn.then(SpawnedServer::start).transpose()?;
    match &server {
        Some(server) => run_against(server.url(), Some(server.pid()), options),
        None => run_against(&options.url, None, options),
    }
}

/// Runs one scenario against the server at `url`; with its `server_pid`
/// (a server of our own), the report also gives the server's CPU per request.
pub fn run_against(
    url: &str,
    server_pid: Option<u32>,
    options: &Options,
) -> Result<Report, String> {
    if options.concurrency == 0
        || !(0.0..=1.0).contains(&options.cancel_ratio)
        || !(0.0..=1.0).contains(&options.confirm_ratio)
        || !(1..=86_400).contains(&options.hold_secs)
        || options.duration <= 0.0
    {
        return Err(
            "--concurrency must be positive, --cancel-ratio and --confirm-ratio within 0..1, \
             --hold-secs 1 to 86400, --duration positive"
                .into(),
        );
    }
    let events = event_names(options);
    let system = actix_web::rt::System::new();
    system.block_on(initialize(
        Api::new(url, options.concurrency).on(options.api),
        &events,
        options.tickets,
        options.concurrency,
    ))?;

    let users = if options.scenario == Scenario::Ceiling {
        u64::MAX
    } else {
        options.users
    };
    let plan = Arc::new(Plan::new(
        options.scenario,
        events.len(),
        users,
        options.requests.unwrap_or(u64::MAX),
        Duration::from_secs_f64(options.duration),
        Ratios {
            cancel: options.cancel_ratio,
            confirm: options.confirm_ratio,
        },
    ));
    let done = Arc::new(AtomicBool::new(false));
    let progress = std::thread::spawn({
        let (plan, done, quiet) = (plan.clone(), done.clone(), options.json);
        move || show_progress(&plan, &done, quiet)
    });
    // Checkout: the event's counts, watched while the holds come and go.
    let monitor = (options.scenario == Scenario::Checkout).then(|| {
        let (url, event, done) = (url.to_string(), events[0].clone(), done.clone());
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(verify::watch_counts(&url, &event, &done))
        })
    });
    let cpu_before = cpu::Snapshot::take(server_pid);
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        n => n,
    }
    .min(options.concurrency);
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            // Connections split as evenly as they go.
            let connections =
                options.concurrency / threads + usize::from(thread < options.concurrency % threads);
            let (plan, url, events) = (plan.clone(), url.to_string(), events.clone());
            let client = Client {
                idempotency_keys: options.idempotency_keys,
                honor_retry_after: options.honor_retry_after,
                routes: options.api,
                hold_secs: options.hold_secs,
            };
            std::thread::spawn(move || {
                let load = load(&url, &plan, &events, connections, thread as u64, client);
                actix_web::rt::System::new().block_on(load)
            })
        })
        .collect();
    let mut stats = report::Stats::default();
    for worker in workers {
        stats.merge(worker.join().map_err(|_| "a load thread panicked")?);
    }
    let elapsed = plan.started.elapsed();
    let cpu_after = cpu::Snapshot::take(server_pid);
    done.store(true, Ordering::Relaxed);
    let _ = progress.join();
    let watched = match monitor {
        Some(monitor) => monitor
            .join()
            .map_err(|_| "the watch of the counts panicked")?,
        None => Vec::new(),
    };

    let mut report = Report::new(options.scenario, events, elapsed, stats);
    report.routes = options.api;
    report.url = url.to_string();
    report.cpu = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| cpu::CpuUse::between(&before, &after, report.requests()));
    if !options.no_verify && options.scenario != Scenario::Ceiling {
        // Lookups from one thread: a few hundred connections keep the server
        // busy; thousands would only wait in line (and time out as idle).
        let lookups = options.concurrency.min(256);
        let api = Api::new(url, lookups).on(options.api);
        let mut violations = watched;
        violations.extend(system.block_on(verify::verify(
            &api,
            &report.events,
            options.tickets,
            &report.stats.records,
            lookups,
        )));
        report.verification = Verification {
            checked: true,
            violations,
        };
    }
    Ok(report)
}

/// The events a scenario books.
fn event_names(options: &Options) -> Vec<String> {
    let count = match options.scenario {
        Scenario::Ceiling => 0,
        Scenario::Drop | Scenario::Churn | Scenario::Checkout => 1,
        Scenario::Spread => options.events.max(1),
    };
    unique_event_names(count)
}

/// Event ids unique to this run, so a run never meets an earlier one's events.
fn unique_event_names(count: usize) -> Vec<String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let run = format!("{:x}", nanos ^ u128::from(std::process::id()) << 64);
    (0..count).map(|i| format!("lt-{run}-{i}")).collect()
}

/// Creates `events` with `tickets` each, `concurrency` at a time.
async fn initialize(
    api: Api,
    events: &[String],
    tickets: u32,
    concurrency: usize,
) -> Result<(), String> {
    let results: Vec<Result<(), String>> = stream::iter(events)
        .map(|event| api.initialize(event, tickets))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// How each simulated client behaves.
#[derive(Clone, Copy)]
struct Client {
    idempotency_keys: bool,
    honor_retry_after: bool,
    routes: Routes,
    /// Checkout: the duration each hold asks for.
    hold_secs: u32,
}

/// One load thread: `connections` loops, each sending the plan's next request
/// when its previous one is answered.
async fn load(
    url: &str,
    plan: &Plan,
    events: &[String],
    connections: usize,
    thread: u64,
    client: Client,
) -> report::Stats {
    let api = Api::new(url, connections)
        .on(client.routes)
        .with_idempotency_keys(client.idempotency_keys);
    let loops = (0..connections).map(|connection| {
        let api = &api;
        async move {
            let mut stats = report::Stats::default();
            let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ (thread << 32 | connection as u64));
            // Connect first, as wrk does: a request's latency is the server's
            // answer, not the TCP handshake of a connection storm.
            api.health().await;
            while let Some(op) = plan.next(&mut rng) {
                let sent = plan.started.elapsed().as_micros() as u64;
                let (status, outcome) = match op {
                    Op::Book { event, user } => api.book(&events[event], user).await,
                    Op::Cancel { event, user } => api.cancel(&events[event], user).await,
                    Op::Hold { event, user } => {
                        api.hold(&events[event], user, client.hold_secs).await
                    }
                    Op::Confirm { event, user } => api.confirm(&events[event], user).await,
                    Op::Health => api.health().await,
                };
                let received = plan.started.elapsed().as_micros() as u64;
                plan.learn(&outcome, op);
                let refused = match outcome {
                    Outcome::Refused { retry_after_secs } => Some(retry_after_secs),
                    _ => None,
                };
                stats.record(op, status, outcome, sent, received);
                if let (true, Some(retry_after_secs)) = (client.honor_retry_after, refused) {
                    // Not past the end of the run.
                    let left = plan.deadline.saturating_duration_since(Instant::now());
                    let wait = retry_wait(retry_after_secs, &mut rng).min(left);
                    actix_web::rt::time::sleep(wait).await;
                }
            }
            stats
        }
    });
    let mut stats = report::Stats::default();
    for part in join_all(loops).await {
        stats.merge(part);
    }
    stats
}

/// How long a well-behaved client waits after a refusal: the server's
/// `Retry-After`, plus a random share of it again. Clients refused together
/// (as many are, the moment a queue fills) would otherwise all come back at
/// the same instant, for ever, and meet a full queue each time.
fn retry_wait(retry_after_secs: u64, rng: &mut Rng) -> Duration {
    let retry_after = Duration::from_secs(retry_after_secs);
    retry_after + Duration::from_micros(rng.below(retry_after.as_micros() as u64))
}

/// A progress bar on a terminal; a line a second otherwise (none with `--json`).
fn show_progress(plan: &Plan, done: &AtomicBool, quiet: bool) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut last_line = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let elapsed = plan.started.elapsed().as_secs_f64();
        let sent = plan.sent();
        let message = format!(
            "{:?}: {sent} requests in {elapsed:.1} s ({:.0}/s)",
            plan.scenario,
            sent as f64 / elapsed
        );
        match &bar {
            Some(bar) => bar.set_message(message),
            None if !quiet && last_line.elapsed() >= Duration::from_secs(1) => {
                eprintln!("{message}");
                last_line = Instant::now();
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_clients_wait_the_retry_after_and_spread_over_as_much_again() {
        let mut rng = Rng::new(1);
        let waits: Vec<Duration> = (0..1000).map(|_| retry_wait(1, &mut rng)).collect();
        let (shortest, longest) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(*shortest >= Duration::from_secs(1), "{shortest:?}");
        assert!(*longest < Duration::from_secs(2), "{longest:?}");
        // Spread over the whole second, not bunched.
        assert!(*shortest < Duration::from_millis(1050), "{shortest:?}");
        assert!(*longest > Duration::from_millis(1950), "{longest:?}");
        assert_eq!(retry_wait(0, &mut rng), Duration::ZERO);
    }
}
