//! `loadtest bench`: each scenario for a fixed time on one server, then
//! restart recovery and memory per user and per event; the table goes to
//! stdout and to `BENCHMARKS.md`, with the machine and the commit.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use std::time::Instant;

use super::api::{Api, Outcome};
use super::scenario::Op;
use super::spawn::SpawnedServer;
use super::{initialize, run_against, unique_event_names, Options, Report, Scenario};

/// Holders who cancel, one after another, for the cancel-cost figure.
const CANCELS: usize = 100;

/// Overload: this many times the connections of the other scenarios.
const OVERLOAD_FACTOR: usize = 10;
/// The store backlog of the second overload run: small enough that the
/// overload's connections overflow it, so that refusals are measured too.
const SMALL_BACKLOG: &str = "256";

#[derive(clap::Args, Debug, Clone)]
pub struct BenchOptions {
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Connections of every scenario.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Users booked for the memory figure, then recovered on restart.
    #[arg(long, default_value_t = 1_000_000)]
    pub orders: u64,
    /// Events initialized for the memory-per-event figure.
    #[arg(long, default_value_t = 100_000)]
    pub idle_events: usize,
    /// Where to write the results.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
}

/// Figures beyond the scenario table.
struct Footprint {
    /// Median time of a cancel that promotes the head of a short queue, and of a huge one.
    cancel_short_queue: Duration,
    cancel_long_queue: Duration,
    long_queue: u64,
    recovery: Duration,
    orders: u64,
    bytes_per_user: f64,
    bytes_per_user_recovered: f64,
    idle_events: usize,
    bytes_per_event: f64,
}

/// Runs the whole benchmark; returns the Markdown it wrote.
pub fn run(options: &BenchOptions) -> Result<String, String> {
    let mut reports = throughput(options)?;
    let overload = overload(options)?;
    let footprint = footprint(options)?;
    let markdown = render(options, &reports, &overload, &footprint);
    reports.extend(overload);
    std::fs::write(&options.output, &markdown)
        .map_err(|e| format!("cannot write {}: {e}", options.output.display()))?;
    match reports
        .iter()
        .find(|(_, report)| !report.verification.passed())
    {
        Some((label, _)) => Err(format!("{markdown}\nverification of {label} FAILED")),
        None => Ok(markdown),
    }
}

/// The scenarios, ceiling first, on one fresh server; drop once more with an
/// `Idempotency-Key` on every booking, for the cost of idempotency.
fn throughput(options: &BenchOptions) -> Result<Vec<(String, Report)>, String> {
    let server = SpawnedServer::start()?;
    let runs = [
        (Scenario::Ceiling, false),
        (Scenario::Drop, false),
        (Scenario::Spread, false),
        (Scenario::Churn, false),
        (Scenario::Drop, true),
    ];
    runs.into_iter()
        .map(|(scenario, idempotency_keys)| {
            let mut run = Options::defaults();
            run.scenario = scenario;
            run.duration = options.seconds;
            run.concurrency = options.concurrency;
            run.idempotency_keys = idempotency_keys;
            // Enough users that none of the scenarios runs out before the time is up.
            run.users = 100_000_000;
            let report = run_against(server.url(), &run)?;
            report.print_text();
            let label = format!(
                "{scenario:?}{}",
                if idempotency_keys {
                    " + Idempotency-Key"
                } else {
                    ""
                }
            );
            Ok((label, report))
        })
        .collect()
}

/// The drop with ten times the connections, whose clients wait out each
/// `Retry-After`: once with the default queue bounds, once with a store
/// backlog the connections overflow. Each on a server of its own.
fn overload(options: &BenchOptions) -> Result<Vec<(String, Report)>, String> {
    let runs = [
        ("Overload, defaults".to_string(), vec![]),
        (
            format!("Overload, store_backlog {SMALL_BACKLOG}"),
            vec![("BOOKING_STORE_BACKLOG", SMALL_BACKLOG)],
        ),
    ];
    runs.into_iter()
        .map(|(label, settings)| {
            let server = SpawnedServer::start_with(&settings)?;
            let mut run = Options::defaults();
            run.scenario = Scenario::Drop;
            run.duration = options.seconds;
            run.concurrency = options.concurrency * OVERLOAD_FACTOR;
            run.honor_retry_after = true;
            run.users = 100_000_000;
            let report = run_against(server.url(), &run)?;
            println!("{label}:");
            report.print_text();
            Ok((label, report))
        })
        .collect()
}

