//! Builds the running server: actors, HTTP, recovery, and an orderly stop.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};
use futures::future::{select, Either, LocalBoxFuture};
use metrics_exporter_prometheus::PrometheusHandle;
use socket2::{Domain, Protocol, Socket, Type};

use crate::actors::{
    EventRegistry, Flush, ForgetAnswers, Limits, OrderStore, Recover, Recovered, StatusFeed,
    WorkerThreads,
};
use crate::configuration::Settings;
use crate::idempotency::Idempotency;
use crate::open_files::OpenFiles;
use crate::routes::{self, Access, BodyLimit};
use crate::storage::{Database, StorageError};
use crate::telemetry::{self, StoreMetrics};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the database {path}: {source}")]
    Database { path: String, source: StorageError },
    #[error("cannot recover from the database {path}: {source}")]
    Recovery { path: String, source: StorageError },
    #[error("the store stopped before recovery was over")]
    StoreStopped,
    #[error("cannot start the threads that read events: {0}")]
    Readers(std::io::Error),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// What the server prints on stdout, followed by its URL, once it listens: the
/// port may have been 0, so scripts and tests read it from there. Recovery
/// may still be running then; `/ready` tells when it is over.
pub const LISTENING: &str = "event-booking listening on ";

/// A server that listens, but has neither started serving nor recovered.
pub struct Application {
    address: SocketAddr,
    server: Server,
    /// Reads the stored events into their actors; the API waits for it.
    recovery: LocalBoxFuture<'static, Result<(), ServerError>>,
    /// Flushed last on shutdown, after the HTTP server stopped.
    store: Addr<OrderStore>,
    /// The store's thread, stopped after the flush.
    store_thread: Arbiter,
    /// The status streams, ended when the server stops.
    feed: Arc<StatusFeed>,
}

impl Application {
    /// Opens the database, starts the store, binds the configured address and
    /// prepares the recovery that [`run_until`](Self::run_until) runs while
    /// already answering `/health` and `/ready`. Must run inside an actix `System`.
    pub fn build(settings: Settings) -> Result<Self, ServerError> {
        let (database, path) = open_database(&settings)?;
        let workers = or_cores(settings.workers);
        let (listener, address, max_connections) = bind(&settings, workers)?;
        // Before anything records a metric: until then, records go nowhere.
        let metrics = telemetry::install();
        let feed = StatusFeed::new(settings.max_streams);
        let (store, store_thread) = start_store(database.clone(), &settings, feed.clone());
        let state = SharedState::new(&settings, &store, database, workers, metrics, feed.clone())
            .map_err(ServerError::Readers)?;
        warn_if_exposed(&settings, &state.access);
        spawn_metrics_upkeep(&state);
        spawn_housekeeping(&state);
        let recovery = recover(
            path,
            store.clone(),
            state.registry.clone(),
            state.idempotency.clone(),
        );
        let server = serve(
            (listener, address),
            &settings,
            workers,
            max_connections,
            state,
        )?;
        Ok(Application {
            address,
            server,
            recovery,
            store,
            store_thread,
            feed,
        })
    }

    /// The bound address (the real port when the configured one was 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves, recovers, and serves until `shutdown` resolves (or recovery
    /// fails); then stops accepting, lets requests in flight finish, and waits
    /// until every decided change is committed or refused.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let handle = self.server.handle();
        let mut server = actix_web::rt::spawn(self.server);
        let recovery = self.recovery;
        let stop = async move {
            let mut shutdown = pin!(shutdown);
            match select(recovery, shutdown.as_mut()).await {
                Either::Left((Ok(()), _)) => {
                    shutdown.await;
                    Ok(())
                }
                Either::Left((Err(error), _)) => Err(error),
                Either::Right(((), _)) => Ok(()),
            }
        };
        let outcome = match select(pin!(stop), &mut server).await {
            Either::Left((stopped, _)) => {
                log::info!("shutting down: finishing the requests in flight");
                // Streams never finish by themselves: they end now, their clients reconnect.
                self.feed.stop();
                handle.stop(true).await;
                let served = server.await.map_err(std::io::Error::other)?;
                stopped.and(served.map_err(ServerError::from))
            }
            Either::Right((served, _)) => served
                .map_err(std::io::Error::other)?
                .map_err(ServerError::from),
        };
        let _ = self.store.send(Flush).await;
        self.store_thread.stop();
        log::info!("stopped; every acknowledged change is stored");
        outcome
    }
}

