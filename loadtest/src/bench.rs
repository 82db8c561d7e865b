//! `loadtest bench`: each scenario for a fixed time on one server, in rounds
//! (drop and spread through both sets of routes), then a restart, event
//! activation and memory per user and per booking with an `Idempotency-Key`,
//! and events as virtual actors: time to ready with many stored orders, and
//! memory while many events are active and once they passivated, and
//! streams open on the passivated events ([`streams`]); and
//! PostgreSQL and three instances behind nginx ([`cluster`]). The table
//! goes to stdout and to `BENCHMARKS.md`, with the machine and the commit.

mod cluster;
mod streams;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use std::time::Instant;

use futures::StreamExt;

use super::api::{Api, Outcome, Routes};
use super::scenario::Op;
use super::spawn::SpawnedServer;
use super::{initialize, run_against, unique_event_names, Options, Report, Scenario};

/// Holders who cancel, one after another, for the cancel-cost figure.
const CANCELS: usize = 100;

/// The runs of a round, in order: each scenario, drop and spread through
/// both sets of routes.
const RUNS: [(Scenario, Routes); 6] = [
    (Scenario::Ceiling, Routes::Legacy),
    (Scenario::Drop, Routes::Legacy),
    (Scenario::Drop, Routes::Resource),
    (Scenario::Spread, Routes::Legacy),
    (Scenario::Spread, Routes::Resource),
    (Scenario::Churn, Routes::Legacy),
];

/// Orders in the small event whose activation is timed.
const SMALL_EVENT_ORDERS: u64 = 1_000;

/// Restarts after which the activations are timed: one draw spreads too far
/// on a shared machine to stand alone, so the table gives the median and
/// every draw.
const ACTIVATION_DRAWS: usize = 3;

/// Seconds an idle event stays in memory in the memory-per-event run.
const PASSIVATE_AFTER_SECS: &str = "2";

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
    /// Events created, each booked once, for the memory while they are
    /// active and once they passivated.
    #[arg(long, default_value_t = 100_000)]
    pub idle_events: usize,
    /// Orders stored (straight into the database) for the time to ready.
    #[arg(long, default_value_t = 10_000_000)]
    pub seed_orders: u64,
    /// The events those orders are spread over.
    #[arg(long, default_value_t = 100_000)]
    pub seed_events: u64,
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
    /// From the restart to ready, with `orders` stored on one event.
    ready: Duration,
    /// The first request of that event after each of `ACTIVATION_DRAWS`
    /// restarts, which reads it, and of an event of `SMALL_EVENT_ORDERS`;
    /// in the order they ran.
    activation_big: Vec<Duration>,
    activation_small: Vec<Duration>,
    orders: u64,
    bytes_per_user: f64,
    /// Once the big event was read again.
    bytes_per_user_activated: f64,
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

/// Every run of `RUNS` once, back to back, ceiling first.
struct Round(Vec<Report>);

impl Round {
    fn report(&self, (scenario, routes): (Scenario, Routes)) -> Option<&Report> {
        self.0
            .iter()
            .find(|report| report.scenario == scenario && report.routes == routes)
    }

    /// The run's rate over this round's ceiling.
    fn ratio(&self, run: (Scenario, Routes)) -> Option<f64> {
        let ceiling = self
            .report((Scenario::Ceiling, Routes::Legacy))?
            .requests_per_second();
        Some(self.report(run)?.requests_per_second() / ceiling)
    }
}

