//! What a run measured: latency percentiles, answers by status and outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use super::api::Outcome;
use super::api::Routes;
use super::cpu::CpuUse;
use super::scenario::{Op, Scenario};

/// One request as its client saw it; times in microseconds since the run started.
#[derive(Debug, Clone)]
pub struct Record {
    pub op: Op,
    pub outcome: Outcome,
    pub sent_us: u64,
    pub received_us: u64,
}

/// What one load thread collected.
pub struct Stats {
    /// Latency in microseconds, up to a minute at 3 significant figures, of
    /// every request but the refused ones...
    latency: Histogram<u64>,
    /// ...which have their own: how fast overload is answered.
    refused_latency: Histogram<u64>,
    /// Answers by HTTP status; "none" for requests that got no answer.
    statuses: BTreeMap<String, u64>,
    pub records: Vec<Record>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            refused_latency: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds"),
            statuses: BTreeMap::new(),
            records: Vec::new(),
        }
    }
}

impl Stats {
    pub fn record(
        &mut self,
        op: Op,
        status: Option<u16>,
        outcome: Outcome,
        sent_us: u64,
        received_us: u64,
    ) {
        let histogram = match outcome {
            Outcome::Refused { .. } => &mut self.refused_latency,
            _ => &mut self.latency,
        };
        histogram.saturating_record(received_us.saturating_sub(sent_us).max(1));
        let status = status.map_or_else(|| "none".to_string(), |s| s.to_string());
        *self.statuses.entry(status).or_default() += 1;
        self.records.push(Record {
            op,
            outcome,
            sent_us,
            received_us,
        });
    }

    pub fn merge(&mut self, other: Stats) {
        self.latency
            .add(&other.latency)
            .expect("histograms of equal bounds");
        self.refused_latency
            .add(&other.refused_latency)
            .expect("histograms of equal bounds");
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.records.extend(other.records);
    }
}

/// Requests by what they were told.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct OutcomeCounts {
    pub booked: u64,
    pub waiting: u64,
    pub reassigned: u64,
    pub cancelled: u64,
    /// Checkout: holds taken, and confirms that found the hold lapsed.
    pub held: u64,
    #[serde(rename = "holdGone")]
    pub hold_gone: u64,
    /// Turned away by overload protection (503 `server_busy`, 429): nothing changed.
    pub refused: u64,
    pub errors: u64,
}

/// The result of the checks after the run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Verification {
    pub checked: bool,
    pub violations: Vec<String>,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

pub struct Report {
    pub scenario: Scenario,
    /// The routes it drove.
    pub routes: Routes,
    /// The ids of the events the run booked (`records` refer to them by index).
    pub events: Vec<String>,
    pub elapsed: Duration,
    pub stats: Stats,
    pub outcomes: OutcomeCounts,
    pub verification: Verification,
    /// CPU per request during the load (not the verification); `None` off Linux.
    pub cpu: Option<CpuUse>,
    /// When the load began.
    pub started_at: jiff::Timestamp,
    /// The server's address (the spawned one's, with `--spawn`).
    pub url: String,
}

impl Report {
    pub fn new(scenario: Scenario, events: Vec<String>, elapsed: Duration, stats: Stats) -> Self {
        let mut outcomes = OutcomeCounts::default();
        for record in &stats.records {
            match record.outcome {
                Outcome::Booked => outcomes.booked += 1,
                Outcome::Waiting { .. } => outcomes.waiting += 1,
                Outcome::Reassigned { .. } => outcomes.reassigned += 1,
                Outcome::Cancelled => outcomes.cancelled += 1,
                Outcome::Held { .. } => outcomes.held += 1,
                Outcome::HoldGone => outcomes.hold_gone += 1,
                Outcome::Healthy => {}
                Outcome::Refused { .. } => outcomes.refused += 1,
                Outcome::Error => outcomes.errors += 1,
            }
        }
        Report {
            scenario,
            routes: Routes::Legacy,
            events,
            elapsed,
            stats,
            outcomes,
            verification: Verification::default(),
            cpu: None,
            started_at: jiff::Timestamp::now() - elapsed,
            url: String::new(),
        }
    }

    pub fn requests(&self) -> u64 {
        self.stats.records.len() as u64
    }