/// The shared state every worker's `App` gets a handle to: created once,
/// here, so that it exists once, not once per worker.
struct SharedState {
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
    access: web::Data<Access>,
    /// What `/metrics` renders.
    metrics: web::Data<PrometheusHandle>,
    /// The persistence actor: `/ready` sends its probe through it, and
    /// housekeeping its deletes.
    store: web::Data<Addr<OrderStore>>,
    /// For the reads that go to no event: the list of events.
    database: web::Data<Database>,
    /// The events' committed statuses, for their streams.
    feed: web::Data<StatusFeed>,
    /// The HTTP workers' threads, where event actors run; each worker
    /// announces its own as it starts (see `WorkerThreads`).
    threads: Arc<WorkerThreads>,
}

impl SharedState {
    fn new(
        settings: &Settings,
        store: &Addr<OrderStore>,
        database: Database,
        workers: usize,
        metrics: PrometheusHandle,
        feed: Arc<StatusFeed>,
    ) -> std::io::Result<Self> {
        let threads = Arc::new(WorkerThreads::new(workers));
        let limits = Limits {
            mailbox_capacity: settings.mailbox_capacity,
            store_backlog: settings.store_backlog,
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            passivate_after: (settings.passivate_after_secs > 0)
                .then(|| Duration::from_secs(settings.passivate_after_secs)),
            hold_secs: settings.hold_secs,
        };
        let retention = Duration::from_secs(settings.idempotency.retention_secs);
        let registry = EventRegistry::new(
            store.clone(),
            database.clone(),
            threads.clone(),
            limits,
            feed.clone(),
        )?;
        Ok(SharedState {
            registry: web::Data::new(registry),
            idempotency: web::Data::new(Idempotency::new(retention, settings.idempotency.max_keys)),
            access: web::Data::new(Access::new(&settings.auth, &settings.rate_limit)),
            metrics: web::Data::new(metrics),
            store: web::Data::new(store.clone()),
            database: web::Data::new(database),
            feed: web::Data::from(feed),
            threads,
        })
    }
}

/// Opens (creating or migrating) the database, and names it as logs will:
/// by its full path where it has one.
fn open_database(settings: &Settings) -> Result<(Database, String), ServerError> {
    let database = Database::open(settings).map_err(|source| ServerError::Database {
        path: Database::describe(settings),
        source,
    })?;
    Ok((database, Database::describe(settings)))
}

/// Binds the configured address with connections fitted to the open-files
/// limit: the listener, the address it got (the real port when the
/// configured one was 0), and the connections each worker may hold.
fn bind(
    settings: &Settings,
    workers: usize,
) -> Result<(TcpListener, SocketAddr, usize), ServerError> {
    let (max_connections, backlog) = connection_limits(settings, workers);
    let configured = SocketAddr::new(settings.host, settings.port);
    let listen_error = |source| ServerError::Listen {
        address: configured.to_string(),
        source,
    };
    let listener = listen(configured, backlog).map_err(listen_error)?;
    let address = listener.local_addr().map_err(listen_error)?;
    Ok((listener, address, max_connections))
}

/// Starts the persistence actor on a thread of its own: SQLite calls block.
fn start_store(
    database: Database,
    settings: &Settings,
    feed: Arc<StatusFeed>,
) -> (Addr<OrderStore>, Arbiter) {
    let store_thread = Arbiter::new();
    let (batch_limit, compaction_interval) = (
        settings.commit_batch_limit,
        settings.compaction_interval_rows,
    );
    let store = OrderStore::start_in_arbiter(&store_thread.handle(), move |_| {
        OrderStore::new(
            database,
            batch_limit,
            compaction_interval,
            StoreMetrics::new(),
            feed,
        )
    });
    (store, store_thread)
}

/// Says so in the log when the configuration leaves the API open to anyone.
fn warn_if_exposed(settings: &Settings, access: &Access) {
    if access.is_open() {
        log::warn!("no API keys configured: anyone who reaches this server may create events and cancel bookings");
    }
    if settings
        .cors
        .allowed_origins
        .iter()
        .any(|origin| origin == "*")
    {
        log::warn!("CORS allows any origin: pages on every site may call this API");
    }
}