/// Memory per user and recovery time with `orders` stored, memory per idle event.
fn footprint(options: &BenchOptions) -> Result<Footprint, String> {
    let mut server = SpawnedServer::start()?;
    let empty = server.rss_bytes()?;
    let mut fill = Options::defaults();
    fill.users = options.orders;
    fill.requests = Some(options.orders);
    fill.duration = 3600.0;
    fill.concurrency = options.concurrency;
    fill.no_verify = true;
    let filled = run_against(server.url(), &fill)?;
    if filled.requests() != options.orders || filled.failures() > 0 {
        return Err(format!(
            "storing {} orders: {} sent, {} failed",
            options.orders,
            filled.requests(),
            filled.failures()
        ));
    }
    let full = server.rss_bytes()?;
    let (cancel_short_queue, cancel_long_queue) = cancel_costs(server.url(), &filled)?;
    let recovery = server.restart()?;
    let recovered = server.rss_bytes()?;
    drop(server);

    let server = SpawnedServer::start()?;
    let before = server.rss_bytes()?;
    let events = unique_event_names(options.idle_events);
    actix_web::rt::System::new().block_on(initialize(
        server.url(),
        &events,
        100,
        options.concurrency,
    ))?;
    let after = server.rss_bytes()?;
    Ok(Footprint {
        cancel_short_queue,
        cancel_long_queue,
        long_queue: filled.outcomes.waiting,
        recovery,
        orders: options.orders,
        bytes_per_user: full.saturating_sub(empty) as f64 / options.orders as f64,
        bytes_per_user_recovered: recovered.saturating_sub(empty) as f64 / options.orders as f64,
        idle_events: options.idle_events,
        bytes_per_event: after.saturating_sub(before) as f64 / options.idle_events as f64,
    })
}

/// Median latency of a cancel that hands the ticket to the head of the queue:
/// on `filled`'s event, whose queue is huge, and on a new event whose queue
/// holds about a hundred. Sequential requests on one connection.
fn cancel_costs(url: &str, filled: &Report) -> Result<(Duration, Duration), String> {
    let holders: Vec<u64> = filled
        .stats
        .records
        .iter()
        .filter_map(|record| match (record.op, &record.outcome) {
            (Op::Book { user, .. }, Outcome::Booked) => Some(user),
            _ => None,
        })
        .take(CANCELS)
        .collect();
    let big_event = filled
        .events
        .first()
        .ok_or("the fill run booked no event")?;
    actix_web::rt::System::new().block_on(async {
        let api = Api::new(url, 1);
        let long = median_cancel(&api, big_event, &holders).await?;
        // A small event: CANCELS holders and CANCELS + 10 waiting.
        let small_event = &unique_event_names(1)[0];
        api.initialize(small_event, CANCELS as u32).await?;
        for user in 0..(2 * CANCELS as u64 + 10) {
            api.book(small_event, user).await;
        }
        let holders: Vec<u64> = (0..CANCELS as u64).collect();
        let short = median_cancel(&api, small_event, &holders).await?;
        Ok((short, long))
    })
}

async fn median_cancel(api: &Api, event: &str, holders: &[u64]) -> Result<Duration, String> {
    let mut times = Vec::with_capacity(holders.len());
    for &user in holders {
        let started = Instant::now();
        match api.cancel(event, user).await {
            (_, Outcome::Reassigned { .. }) => times.push(started.elapsed()),
            other => {
                return Err(format!(
                    "cancel of u{user} at {event} did not promote: {other:?}"
                ))
            }
        }
    }
    times.sort_unstable();
    times
        .get(times.len() / 2)
        .copied()
        .ok_or_else(|| "no cancel measured".into())
}

