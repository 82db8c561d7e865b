//! The benchmark's PostgreSQL part: drop and spread on SQLite, on
//! PostgreSQL with one instance, and through nginx with three instances on
//! one PostgreSQL (`scripts/cluster.sh`), in rounds, so that each ratio
//! compares runs of one round; then, on the three, the hand-off time of a
//! hot event and the failover time after `kill -9` of an instance.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::{label, verified_all, BenchOptions};
use crate::api::{Api, Outcome, Routes};
use crate::cluster::Cluster;
use crate::spawn::{server_binary, SpawnedServer};
use crate::{run_against, unique_event_names, Options, Report, Scenario};

/// The scenarios of each setup, in order.
const SCENARIOS: [Scenario; 2] = [Scenario::Drop, Scenario::Spread];

/// Events booked once each before an instance is killed; about a third of
/// them are the killed instance's.
const FAILOVER_EVENTS: usize = 30;

/// Longest wait for the killed instance's events, or for a hand-off.
const GIVE_UP: Duration = Duration::from_secs(60);

/// Connections that keep the hot event busy through nginx while its
/// hand-off is timed.
const HOT_CONNECTIONS: usize = 16;

/// How long the hot event runs before a hand-off is asked for, and between
/// two: past the damping (an instance keeps an event it took for a second).
const HOT_SETTLE: Duration = Duration::from_secs(2);

/// One round: each scenario on each setup, in the order of `SCENARIOS`.
struct Round {
    sqlite: Vec<Report>,
    postgres: Vec<Report>,
    nginx: Vec<Report>,
}

/// The figures of this part.
pub struct ClusterFigures {
    rounds: Vec<Round>,
    /// The slowest of three bookings of the hot event sent straight to each
    /// instance (the two that do not own it take it over).
    handoff: Duration,
    /// From `kill -9` of instance 2 to every one of `FAILOVER_EVENTS` events
    /// answering a booking through nginx.
    failover: Duration,
    /// How many of those events instance 2 had activated.
    failover_owned: u64,
}

impl ClusterFigures {
    /// Every run, labelled, for the verification check.
    pub fn into_reports(self) -> Vec<(String, Report)> {
        let mut reports = Vec::new();
        for (number, round) in self.rounds.into_iter().enumerate() {
            for (setup, runs) in [
                ("SQLite", round.sqlite),
                ("PostgreSQL", round.postgres),
                ("3 instances via nginx", round.nginx),
            ] {
                for report in runs {
                    let name = format!("{}, {setup}, round {}", label(&report), number + 1);
                    reports.push((name, report));
                }
            }
        }
        reports
    }
}

/// Runs this part; an error says why it could not (no PostgreSQL or nginx
/// here, say), which the table then says in place of the figures, so that
/// the rest of the benchmark is written all the same.
pub fn measure(options: &BenchOptions) -> Result<ClusterFigures, String> {
    let server = server_binary()?;
    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        let sqlite = SpawnedServer::start()?;
        let sqlite_runs = runs(options, sqlite.url(), Some(sqlite.pid()))?;
        drop(sqlite);
        let postgres = Cluster::up(1, &server)?;
        let postgres_runs = runs(options, &postgres.nodes()[0], None)?;
        drop(postgres);
        let three = Cluster::up(3, &server)?;
        let nginx_runs = runs(options, three.nginx(), None)?;
        rounds.push(Round {
            sqlite: sqlite_runs,
            postgres: postgres_runs,
            nginx: nginx_runs,
        });
        // The last round's cluster stays for the hand-off and the failover;
        // the others go before the next round, whose runs would share the
        // cores with them.
        if round == options.rounds {
            let handoff = hot_event_handoff(&three)?;
            let (failover, failover_owned) = failover(&three)?;
            return Ok(ClusterFigures {
                rounds,
                handoff,
                failover,
                failover_owned,
            });
        }
    }
    Err("no round ran".into())
}

/// Each of `SCENARIOS` on the server at `url`.
fn runs(options: &BenchOptions, url: &str, pid: Option<u32>) -> Result<Vec<Report>, String> {
    SCENARIOS
        .into_iter()
        .map(|scenario| {
            let mut run = Options::defaults();
            run.scenario = scenario;
            run.duration = options.seconds;
            run.concurrency = options.concurrency;
            run.users = 100_000_000;
            let report = run_against(url, pid, &run)?;
            report.print_text();
            Ok(report)
        })
        .collect()
}

/// Books `event` straight at `node` until it is decided there (2xx),
/// waiting 10 ms after each refusal (`event_elsewhere`, 503); how long that took.
async fn decided_at(node: &str, event: &str, user: u64) -> Result<Duration, String> {
    let api = Api::new(node, 1).on(Routes::Resource);
    let started = Instant::now();
    loop {
        match api.book(event, user).await {
            (Some(200..=299), _) => return Ok(started.elapsed()),
            (Some(503), _) | (None, _) if started.elapsed() < GIVE_UP => {
                actix_web::rt::time::sleep(Duration::from_millis(10)).await;
            }
            other => return Err(format!("booking {event} at {node}: {other:?}")),
        }
    }
}

