//! An HTTP server that sells event tickets.
//!
//! Each event is an actor that owns its ticket count and FIFO waiting list and
//! decides book and cancel requests one at a time, in memory. Every decision is
//! written to SQLite by a single persistence actor that groups all waiting
//! changes into one transaction; a request is answered only after the commit
//! that holds its change. Events are virtual actors: an event's actor is
//! started from the database by the first request that needs it, and stops
//! once idle, so memory and start-up time follow the events in use.
//! Every queue on that path is bounded: under overload a request is refused
//! at once with 503 "Server busy" rather than left to wait.
//!
//! # Layout
//!
//! - [`startup`]: the [`Application`](startup::Application): actors, HTTP
//!   server, recovery, graceful stop.
//! - [`configuration`]: settings from `config/default.toml` and `BOOKING_*` variables.
//! - [`routes`]: the HTTP API; validates requests and forwards them to actors.
//! - [`actors`]: the event actors, their registry, the worker threads they run
//!   on, and the persistence actor.
//! - [`booking`]: the booking rules of one event as plain data, and the waiting list.
//! - [`storage`]: one interface to the database, with two backends (SQLite, the
//!   default, and PostgreSQL): batched commits, and reading one event.
//! - [`ids`]: event and user ids, validated (and user ids normalized) at the edge.
//! - [`open_files`]: the limit on open files, raised, and the connections it allows.
//! - [`idempotency`]: idempotent retries: keys in flight, answers to replay.
//! - [`error`]: the one JSON error shape of the API.
//! - [`telemetry`]: Prometheus metrics (`GET /metrics`) and the per-request log line.
//! - [`probe`]: a dependency-free `GET`, for the `healthcheck` command and
//!   for waiting until a started server is ready (the load generator, in
//!   `loadtest/`, its own crate, uses it too).

pub mod actors;
pub mod booking;
pub mod configuration;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod open_files;
pub mod probe;
pub mod routes;
pub mod startup;
pub mod storage;
pub mod telemetry;
