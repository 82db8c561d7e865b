//! Prometheus metrics, served at `GET /metrics`, and the per-request log line.
//!
//! Every metric is named here, once. The domain figures count what was
//! *committed*: the store records them after `COMMIT`, so they never include
//! a decision that a failed transaction voided, and the gauges follow the
//! database exactly (they start from the stored events' counts).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::http::Method;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::booking::OrderUpdate;
use crate::storage::{Change, Totals};

/// The log target of the one line per request; quiet by default (see `log_requests`).
pub const REQUEST_LOG: &str = "event_booking::request";

pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
pub const BOOKINGS: &str = "booking_bookings_total";
pub const WAITING_LIST_JOINS: &str = "booking_waiting_list_joins_total";
pub const CANCELLATIONS: &str = "booking_cancellations_total";
pub const REASSIGNMENTS: &str = "booking_reassignments_total";
pub const EVENTS: &str = "booking_events";
pub const ACTIVE_EVENTS: &str = "booking_active_events";
pub const ACTIVATIONS: &str = "booking_event_activations_total";
pub const PASSIVATIONS: &str = "booking_event_passivations_total";
pub const BOOKED_TICKETS: &str = "booking_booked_tickets";
pub const HELD_TICKETS: &str = "booking_held_tickets";
pub const HOLDS: &str = "booking_holds_total";
pub const LAPSED_HOLDS: &str = "booking_holds_lapsed_total";
pub const WAITING_USERS: &str = "booking_waiting_users";
pub const COMMIT_BATCH_SIZE: &str = "booking_commit_batch_size";
pub const COMMIT_DURATION: &str = "booking_commit_duration_seconds";
pub const STORAGE_ERRORS: &str = "booking_storage_errors_total";
pub const MAILBOX_REJECTIONS: &str = "booking_mailbox_rejections_total";
pub const COMPACTED_ROWS: &str = "booking_order_log_compacted_rows_total";
pub const IDEMPOTENCY_KEYS: &str = "booking_idempotency_keys";
pub const OPEN_STREAMS: &str = "booking_open_streams";
pub const EVICTED_KEYS: &str = "booking_idempotency_keys_evicted_total";

/// Seconds: from well under a millisecond (a refusal) to the internal time-out.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Changes per transaction, up to the largest `commit_batch_limit` worth setting.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Installs the process-wide recorder on first use and returns its handle.
/// A second server in the same process (tests) shares it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH_SIZE.into()), BATCH_BUCKETS)
                })
                .expect("bucket lists are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(error) = metrics::set_global_recorder(recorder) {
                log::warn!("metrics are not recorded: {error}");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route pattern and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route pattern"
    );
    describe_counter!(BOOKINGS, "Tickets booked (committed)");
    describe_counter!(
        WAITING_LIST_JOINS,
        "Users who joined a waiting list (committed)"
    );
    describe_counter!(
        CANCELLATIONS,
        "Tickets or waiting places given up (committed)"
    );
    describe_counter!(
        REASSIGNMENTS,
        "Cancelled tickets handed to the head of the waiting list (committed)"
    );
    describe_gauge!(EVENTS, "Events initialized");
    describe_gauge!(
        ACTIVE_EVENTS,
        "Events with an actor in memory (the others are read when first asked for)"
    );
    describe_counter!(
        ACTIVATIONS,
        "Event actors started from the database (or for a new event)"
    );
    describe_counter!(
        PASSIVATIONS,
        "Event actors stopped after passivate_after_secs without a message"
    );
    describe_gauge!(BOOKED_TICKETS, "Tickets held, over all events");
    describe_gauge!(WAITING_USERS, "Users waiting, over all events");
    describe_histogram!(
        COMMIT_BATCH_SIZE,
        Unit::Count,
        "Changes written in one SQLite transaction"
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time of one SQLite transaction, BEGIN to COMMIT"
    );
    describe_counter!(
        STORAGE_ERRORS,
        "Transactions that failed; none of their changes was acknowledged"
    );
    describe_counter!(
        MAILBOX_REJECTIONS,
        "Requests refused with 503 because a queue was full, by queue"
    );
    describe_counter!(
        COMPACTED_ROWS,
        "Rows of the order log deleted because a later row of the same user replaced them"
    );
    describe_gauge!(
        IDEMPOTENCY_KEYS,
        "Idempotency keys kept: in flight, or answered within the retention period"
    );
    describe_counter!(
        EVICTED_KEYS,
        "Answered idempotency keys forgotten before their retention period ended, to stay within idempotency.max_keys"
    );
}

/// The two series of one kind of answered request.
struct RequestSeries {
    requests: Counter,
    duration: Histogram,
}

/// Which series an answered request belongs to.
#[derive(PartialEq, Eq, Hash)]
struct SeriesKey {
    method: &'static str,
    route: String,
    status: u16,
}

thread_local! {
    /// The series this thread has answered requests for. Registering a series
    /// builds, allocates and hashes its labels, several times what recording
    /// costs, so each worker does it once per kind of request, not per request.
    static REQUEST_SERIES: RefCell<HashMap<SeriesKey, RequestSeries>> =
        RefCell::new(HashMap::new());
}

/// The method's label: a method the server does not know becomes `OTHER`, so
/// that made-up methods cannot add series without end.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "OTHER",
    }
}

