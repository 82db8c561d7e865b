//! `--html report.html`: a run as one self-contained HTML file, to look at
//! and to compare with another: the verification's result, throughput over
//! time and a latency histogram as charts, the figures of the text report
//! and the run's settings. The charts are drawn by uPlot, the same copy the
//! server's live page uses (`web/vendor/uplot`, MIT licence), written into
//! the file with its data: it opens from disk, offline.

use std::path::Path;

use serde_json::{json, Value};

use super::api::Outcome;
use super::report::Report;
use super::Options;

const TEMPLATE: &str = include_str!("report.html");
const UPLOT_JS: &str = include_str!("../../web/vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../web/vendor/uplot/uPlot.min.css");

/// At most this many points of throughput over time: the bucket grows with the run.
const MAX_BUCKETS: f64 = 120.0;

/// Writes the report of a run made with `options` to `path`.
pub fn write(report: &Report, options: &Options, path: &Path) -> std::io::Result<()> {
    let data = run_data(report, options).to_string();
    // Inside <script>: no `</script>` may end it early. `\u003c` is the same
    // string to the JSON parser.
    let data = data.replace('<', "\\u003c");
    let html = TEMPLATE
        .replace("/*UPLOT_CSS*/", UPLOT_CSS)
        .replace("/*UPLOT_JS*/", UPLOT_JS)
        .replace("/*RUN_JSON*/", &data);
    std::fs::write(path, html)
}

/// What the page shows, as JSON: the summary is `--json`'s report.
fn run_data(report: &Report, options: &Options) -> Value {
    let (upper_ms, count): (Vec<f64>, Vec<u64>) = report.latency_buckets().into_iter().unzip();
    let command_line: Vec<_> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    // Fails only for a path that is not UTF-8 (`--html`'s own).
    let mut settings =
        serde_json::to_value(options).unwrap_or_else(|e| json!({"error": e.to_string()}));
    // The server's address, also when `--spawn` started it on a port of its own.
    settings["url"] = json!(report.url);
    let started_at = report
        .started_at
        .round(jiff::Unit::Second)
        .unwrap_or(report.started_at);
    json!({
        "startedAt": started_at.to_string(),
        "commandLine": command_line.join(" "),
        "settings": settings,
        "summary": report.to_json(),
        "throughput": throughput(report),
        "latencyHistogram": {"upperMs": upper_ms, "count": count},
    })
}

/// Requests a second over the run, in buckets of a fixed width, by the time
/// they ended: all of them, those that changed something, refusals, errors.
fn throughput(report: &Report) -> Value {
    let seconds = report.elapsed.as_secs_f64();
    let width = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]
        .into_iter()
        .find(|width| seconds / width <= MAX_BUCKETS)
        .unwrap_or(seconds / MAX_BUCKETS);
    // A last bucket shorter than half the width joins the one before: it
    // holds only the requests that were in flight as the run ended.
    let whole = (seconds / width).floor();
    let buckets = if seconds - whole * width < width / 2.0 {
        whole
    } else {
        whole + 1.0
    };
    let buckets = buckets.max(1.0) as usize;
    let mut counts = vec![[0u64; 4]; buckets];
    for record in &report.stats.records {
        let at = record.received_us as f64 / 1e6;
        let bucket = ((at / width) as usize).min(buckets - 1);
        let kind = match record.outcome {
            Outcome::Refused { .. } => 2,
            Outcome::Error => 3,
            Outcome::Healthy | Outcome::HoldGone => 0,
            _ => 1,
        };
        counts[bucket][0] += 1;
        if kind > 0 {
            counts[bucket][kind] += 1;
        }
    }
    // The last bucket spans what is left of the run, more or less than `width`.
    let last = seconds - (buckets - 1) as f64 * width;
    let span = |bucket: usize| {
        if bucket + 1 == buckets {
            last.max(1e-3)
        } else {
            width
        }
    };
    let rate = |kind: usize| -> Vec<f64> {
        let per_second = counts.iter().enumerate();
        per_second.map(|(b, c)| c[kind] as f64 / span(b)).collect()
    };
    json!({
        "bucketSecs": width,
        "startSecs": (0..buckets).map(|b| b as f64 * width).collect::<Vec<_>>(),
        "requests": rate(0),
        "changed": rate(1),
        "refused": rate(2),
        "errors": rate(3),
    })
}
