//! `loadtest bench`: each scenario for a fixed time on one server, in rounds,
//! then restart recovery and memory per user, per event and per booking with
//! an `Idempotency-Key`; the table goes to
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

/// Pairs of drop runs, without and with an `Idempotency-Key`, for its cost.
const IDEMPOTENCY_PAIRS: usize = 3;

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
    /// Rounds of the scenarios, each round ceiling first. A ratio is taken
    /// against the ceiling of its own round; the table shows the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub rounds: u16,
    /// Connections of every scenario.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Users booked for the memory figure, then recovered on restart; a
    /// quarter as many book with an `Idempotency-Key`, for the memory per key.
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
    keyed_orders: u64,
    /// RSS per booking sent with an `Idempotency-Key`: the user's and the key's.
    bytes_per_keyed_booking: f64,
}

/// A drop without and one with an `Idempotency-Key` on every booking, run
/// back to back on the same server.
struct Pair {
    plain: Report,
    keyed: Report,
}

impl Pair {
    /// The share of throughput that the keys cost.
    fn cost(&self) -> f64 {
        1.0 - self.keyed.requests_per_second() / self.plain.requests_per_second()
    }
}

/// Every scenario once, back to back, ceiling first.
struct Round(Vec<Report>);

impl Round {
    fn report(&self, scenario: Scenario) -> Option<&Report> {
        self.0.iter().find(|report| report.scenario == scenario)
    }

    /// `scenario`'s rate over this round's ceiling.
    fn ratio(&self, scenario: Scenario) -> Option<f64> {
        let ceiling = self.report(Scenario::Ceiling)?.requests_per_second();
        Some(self.report(scenario)?.requests_per_second() / ceiling)
    }
}

/// The runs on the first server.
struct Throughput {
    rounds: Vec<Round>,
    idempotency: Vec<Pair>,
}