/// Counts one answered request of `route` (its pattern); logs it on the request target.
pub fn request_answered(method: &Method, route: String, status: u16, took: Duration) {
    let key = SeriesKey {
        method: method_label(method),
        route,
        status,
    };
    log::info!(target: REQUEST_LOG, "{} {} {status} {:.3}ms", key.method, key.route, took.as_secs_f64() * 1e3);
    REQUEST_SERIES.with_borrow_mut(|known| {
        let series = known.entry(key).or_insert_with_key(|key| {
            let (method, route) = (key.method, key.route.clone());
            RequestSeries {
                requests: counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => key.status.to_string()),
                duration: histogram!(HTTP_DURATION, "method" => method, "route" => route),
            }
        });
        series.requests.increment(1);
        series.duration.record(took.as_secs_f64());
    });
}

/// A request refused because `queue` ("event" or "store") was full.
pub fn queue_full(queue: &'static str) {
    counter!(MAILBOX_REJECTIONS, "queue" => queue).increment(1);
}

/// An event's actor started: read from the database, or just created.
pub fn event_activated() {
    counter!(ACTIVATIONS).increment(1);
    gauge!(ACTIVE_EVENTS).increment(1.0);
}

/// An idle event's actor stopped.
pub fn event_passivated() {
    counter!(PASSIVATIONS).increment(1);
    gauge!(ACTIVE_EVENTS).decrement(1.0);
}

/// A status stream opened.
pub fn stream_opened() {
    gauge!(OPEN_STREAMS).increment(1.0);
}

/// A status stream ended.
pub fn stream_closed() {
    gauge!(OPEN_STREAMS).decrement(1.0);
}

/// Idempotency keys kept now.
pub fn idempotency_keys(kept: usize) {
    gauge!(IDEMPOTENCY_KEYS).set(kept as f64);
}

/// Answered idempotency keys forgotten early, to stay within the cap.
pub fn keys_evicted(evicted: usize) {
    counter!(EVICTED_KEYS).increment(evicted as u64);
}

/// The store's figures, resolved once: the store records them on every commit.
pub struct StoreMetrics {
    bookings: Counter,
    joins: Counter,
    cancellations: Counter,
    reassignments: Counter,
    holds: Counter,
    lapsed: Counter,
    events: Gauge,
    booked: Gauge,
    held: Gauge,
    waiting: Gauge,
    batch_size: Histogram,
    commit_duration: Histogram,
    errors: Counter,
    compacted: Counter,
}

impl StoreMetrics {
    /// Resolves the handles; `install` must have run first.
    pub(crate) fn new() -> Self {
        StoreMetrics {
            bookings: counter!(BOOKINGS),
            joins: counter!(WAITING_LIST_JOINS),
            cancellations: counter!(CANCELLATIONS),
            reassignments: counter!(REASSIGNMENTS),
            holds: counter!(HOLDS),
            lapsed: counter!(LAPSED_HOLDS),
            events: gauge!(EVENTS),
            booked: gauge!(BOOKED_TICKETS),
            held: gauge!(HELD_TICKETS),
            waiting: gauge!(WAITING_USERS),
            batch_size: histogram!(COMMIT_BATCH_SIZE),
            commit_duration: histogram!(COMMIT_DURATION),
            errors: counter!(STORAGE_ERRORS),
            compacted: counter!(COMPACTED_ROWS),
        }
    }

    /// Sets the gauges to the stored events' counts, and makes the series
    /// of active events and their moves exist before the first one.
    pub fn recovered(&self, totals: Totals) {
        self.events.set(totals.events as f64);
        self.booked.set(totals.booked as f64);
        self.held.set(totals.held as f64);
        self.waiting.set(totals.waiting as f64);
        gauge!(ACTIVE_EVENTS).set(0.0);
        gauge!(OPEN_STREAMS).set(0.0);
        counter!(ACTIVATIONS).increment(0);
        counter!(PASSIVATIONS).increment(0);
    }

    /// A transaction of `size` changes committed in `took`.
    pub fn committed(&self, size: usize, took: Duration) {
        self.batch_size.record(size as f64);
        self.commit_duration.record(took.as_secs_f64());
    }

    /// `rows` superseded rows deleted from the order log.
    pub fn compacted(&self, rows: usize) {
        self.compacted.increment(rows as u64);
    }

    /// A transaction failed.
    pub fn failed(&self) {
        self.errors.increment(1);
    }

    /// One committed change.
    pub fn stored(&self, change: &Change) {
        if let Change::CreateEvent { .. } = change {
            return self.events.increment(1.0);
        }
        let moved = change.counts();
        self.booked.increment(moved.booked as f64);
        self.held.increment(moved.held as f64);
        self.waiting.increment(moved.waiting as f64);
        let (update, promotions) = match change {
            Change::Order { update, .. } => (Some(update), 0),
            Change::Configure { promoted, .. } => (None, promoted.len() as u64),
            Change::CreateEvent { .. } => (None, 0),
        };
        self.reassignments.increment(promotions);
        let Some(update) = update else { return };
        match update {
            // A confirmed hold is a ticket sold, as a booking is.
            OrderUpdate::Booked(_) | OrderUpdate::Confirmed(_) => self.bookings.increment(1),
            OrderUpdate::Waiting(_) => self.joins.increment(1),
            OrderUpdate::Held { .. } => self.holds.increment(1),
            OrderUpdate::LeftWaitingList(_) => self.cancellations.increment(1),
            OrderUpdate::Cancelled { promoted, .. } => {
                self.cancellations.increment(1);
                self.reassignments.increment(promoted.is_some().into());
            }
            OrderUpdate::HoldEnded {
                lapsed, promoted, ..
            } => {
                match lapsed {
                    Some(_) => self.lapsed.increment(1),
                    None => self.cancellations.increment(1),
                }
                self.reassignments.increment(promoted.is_some().into());
            }
        }
    }
}