/// Drains the metrics' histograms every 5 s: they are buffered until
/// drained, and scrapes, which drain them too, may not come.
fn spawn_metrics_upkeep(state: &SharedState) {
    let metrics = state.metrics.clone();
    actix_web::rt::spawn(async move {
        let mut every_5s = actix_web::rt::time::interval(Duration::from_secs(5));
        loop {
            every_5s.tick().await;
            metrics.run_upkeep();
        }
    });
}

/// Idle rate-limit clients and expired idempotency answers every minute (a
/// pass over every key); the cap on idempotency keys every second, as keyed
/// requests may arrive by the ten thousand a second; and every second, the
/// memory of passivated events back to the system, and the channels of
/// ended streams. On a shared database, once the writer's session changed
/// (it ended: another instance may own any event now), every stream ends,
/// and its client reconnects to an owner.
fn spawn_housekeeping(state: &SharedState) {
    telemetry::keys_evicted(0); // The series exists before the first eviction.
    let (access, idempotency, store, registry) = (
        state.access.clone(),
        state.idempotency.clone(),
        state.store.clone(),
        state.registry.clone(),
    );
    let (feed, database) = (state.feed.clone(), state.database.clone());
    actix_web::rt::spawn(async move {
        let mut every_second = actix_web::rt::time::interval(Duration::from_secs(1));
        let mut session = database.session();
        for tick in 0u64.. {
            every_second.tick().await;
            let expiry = tick % 60 == 0;
            if expiry {
                access.forget_idle_clients();
                idempotency.forget_expired();
            }
            forget_answers(&idempotency, &store, expiry);
            registry.give_back_memory();
            feed.forget_unwatched();
            if database.fences() && database.session() != session {
                session = database.session();
                feed.end_all_streams();
            }
        }
    });
}

/// The HTTP server on `listener` (bound to `address`), with `workers`
/// workers of at most `max_connections` each and its middleware in order;
/// started, but serving only once polled.
fn serve(
    (listener, address): (TcpListener, SocketAddr),
    settings: &Settings,
    workers: usize,
    max_connections: usize,
    state: SharedState,
) -> Result<Server, ServerError> {
    let (body_limit, cors) = (settings.body_limit, settings.cors.clone());
    let server = HttpServer::new(move || {
        // Runs on each worker's thread as it starts.
        state.threads.announce_current();
        App::new()
            .app_data(state.registry.clone())
            .app_data(state.access.clone())
            .app_data(state.idempotency.clone())
            .app_data(state.metrics.clone())
            .app_data(state.store.clone())
            .app_data(state.database.clone())
            .app_data(state.feed.clone())
            .app_data(BodyLimit(body_limit))
            .configure(routes::configure)
            .default_service(web::to(routes::route_not_found))
            // Without allowed origins the API is same-origin only: nothing for CORS to add.
            .wrap(Condition::new(
                !cors.allowed_origins.is_empty(),
                routes::cors(&cors),
            ))
            .wrap(from_fn(routes::json_errors))
            // Outside json_errors, so that it drops the body of every answer to a HEAD.
            .wrap(from_fn(routes::head_as_get))
            .wrap(from_fn(routes::observe))
    })
    .workers(workers)
    .max_connections(max_connections)
    .client_request_timeout(Duration::from_millis(settings.client_request_timeout_ms))
    .keep_alive(Duration::from_secs(settings.keep_alive_secs))
    .shutdown_timeout(settings.shutdown_timeout_secs)
    // Signals are ours: the store must flush before the System stops.
    .disable_signals()
    .listen(listener)
    .map_err(|source| ServerError::Listen {
        address: address.to_string(),
        source,
    })?;
    Ok(server.run())
}

/// Forgets the answers over the cap on idempotency keys (the oldest) in
/// memory, and has the store delete their rows, and with `expiry` the
/// expired ones. Only then: a delete is a write, and waits like one when
/// another process locks the database.
fn forget_answers(idempotency: &Idempotency, store: &Addr<OrderStore>, expiry: bool) {
    let first_kept = idempotency.evict_over_cap();
    telemetry::idempotency_keys(idempotency.keys_kept());
    if expiry || first_kept.is_some() {
        store.do_send(ForgetAnswers {
            cutoff: idempotency.cutoff(),
            first_kept: first_kept.unwrap_or(0),
        });
    }
}