/// Events as virtual actors: a start with many stored orders, and memory
/// that follows the events in use.
struct VirtualActors {
    seed_orders: u64,
    seed_events: u64,
    /// From the restart to ready with those orders stored.
    ready: Duration,
    events: usize,
    /// RSS of a fresh server, with every event active (each booked once),
    /// and once every one of them passivated.
    fresh: u64,
    active: u64,
    passivated: u64,
    /// Then: status streams open on passivated events.
    streams: streams::StreamFigures,
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
    let virtual_actors = virtual_actors(options)?;
    let cluster = cluster::measure(options);
    let mut markdown = render(
        options,
        &rounds,
        &pairs,
        &overload,
        &footprint,
        &virtual_actors,
    );
    markdown.push_str(&cluster::table(&cluster));
    let mut reports = Vec::new();
    for (number, round) in rounds.into_iter().enumerate() {
        for report in round.0 {
            reports.push((format!("{}, round {}", label(&report), number + 1), report));
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
    if let Ok(cluster) = cluster {
        reports.extend(cluster.into_reports());
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
    let run_on = |scenario: Scenario, routes: Routes, idempotency_keys: bool| {
        let mut run = Options::defaults();
        run.scenario = scenario;
        run.api = routes;
        run.duration = options.seconds;
        run.concurrency = options.concurrency;
        run.idempotency_keys = idempotency_keys;
        // Enough users that none of the scenarios runs out before the time is up.
        run.users = 100_000_000;
        let report = run_against(server.url(), Some(server.pid()), &run)?;
        report.print_text();
        Ok::<_, String>(report)
    };
    let run = |scenario, idempotency_keys| run_on(scenario, Routes::Legacy, idempotency_keys);
    let rounds = (0..options.rounds)
        .map(|_| {
            let reports = RUNS
                .into_iter()
                .map(|(scenario, routes)| run_on(scenario, routes, false));
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

/// Memory per user with `orders` booked on one event; after a restart, the
/// time to ready; after each of `ACTIVATION_DRAWS` restarts, the first
/// request of that event and of a small one (each reads its event from the
/// database); memory per booking with an `Idempotency-Key`.
fn footprint(options: &BenchOptions) -> Result<Footprint, String> {
    let mut server = SpawnedServer::start()?;
    let empty = server.rss_bytes()?;
    let filled = fill(&server, options, options.orders, false)?;
    let full = server.rss_bytes()?;
    let small_event = fill(&server, options, SMALL_EVENT_ORDERS, false)?;
    let (cancel_short_queue, cancel_long_queue) = cancel_costs(server.url(), &filled)?;
    let ready = server.restart()?;
    let (mut activation_big, mut activation_small) = (Vec::new(), Vec::new());
    let (mut restarted, mut activated) = (0, 0);
    for draw in 0..ACTIVATION_DRAWS {
        if draw > 0 {
            server.restart()?;
        }
        restarted = server.rss_bytes()?;
        let (big, small) = actix_web::rt::System::new().block_on(async {
            let api = Api::new(server.url(), 1);
            let first_request = |event: String| {
                let api = &api;
                async move {
                    let started = Instant::now();
                    api.event_counts(&event).await?;
                    Ok::<_, String>(started.elapsed())
                }
            };
            let big = first_request(filled.events[0].clone()).await?;
            let small = first_request(small_event.events[0].clone()).await?;
            Ok::<_, String>((big, small))
        })?;
        activated = server.rss_bytes()?;
        activation_big.push(big);
        activation_small.push(small);
    }
    drop(server);

    let server = SpawnedServer::start()?;
    let before = server.rss_bytes()?;
    let keyed_orders = (options.orders / 4).max(1);
    fill(&server, options, keyed_orders, true)?;
    let keyed = server.rss_bytes()?;
    Ok(Footprint {
        cancel_short_queue,
        cancel_long_queue,
        long_queue: filled.outcomes.waiting,
        ready,
        activation_big,
        activation_small,
        orders: options.orders,
        bytes_per_user: full.saturating_sub(empty) as f64 / options.orders as f64,
        bytes_per_user_activated: activated.saturating_sub(restarted) as f64
            / options.orders as f64,
        keyed_orders,
        bytes_per_keyed_booking: keyed.saturating_sub(before) as f64 / keyed_orders as f64,
    })
}

/// Events as virtual actors: the time to ready with `seed_orders` stored
/// over `seed_events` events (written straight into the database, as a
/// booking would write them); and, on a server whose idle events stop after
/// `PASSIVATE_AFTER_SECS`, memory fresh, with `idle_events` events created
/// and booked once each, and once all of them passivated.
fn virtual_actors(options: &BenchOptions) -> Result<VirtualActors, String> {
    let mut server = SpawnedServer::start()?;
    let (seed_orders, seed_events) = (options.seed_orders, options.seed_events.max(1));
    let ready = server.restart_after(|database| seed(database, seed_events, seed_orders))?;
    drop(server);

    let server =
        SpawnedServer::start_with(&[("BOOKING_PASSIVATE_AFTER_SECS", PASSIVATE_AFTER_SECS)])?;
    let fresh = server.rss_bytes()?;
    let events = unique_event_names(options.idle_events);
    actix_web::rt::System::new().block_on(async {
        let api = Api::new(server.url(), options.concurrency);
        initialize(
            Api::new(server.url(), options.concurrency),
            &events,
            100,
            options.concurrency,
        )
        .await?;
        let booked: Vec<(Option<u16>, Outcome)> = futures::stream::iter(&events)
            .map(|event| api.book(event, 0))
            .buffer_unordered(options.concurrency)
            .collect()
            .await;
        match booked
            .iter()
            .find(|(_, outcome)| *outcome != Outcome::Booked)
        {
            Some(other) => Err(format!("booking one user per event: {other:?}")),
            None => Ok(()),
        }
    })?;
    let active = server.rss_bytes()?;
    actix_web::rt::System::new().block_on(async {
        let api = Api::new(server.url(), 1);
        let deadline = Instant::now() + Duration::from_secs(120);
        while api.metric("booking_active_events").await? > 0.0 {
            if Instant::now() > deadline {
                return Err("the events never passivated".to_string());
            }
            actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    })?;
    // Then the memory the stopped actors freed goes back to the system
    // (every second): the least RSS over the 12 s that follow.
    let mut passivated = server.rss_bytes()?;
    for _ in 0..12 {
        std::thread::sleep(Duration::from_secs(1));
        passivated = passivated.min(server.rss_bytes()?);
    }
    let streams = streams::measure(&server, &events, options.concurrency)?;
    Ok(VirtualActors {
        seed_orders,
        seed_events,
        ready,
        events: options.idle_events,
        fresh,
        active,
        passivated,
        streams,
    })
}

/// Writes `orders` bookings over `events` new events into the database at
/// `path`, through the server's own storage code, in large transactions.
fn seed(path: &std::path::Path, events: u64, orders: u64) -> Result<(), String> {
    use event_booking::booking::{EventSettings, OrderUpdate};
    use event_booking::configuration::Settings;
    use event_booking::ids::EventId;
    use event_booking::storage::{Change, Database};

    const BATCH: usize = 200_000;
    let settings = Settings {
        database: path.display().to_string(),
        ..Settings::default()
    };
    let database = Database::open(&settings).map_err(|e| e.to_string())?;
    let per_event = orders.div_ceil(events);
    let tickets = u32::try_from(per_event).map_err(|_| "too many orders per event")?;
    let mut changes = Vec::with_capacity(BATCH + per_event as usize + 1);
    let mut written = 0;
    for number in 0..events {
        let event = EventId::parse(&format!("seed-{number}")).map_err(|e| e.to_string())?;
        changes.push(Change::CreateEvent {
            event: event.clone(),
            settings: EventSettings::new(tickets),
        });
        for user in 0..per_event.min(orders - written) {
            changes.push(Change::Order {
                event: event.clone(),
                update: OrderUpdate::Booked(format!("u{user}").into()),
            });
        }
        written = (written + per_event).min(orders);
        if changes.len() >= BATCH || number + 1 == events {
            database
                .commit(&changes, [])
                .map_err(|e| format!("seeding the database: {e}"))?;
            changes.clear();
        }
    }
    // As the server does once a second: catch up with the log (its index by event).
    database
        .catch_up()
        .map_err(|e| format!("indexing the seeded orders: {e}"))?;
    Ok(())
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
    virtual_actors: &VirtualActors,
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
        "| restart with {} orders on one event | {:.2} s to ready | < 1 s |",
        footprint.orders,
        footprint.ready.as_secs_f64()
    );
    let (big, small) = (
        draws(&footprint.activation_big, 0),
        draws(&footprint.activation_small, 1),
    );
    let _ = writeln!(
        md,
        "| activation, the first request of an event of {SMALL_EVENT_ORDERS} orders / of {} orders after a restart, median of {ACTIVATION_DRAWS} restarts (each draw) | {} ms / {} ms | ≤ 5 ms / ≤ 1 s |",
        footprint.orders, small, big
    );
    let _ = writeln!(
        md,
        "| RSS per booked or waiting user, live ({} users) | {:.0} B | ≤ 200 B |",
        footprint.orders, footprint.bytes_per_user
    );
    let _ = writeln!(
        md,
        "| RSS per user once its event was read again after the restart | {:.0} B | |",
        footprint.bytes_per_user_activated
    );
    let _ = writeln!(
        md,
        "| RSS per booking with an `Idempotency-Key`, user and key ({} bookings) | {:.0} B | |",
        footprint.keyed_orders, footprint.bytes_per_keyed_booking
    );
    md.push_str(&virtual_actors_table(virtual_actors));
    md
}

/// The median of `times` in milliseconds, then every draw in the order they
/// ran, e.g. "886 (886, 1022, 870)", with `decimals` digits after the point.
fn draws(times: &[Duration], decimals: usize) -> String {
    let ms = |time: &Duration| format!("{:.*}", decimals, time.as_secs_f64() * 1000.0);
    let mut sorted = times.to_vec();
    sorted.sort();
    let Some(median) = sorted.get(sorted.len() / 2) else {
        return "none".into();
    };
    let each: Vec<String> = times.iter().map(ms).collect();
    format!("{} ({})", ms(median), each.join(", "))
}

/// The figures of events as virtual actors.
fn virtual_actors_table(figures: &VirtualActors) -> String {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mut md = format!(
        "
Events as virtual actors: a start reads no event, and an event idle for `passivate_after_secs` leaves memory. The restart below is of a server whose database holds {} orders over {} events, written straight into it; the memory runs are on a server of their own whose events passivate after {PASSIVATE_AFTER_SECS} s, {} events created and each booked once, then left idle until `booking_active_events` is 0 (the RSS then: the least over the next 12 s, as freed memory goes back to the system).\n\n",
        figures.seed_orders, figures.seed_events, figures.events
    );
    md.push_str("| measurement | value | target |\n| --- | ---: | --- |\n");
    let _ = writeln!(
        md,
        "| restart with {} orders over {} events | {:.2} s to ready | < 1 s |",
        figures.seed_orders,
        figures.seed_events,
        figures.ready.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| RSS fresh / {} events active / all passivated | {:.1} / {:.1} / {:.1} MiB | after ≤ 110% of fresh |",
        figures.events,
        mib(figures.fresh),
        mib(figures.active),
        mib(figures.passivated)
    );
    let _ = writeln!(
        md,
        "| RSS once passivated, of fresh | {:.1}% | ≤ 110% |",
        100.0 * figures.passivated as f64 / figures.fresh as f64
    );
    let _ = writeln!(
        md,
        "| RSS per active event, booked once | {:.0} B | |",
        figures.active.saturating_sub(figures.fresh) as f64 / figures.events as f64
    );
    md.push_str(&streams::rows(&figures.streams));
    md
}

/// One row per scenario: the round whose ratio to its own ceiling is the
/// median (for the ceiling, the median rate), and every round's figure.
fn scenario_table(rounds: &[Round]) -> String {
    let mut md = String::from("| scenario | requests/s | p50 ms | p99 ms | ratio to ceiling | each round | target | non-2xx | verified | server CPU µs/req | load generator CPU µs/req | machine idle |\n");
    md.push_str(
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |\n",
    );
    for run in RUNS {
        let scenario = run.0;
        // (the figure that ranks the rounds, its round's report)
        let mut ranked: Vec<(f64, &Report)> = rounds
            .iter()
            .filter_map(|round| {
                let report = round.report(run)?;
                let figure = match scenario {
                    Scenario::Ceiling => report.requests_per_second(),
                    _ => round.ratio(run)?,
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
            // Not a round of the benchmark: `loadtest run --scenario checkout`.
            Scenario::Checkout => (figure, ""),
        };
        let reports: Vec<&Report> = ranked.iter().map(|(_, report)| *report).collect();
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2} | {:.2} | {:.0}% | {each_round} | {target} | {} | {} | {} |",
            label(median),
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

/// The run's name in the tables: its scenario, and the routes if not the old ones.
fn label(report: &Report) -> String {
    match report.routes {
        Routes::Legacy => format!("{:?}", report.scenario),
        Routes::Resource => format!("{:?}, resource routes", report.scenario),
    }
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