    pub fn requests_per_second(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at `quantile` (0.5 = median) in milliseconds, refusals aside.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.stats.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Latency of the refused requests at `quantile`, in milliseconds.
    pub fn refused_latency_ms(&self, quantile: f64) -> f64 {
        self.stats.refused_latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Requests that changed something (booked, waiting, cancelled,
    /// reassigned, held) per second.
    pub fn successes_per_second(&self) -> f64 {
        let o = &self.outcomes;
        (o.booked + o.waiting + o.reassigned + o.cancelled + o.held) as f64
            / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency histogram, refusals aside: (upper bound in milliseconds,
    /// requests), in buckets each 25% wider than the one before, from 0.1 ms.
    pub fn latency_buckets(&self) -> Vec<(f64, u64)> {
        if self.stats.latency.is_empty() {
            return Vec::new();
        }
        self.stats
            .latency
            .iter_log(100, 1.25)
            .map(|bucket| {
                let upper_ms = bucket.value_iterated_to() as f64 / 1000.0;
                (upper_ms, bucket.count_since_last_iteration())
            })
            .collect()
    }

    pub fn max_latency_ms(&self) -> f64 {
        self.stats.latency.max() as f64 / 1000.0
    }

    /// Answers that were not 2xx, and requests without an answer.
    pub fn failures(&self) -> u64 {
        self.stats
            .statuses
            .iter()
            .filter(|(status, _)| !status.starts_with('2'))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "api": self.routes,
            "requests": self.requests(),
            "seconds": self.elapsed.as_secs_f64(),
            "requestsPerSecond": self.requests_per_second(),
            "latencyMs": {
                "p50": self.latency_ms(0.5),
                "p90": self.latency_ms(0.9),
                "p99": self.latency_ms(0.99),
                "p99.9": self.latency_ms(0.999),
                "max": self.max_latency_ms(),
            },
            "refusedLatencyMs": {
                "p50": self.refused_latency_ms(0.5),
                "p99": self.refused_latency_ms(0.99),
                "max": self.stats.refused_latency.max() as f64 / 1000.0,
            },
            "statusCodes": self.stats.statuses,
            "outcomes": self.outcomes,
            "verification": self.verification,
            "cpu": self.cpu,
        })
    }

    pub fn print_text(&self) {
        let o = &self.outcomes;
        println!(
            "{:?}: {} requests in {:.2} s = {:.0} requests/s",
            self.scenario,
            self.requests(),
            self.elapsed.as_secs_f64(),
            self.requests_per_second()
        );
        println!(
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            self.latency_ms(0.5),
            self.latency_ms(0.9),
            self.latency_ms(0.99),
            self.latency_ms(0.999),
            self.max_latency_ms()
        );
        let statuses: Vec<String> = self
            .stats
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        println!("status codes: {}", statuses.join(", "));
        if o.refused > 0 {
            println!(
                "refused latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
                self.refused_latency_ms(0.5),
                self.refused_latency_ms(0.99),
                self.stats.refused_latency.max() as f64 / 1000.0
            );
        }
        println!(
            "outcomes: booked {}, waiting {}, reassigned {}, cancelled {}, refused {}, errors {}",
            o.booked, o.waiting, o.reassigned, o.cancelled, o.refused, o.errors
        );
        if self.scenario == Scenario::Checkout {
            println!(
                "holds: {} taken, {} confirms found the hold lapsed",
                o.held, o.hold_gone
            );
        }
        if let Some(cpu) = &self.cpu {
            let server = cpu
                .server_us_per_request
                .map_or("unknown (not started by us)".into(), |us| {
                    format!("{us:.1} µs")
                });
            println!(
                "CPU per request: server {server}, load generator {:.1} µs; machine idle {:.0}%",
                cpu.load_generator_us_per_request,
                100.0 * cpu.machine_idle
            );
        }
        match (&self.verification, self.verification.checked) {
            (_, false) => println!("verification: skipped"),
            (v, true) if v.passed() => println!("verification: passed"),
            (v, true) => {
                println!("verification: FAILED ({} violations)", v.violations.len());
                for violation in v.violations.iter().take(20) {
                    println!("  - {violation}");
                }
            }
        }
    }
}