/// Reads the idempotency answers and the events' counts (on the store's
/// thread), then lets requests for events in: the API waits until it is
/// done. Events themselves are read when first asked for.
fn recover(
    path: String,
    store: Addr<OrderStore>,
    registry: web::Data<EventRegistry>,
    idempotency: web::Data<Idempotency>,
) -> LocalBoxFuture<'static, Result<(), ServerError>> {
    Box::pin(async move {
        let started = Instant::now();
        let recover = Recover {
            answers_since: idempotency.cutoff(),
        };
        let Recovered {
            totals,
            answers,
            raw_fingerprints_before,
        } = store
            .send(recover)
            .await
            .map_err(|_| ServerError::StoreStopped)?
            .map_err(|source| ServerError::Recovery {
                path: path.clone(),
                source,
            })?;
        // Answers first: a retry let in by the registry must find its answer.
        idempotency.restore(answers, raw_fingerprints_before);
        // A lowered cap, or a stop before the last eviction reached the disk.
        forget_answers(&idempotency, &store, false);
        registry.recover().await;
        log::info!(
            "database {path}: {} events stored ({} tickets booked, {} users waiting); ready in {:?}",
            totals.events,
            totals.booked,
            totals.waiting,
            started.elapsed()
        );
        actix_web::rt::spawn(async move { registry.watch_holds().await });
        Ok(())
    })
}

/// Raises the limit on open files (see [`OpenFiles`]) and fits the
/// connections to it: each worker's `max_connections`, and the listen backlog.
fn connection_limits(settings: &Settings, workers: usize) -> (usize, i32) {
    let Some(files) = OpenFiles::raise() else {
        return (settings.max_connections, LISTEN_BACKLOG);
    };
    let per_worker = files.connections_per_worker(settings.max_connections, workers);
    let backlog = files.backlog(LISTEN_BACKLOG, workers);
    log::info!(
        "open files: at most {} (the soft limit was {}); connections: at most {per_worker} per worker, {} in all",
        files.limit,
        files.was,
        per_worker * workers
    );
    let mut lowered = Vec::new();
    if per_worker < settings.max_connections {
        let configured = settings.max_connections;
        lowered.push(format!(
            "max_connections from {configured} to {per_worker} per worker"
        ));
    }
    if backlog < LISTEN_BACKLOG {
        lowered.push(format!(
            "the listen backlog from {LISTEN_BACKLOG} to {backlog}"
        ));
    }
    if !lowered.is_empty() {
        log::warn!(
            "lowered {} to fit {} open files; raise the hard limit \
             (docker run --ulimit nofile=..., systemd LimitNOFILE=...) for more",
            lowered.join(" and "),
            files.limit
        );
    }
    (per_worker, backlog)
}

/// Connections the kernel completes before the server accepts them; the
/// kernel caps it at `net.core.somaxconn` (4096 on current Linux). std's
/// `bind` asks for 128: a burst of a few hundred clients connecting at once,
/// as a load test starts, then loses SYNs, and each lost one waits a second
/// for its retransmission.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds `address` as actix-web's own `bind` would (`SO_REUSEADDR`, so a
/// restart can listen while the old connections linger), with an accept
/// queue of `backlog` connections.
fn listen(address: SocketAddr, backlog: i32) -> std::io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn or_cores(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpStream};

    use super::*;

    #[test]
    fn hundreds_of_clients_connecting_at_once_all_get_through_before_any_is_accepted() {
        let listener =
            listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), LISTEN_BACKLOG).expect("listens");
        let address = listener.local_addr().expect("bound");
        // Nothing accepts: each connection waits in the accept queue. With
        // std's 128 the 130th SYN is dropped and its connect times out.
        let clients: Vec<TcpStream> = (0..600)
            .map(|n| {
                TcpStream::connect_timeout(&address, Duration::from_millis(500))
                    .unwrap_or_else(|error| panic!("connection {n} was not taken in: {error}"))
            })
            .collect();
        assert_eq!(clients.len(), 600);
    }
}