/// Runs the whole benchmark; returns the Markdown it wrote.
pub fn run(options: &BenchOptions) -> Result<String, String> {
    let Throughput {
        rounds,
        idempotency: pairs,
    } = throughput(options)?;
    let overload = overload(options)?;
    let footprint = footprint(options)?;
    let markdown = render(options, &rounds, &pairs, &overload, &footprint);
    let mut reports = Vec::new();
    for (number, round) in rounds.into_iter().enumerate() {
        for report in round.0 {
            reports.push((
                format!("{:?}, round {}", report.scenario, number + 1),
                report,
            ));
        }
    }
    for (round, pair) in pairs.into_iter().enumerate() {
        reports.push((format!("Drop, pair {}", round + 1), pair.plain));
        reports.push((
            format!("Drop + Idempotency-Key, pair {}", round + 1),
            pair.keyed,
        ));
    }
    for run in overload {
        reports.push((format!("{}, usual connections", run.label), run.usual));
        reports.push((run.label, run.overloaded));
    }
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

/// Rounds of the scenarios, ceiling first, on one fresh server; then, on the
/// same server, pairs of drops without and with an `Idempotency-Key` on every
/// booking, for the cost of idempotency. A ratio or a cost from one run alone
/// would mostly measure how the machine's speed drifted between two runs.
fn throughput(options: &BenchOptions) -> Result<Throughput, String> {
    let server = SpawnedServer::start()?;
    let run = |scenario: Scenario, idempotency_keys: bool| {
        let mut run = Options::defaults();
        run.scenario = scenario;
        run.duration = options.seconds;
        run.concurrency = options.concurrency;
        run.idempotency_keys = idempotency_keys;
        // Enough users that none of the scenarios runs out before the time is up.
        run.users = 100_000_000;
        let report = run_against(server.url(), Some(server.pid()), &run)?;
        report.print_text();
        Ok::<_, String>(report)
    };
    let scenarios = [
        Scenario::Ceiling,
        Scenario::Drop,
        Scenario::Spread,
        Scenario::Churn,
    ];
    let rounds = (0..options.rounds)
        .map(|_| {
            let reports = scenarios.into_iter().map(|scenario| run(scenario, false));
            Ok(Round(reports.collect::<Result<_, String>>()?))
        })
        .collect::<Result<_, String>>()?;
    // Every other pair runs the keyed drop first, so that a server slowing
    // down as its log and key map grow does not weigh on one side only.
    let idempotency = (0..IDEMPOTENCY_PAIRS)
        .map(|pair| {
            Ok(if pair % 2 == 0 {
                let plain = run(Scenario::Drop, false)?;
                Pair {
                    plain,
                    keyed: run(Scenario::Drop, true)?,
                }
            } else {
                let keyed = run(Scenario::Drop, true)?;
                Pair {
                    plain: run(Scenario::Drop, false)?,
                    keyed,
                }
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Throughput {
        rounds,
        idempotency,
    })
}

/// One overload run: the drop at the usual connections, then at ten times
/// as many, back to back on the same server, so that their ratio does not
/// depend on how fast the machine was at another moment.
struct Overload {
    label: String,
    usual: Report,
    overloaded: Report,
}

/// The drop with ten times the connections, whose clients wait out each
/// `Retry-After`: once with the default queue bounds, once with a store
/// backlog the connections overflow. Each on a server of its own.
fn overload(options: &BenchOptions) -> Result<Vec<Overload>, String> {
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
            let drop = |concurrency| {
                let mut run = Options::defaults();
                run.scenario = Scenario::Drop;
                run.duration = options.seconds;
                run.concurrency = concurrency;
                run.honor_retry_after = true;
                run.users = 100_000_000;
                let report = run_against(server.url(), Some(server.pid()), &run)?;
                println!("{label}, {concurrency} connections:");
                report.print_text();
                Ok::<_, String>(report)
            };
            Ok(Overload {
                usual: drop(options.concurrency)?,
                overloaded: drop(options.concurrency * OVERLOAD_FACTOR)?,
                label,
            })
        })
        .collect()
}

/// Books `orders` users on one new event (with an `Idempotency-Key` each if
/// `keyed`), every booking answered 2xx.
fn fill(
    server: &SpawnedServer,
    options: &BenchOptions,
    orders: u64,
    keyed: bool,
) -> Result<Report, String> {
    let mut fill = Options::defaults();
    fill.users = orders;
    fill.requests = Some(orders);
    fill.duration = 3600.0;
    fill.concurrency = options.concurrency;
    fill.idempotency_keys = keyed;
    fill.no_verify = true;
    let filled = run_against(server.url(), Some(server.pid()), &fill)?;
    if filled.requests() != orders || filled.failures() > 0 {
        return Err(format!(
            "storing {orders} orders: {} sent, {} failed",
            filled.requests(),
            filled.failures()
        ));
    }
    Ok(filled)
}

/// Memory per user and recovery time with `orders` stored, memory per idle
/// event and per booking with an `Idempotency-Key`.
fn footprint(options: &BenchOptions) -> Result<Footprint, String> {
    let mut server = SpawnedServer::start()?;
    let empty = server.rss_bytes()?;
    let filled = fill(&server, options, options.orders, false)?;
    let full = server.rss_bytes()?;
    let (cancel_short_queue, cancel_long_queue) = cancel_costs(server.url(), &filled)?;
    let recovery = server.restart()?;
    let recovered = server.rss_bytes()?;
    drop(server);

    let server = SpawnedServer::start()?;
    let before = server.rss_bytes()?;
    let events = unique_event_names(options.idle_events);
    actix_web::rt::System::new().block_on(initialize(
        Api::new(server.url(), options.concurrency),
        &events,
        100,
        options.concurrency,
    ))?;
    let after = server.rss_bytes()?;
    let keyed_orders = (options.orders / 4).max(1);
    fill(&server, options, keyed_orders, true)?;
    let keyed = server.rss_bytes()?;
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
        keyed_orders,
        bytes_per_keyed_booking: keyed.saturating_sub(after) as f64 / keyed_orders as f64,
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
    rounds: &[Round],
    pairs: &[Pair],
    overload: &[Overload],
    footprint: &Footprint,
) -> String {
    let mut md = String::from("# Benchmarks\n\nProduced by `scripts/bench.sh` (`loadtest bench`); do not edit by hand.\n\n");
    let _ = writeln!(md, "- Machine: {} cores, {}", cores(), cpu_model());
    let _ = writeln!(md, "- Commit: {}", commit());
    let _ = writeln!(
        md,
        "- Release build, `synchronous=full`, {} connections, {} s per scenario, {} rounds, load generator on the same machine\n",
        options.concurrency, options.seconds, rounds.len()
    );
    md.push_str(&scenario_table(rounds));
    md.push_str(
        "\nCPU: the server's (all its threads) and the load generator's CPU time per request, user and kernel, and the share of the machine's cores that neither used, during the load. Both share the cores. Where no core is left idle, requests/s is the cores' time divided by the CPU per request of both programs, so the ratio to the ceiling is the ceiling's CPU per request over the scenario's; idle left over is time when every connection was waiting, for a commit's fsync.\n",
    );
    let _ = writeln!(
        md,
        "\nIdempotency: the drop without and with an `Idempotency-Key` on every booking, {} pairs run back to back on the same server after the scenarios above (the second pair keyed first); the cost is the median of the pairs' costs.\n",
        pairs.len()
    );
    md.push_str("| pair | Drop req/s | + Idempotency-Key req/s | cost | p99 ms without / with | non-2xx | verified |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for (round, pair) in pairs.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.1}% | {:.2} / {:.2} | {} | {} / {} |",
            round + 1,
            pair.plain.requests_per_second(),
            pair.keyed.requests_per_second(),
            100.0 * pair.cost(),
            pair.plain.latency_ms(0.99),
            pair.keyed.latency_ms(0.99),
            pair.plain.failures() + pair.keyed.failures(),
            verified(&pair.plain),
            verified(&pair.keyed),
        );
    }
    let mut costs: Vec<f64> = pairs.iter().map(Pair::cost).collect();
    costs.sort_by(f64::total_cmp);
    if let Some(median) = costs.get(costs.len() / 2) {
        let _ = writeln!(
            md,
            "| median | | | {:.1}% | target ≤ 15% | | |",
            100.0 * median
        );
    }
    let _ = writeln!(
        md,
        "\nOverload: on a server of its own, the drop with {} connections, then with {} ({OVERLOAD_FACTOR}×), each connection waiting out the `Retry-After` of a refusal, with jitter, as a well-behaved client does. Successful = booked or waiting; the ratio is of the two successful rates.\n",
        options.concurrency,
        options.concurrency * OVERLOAD_FACTOR
    );
    md.push_str("| run | successful/s, usual | successful/s, overloaded | ratio | accepted p99 ms | refused | refused p99 ms | errors | verified | target |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n");
    for Overload {
        label,
        usual,
        overloaded,
    } in overload
    {
        let refused_p99 = if overloaded.outcomes.refused > 0 {
            format!("{:.2}", overloaded.refused_latency_ms(0.99))
        } else {
            "–".to_string()
        };
        let _ = writeln!(
            md,
            "| {label} | {:.0} | {:.0} | {:.0}% | {:.2} | {} | {refused_p99} | {} | {} / {} | ≥ 80%, p99 < 100 ms, refused < 10 ms |",
            usual.successes_per_second(),
            overloaded.successes_per_second(),
            100.0 * overloaded.successes_per_second() / usual.successes_per_second(),
            overloaded.latency_ms(0.99),
            overloaded.outcomes.refused,
            overloaded.outcomes.errors,
            verified(usual),
            verified(overloaded),
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
    let _ = writeln!(
        md,
        "| RSS per booking with an `Idempotency-Key`, user and key ({} bookings) | {:.0} B | |",
        footprint.keyed_orders, footprint.bytes_per_keyed_booking
    );
    md
}

/// One row per scenario: the round whose ratio to its own ceiling is the
/// median (for the ceiling, the median rate), and every round's figure.
fn scenario_table(rounds: &[Round]) -> String {
    let mut md = String::from("| scenario | requests/s | p50 ms | p99 ms | ratio to ceiling | each round | target | non-2xx | verified | server CPU µs/req | load generator CPU µs/req | machine idle |\n");
    md.push_str(
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |\n",
    );
    for scenario in [
        Scenario::Ceiling,
        Scenario::Drop,
        Scenario::Spread,
        Scenario::Churn,
    ] {
        // (the figure that ranks the rounds, its round's report)
        let mut ranked: Vec<(f64, &Report)> = rounds
            .iter()
            .filter_map(|round| {
                let report = round.report(scenario)?;
                let figure = match scenario {
                    Scenario::Ceiling => report.requests_per_second(),
                    _ => round.ratio(scenario)?,
                };
                Some((figure, report))
            })
            .collect();
        let each_round = ranked
            .iter()
            .map(|(figure, _)| match scenario {
                Scenario::Ceiling => format!("{:.0}k", figure / 1000.0),
                _ => format!("{:.0}%", 100.0 * figure),
            })
            .collect::<Vec<_>>()
            .join(" / ");
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        let Some(&(figure, median)) = ranked.get(ranked.len() / 2) else {
            continue;
        };
        let (ratio, target) = match scenario {
            Scenario::Ceiling => (1.0, ""),
            Scenario::Drop => (figure, "≥ 60%, p99 ≤ 10 ms"),
            Scenario::Spread => (figure, "≥ 60%"),
            Scenario::Churn => (figure, "≥ 50%"),
        };
        let reports: Vec<&Report> = ranked.iter().map(|(_, report)| *report).collect();
        let _ = writeln!(
            md,
            "| {scenario:?} | {:.0} | {:.2} | {:.2} | {:.0}% | {each_round} | {target} | {} | {} | {} |",
            median.requests_per_second(),
            median.latency_ms(0.5),
            median.latency_ms(0.99),
            100.0 * ratio,
            reports.iter().map(|report| report.failures()).sum::<u64>(),
            verified_all(&reports),
            cpu_columns(median),
        );
    }
    md.push_str(
        "\nEach row is the round whose ratio to its own round's ceiling is the median (the ceiling's row: the median rate); *each round* gives every round's ratio (the ceiling's: its rate), in the order they ran. Non-2xx and verification cover every round.\n",
    );
    md
}

/// Server and load generator CPU per request and machine idle, as table cells.
fn cpu_columns(report: &Report) -> String {
    match &report.cpu {
        Some(cpu) => format!(
            "{} | {:.1} | {:.0}%",
            cpu.server_us_per_request
                .map_or("–".into(), |us| format!("{us:.1}")),
            cpu.load_generator_us_per_request,
            100.0 * cpu.machine_idle
        ),
        None => "– | – | –".into(),
    }
}

/// The verdicts of `reports`, each named once.
fn verified_all(reports: &[&Report]) -> String {
    let mut verdicts: Vec<String> = reports.iter().map(|report| verified(report)).collect();
    verdicts.sort();
    verdicts.dedup();
    verdicts.join(" / ")
}

fn verified(report: &Report) -> String {
    match (&report.verification, report.verification.checked) {
        (_, false) => "n/a".to_string(),
        (v, true) if v.passed() => "passed".to_string(),
        (v, true) => format!("FAILED ({})", v.violations.len()),
    }
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