fn render(
    options: &BenchOptions,
    reports: &[(String, Report)],
    overload: &[(String, Report)],
    footprint: &Footprint,
) -> String {
    let rate = |label: &str| {
        reports
            .iter()
            .find(|(l, _)| l == label)
            .map_or(1.0, |(_, r)| r.requests_per_second())
    };
    let (ceiling, drop) = (rate("Ceiling"), rate("Drop"));
    let mut md = String::from("# Benchmarks\n\nProduced by `scripts/bench.sh` (`loadtest bench`); do not edit by hand.\n\n");
    let _ = writeln!(md, "- Machine: {} cores, {}", cores(), cpu_model());
    let _ = writeln!(md, "- Commit: {}", commit());
    let _ = writeln!(
        md,
        "- Release build, `synchronous=full`, {} connections, {} s per scenario, load generator on the same machine\n",
        options.concurrency, options.seconds
    );
    md.push_str("| scenario | requests/s | p50 ms | p99 ms | ratio to ceiling | target | non-2xx | verified |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |\n");
    for (label, report) in reports {
        let target = match report.scenario {
            Scenario::Ceiling => String::new(),
            Scenario::Drop if label != "Drop" => {
                format!(
                    "≤ 15% below Drop: {:.0}% below",
                    100.0 * (1.0 - report.requests_per_second() / drop)
                )
            }
            Scenario::Drop => "≥ 60%, p99 ≤ 10 ms".into(),
            Scenario::Spread => "≥ 60%".into(),
            Scenario::Churn => "≥ 50%".into(),
        };
        let verified = match (&report.verification, report.verification.checked) {
            (_, false) => "n/a".to_string(),
            (v, true) if v.passed() => "passed".to_string(),
            (v, true) => format!("FAILED ({})", v.violations.len()),
        };
        let _ = writeln!(
            md,
            "| {label} | {:.0} | {:.2} | {:.2} | {:.0}% | {target} | {} | {verified} |",
            report.requests_per_second(),
            report.latency_ms(0.5),
            report.latency_ms(0.99),
            100.0 * report.requests_per_second() / ceiling,
            report.failures(),
        );
    }
    let _ = writeln!(
        md,
        "\nOverload: the drop with {} connections ({OVERLOAD_FACTOR}×), each waiting out the `Retry-After` of a refusal, as a well-behaved client does. Successful = booked or waiting; the ratio is to the successful rate of `Drop` above.\n",
        options.concurrency * OVERLOAD_FACTOR
    );
    md.push_str("| run | successful/s | ratio to Drop | accepted p99 ms | refused | refused p99 ms | errors | verified | target |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n");
    let drop_successes = reports
        .iter()
        .find(|(l, _)| l == "Drop")
        .map_or(1.0, |(_, r)| r.successes_per_second());
    for (label, report) in overload {
        let verified = match (&report.verification, report.verification.checked) {
            (_, false) => "n/a".to_string(),
            (v, true) if v.passed() => "passed".to_string(),
            (v, true) => format!("FAILED ({})", v.violations.len()),
        };
        let refused_p99 = if report.outcomes.refused > 0 {
            format!("{:.2}", report.refused_latency_ms(0.99))
        } else {
            "–".to_string()
        };
        let _ = writeln!(
            md,
            "| {label} | {:.0} | {:.0}% | {:.2} | {} | {refused_p99} | {} | {verified} | ≥ 80%, p99 < 100 ms, refused < 10 ms |",
            report.successes_per_second(),
            100.0 * report.successes_per_second() / drop_successes,
            report.latency_ms(0.99),
            report.outcomes.refused,
            report.outcomes.errors,
        );
    }
    md.push_str("\n| measurement | value | target |\n| --- | ---: | --- |\n");
    let _ = writeln!(
        md,
        "| cancel promoting the head, p50 of {CANCELS}: ~100 waiting / {} waiting | {:.2} ms / {:.2} ms | the same |",
        footprint.long_queue,
        footprint.cancel_short_queue.as_secs_f64() * 1000.0,
        footprint.cancel_long_queue.as_secs_f64() * 1000.0
    );
    let _ = writeln!(
        md,
        "| restart recovery, {} orders | {:.2} s to ready | ≤ 2 s |",
        footprint.orders,
        footprint.recovery.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| RSS per booked or waiting user, live ({} users) | {:.0} B | ≤ 200 B |",
        footprint.orders, footprint.bytes_per_user
    );
    let _ = writeln!(
        md,
        "| RSS per user after recovery | {:.0} B | |",
        footprint.bytes_per_user_recovered
    );
    let _ = writeln!(
        md,
        "| RSS per idle event ({} events) | {:.0} B | ≤ 2 KiB |",
        footprint.idle_events, footprint.bytes_per_event
    );
    md
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(str::trim)
                    .map(String::from)
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|o| !o.stdout.is_empty());
            if dirty {
                format!("{head} with uncommitted changes")
            } else {
                head
            }
        }
        None => "unknown (not a git checkout)".into(),
    }
}