/// A hot event (bookings through nginx on `HOT_CONNECTIONS` connections,
/// so its owner is the instance nginx picks): a booking sent straight to
/// each instance in turn, `HOT_SETTLE` apart; the slowest.
fn hot_event_handoff(cluster: &Cluster) -> Result<Duration, String> {
    let event = unique_event_names(1).remove(0);
    actix_web::rt::System::new().block_on(async {
        let api = Api::new(cluster.nginx(), HOT_CONNECTIONS).on(Routes::Resource);
        api.initialize(&event, 1_000_000).await?;
        let stop = AtomicBool::new(false);
        let load = join_all((0..HOT_CONNECTIONS as u64).map(|first| {
            let (api, event, stop) = (&api, &event, &stop);
            async move {
                let mut user = first;
                while !stop.load(Ordering::Relaxed) {
                    api.book(event, user).await;
                    user += HOT_CONNECTIONS as u64;
                }
            }
        }));
        let timed = async {
            let mut slowest = Duration::ZERO;
            for (number, node) in cluster.nodes().iter().enumerate() {
                actix_web::rt::time::sleep(HOT_SETTLE).await;
                let took = decided_at(node, &event, u64::MAX / 2 + number as u64).await;
                slowest = slowest.max(took.inspect_err(|_| stop.store(true, Ordering::Relaxed))?);
            }
            stop.store(true, Ordering::Relaxed);
            Ok::<_, String>(slowest)
        };
        let (_, slowest) = futures::join!(load, timed);
        slowest
    })
}

/// `FAILOVER_EVENTS` events booked through nginx, then `kill -9` of
/// instance 2: the time until every one of them answers a booking through
/// nginx again, and how many instance 2 had activated.
fn failover(cluster: &Cluster) -> Result<(Duration, u64), String> {
    let events = unique_event_names(FAILOVER_EVENTS);
    actix_web::rt::System::new().block_on(async {
        let api = Api::new(cluster.nginx(), 4).on(Routes::Resource);
        let second = Api::new(&cluster.nodes()[1], 1);
        let activations = "booking_event_activations_total";
        let before = second.metric(activations).await?;
        for event in &events {
            api.initialize(event, 1_000_000).await?;
            if api.book(event, 0).await.1 != Outcome::Booked {
                return Err(format!("the first booking of {event} failed"));
            }
        }
        let owned = (second.metric(activations).await? - before).max(0.0) as u64;
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &cluster.pid(2)?.to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if !killed.success() {
            return Err("kill -9 of instance 2 failed".into());
        }
        let started = Instant::now();
        let mut waiting: Vec<&String> = events.iter().collect();
        let mut user = 1;
        while !waiting.is_empty() {
            if started.elapsed() > GIVE_UP {
                return Err(format!("{} events still refused", waiting.len()));
            }
            let mut still = Vec::new();
            for event in waiting {
                if !matches!(api.book(event, user).await.0, Some(200..=299)) {
                    still.push(event);
                }
            }
            waiting = still;
            user += 1;
        }
        Ok((started.elapsed(), owned))
    })
}

/// The section of `BENCHMARKS.md`.
pub fn table(figures: &Result<ClusterFigures, String>) -> String {
    let mut md = String::from(
        "\nPostgreSQL and several instances: each round runs drop and spread on a SQLite server, on one instance on PostgreSQL (`scripts/cluster.sh` with one instance, requests straight to it) and through nginx in front of three instances on one PostgreSQL; each ratio compares runs of one round. PostgreSQL, nginx and the load generator share this machine's cores, so three instances measure the overhead of nginx and hand-offs, not scale. PostgreSQL's server: `fsync` on, defaults otherwise; each instance commits with `synchronous_commit` on.\n\n",
    );
    let figures = match figures {
        Ok(figures) => figures,
        Err(why) => {
            let _ = writeln!(md, "Not measured: {why}");
            return md;
        }
    };
    md.push_str("| scenario | round | SQLite req/s | PostgreSQL req/s | PostgreSQL / SQLite | 3 via nginx req/s | 3 via nginx / 1 direct | non-2xx | verified |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for (index, scenario) in SCENARIOS.iter().enumerate() {
        let mut to_sqlite = Vec::new();
        let mut to_direct = Vec::new();
        for (number, round) in figures.rounds.iter().enumerate() {
            let (sqlite, postgres, nginx) = (
                &round.sqlite[index],
                &round.postgres[index],
                &round.nginx[index],
            );
            let rate = Report::requests_per_second;
            to_sqlite.push(rate(postgres) / rate(sqlite));
            to_direct.push(rate(nginx) / rate(postgres));
            let _ = writeln!(
                md,
                "| {scenario:?} | {} | {:.0} | {:.0} | {:.1}% | {:.0} | {:.0}% | {} | {} |",
                number + 1,
                rate(sqlite),
                rate(postgres),
                100.0 * rate(postgres) / rate(sqlite),
                rate(nginx),
                100.0 * rate(nginx) / rate(postgres),
                sqlite.failures() + postgres.failures() + nginx.failures(),
                verified_all(&[sqlite, postgres, nginx]),
            );
        }
        let _ = writeln!(
            md,
            "| {scenario:?} | median | | | {:.1}% (target ≥ 70%) | | {:.0}% | | |",
            100.0 * median(&mut to_sqlite),
            100.0 * median(&mut to_direct),
        );
    }
    md.push_str("\n| measurement | value | target |\n| --- | ---: | --- |\n");
    let _ = writeln!(
        md,
        "| hand-off of a hot event: the slowest of a booking sent straight to each of the three instances while nginx sends it {HOT_CONNECTIONS} connections of load | {:.2} s | prompt, damped (an owner keeps an event for 1 s) |",
        figures.handoff.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| failover: from `kill -9` of an instance ({} of {FAILOVER_EVENTS} events active there) to all {FAILOVER_EVENTS} answering through nginx | {:.2} s | ≤ 10 s |",
        figures.failover_owned,
        figures.failover.as_secs_f64()
    );
    md
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
