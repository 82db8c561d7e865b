//! The persistence actor: group commit of every decided change.
//!
//! Changes arrive in the order their event actors decided them. While one
//! transaction runs on a blocking thread, new changes queue up; when it ends,
//! every waiting change goes into the next transaction. One fsync thus carries
//! as many bookings as arrived during the previous one, and each change's
//! `done` channel hears the outcome only after `COMMIT` returned.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::prelude::*;
use futures::channel::oneshot;

use super::event::{EventActor, StorageFailed};
use crate::booking::EventState;
use crate::ids::EventId;
use crate::storage::{Change, Database, StorageError};

/// The change was not stored; the cause is logged where it happened.
#[derive(Debug, Clone, Copy)]
pub struct NotStored;

/// Store one decided change; `done` hears whether it was committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Persist {
    pub change: Change,
    /// The event actor that decided the change, and its generation then; told
    /// when a commit fails. `None` for a new event, which has no actor yet.
    pub origin: Option<(Addr<EventActor>, u64)>,
    pub done: oneshot::Sender<Result<(), NotStored>>,
}

/// An event as stored; `None` if it was never committed.
pub type Reloaded = Result<Option<EventState>, NotStored>;

/// Read one event as stored, after every change queued before this message.
#[derive(Message)]
#[rtype(result = "Reloaded")]
pub struct Reload {
    pub event: EventId,
}

/// Resolves once every change sent before it is committed or refused.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

enum Job {
    Write(Persist),
    Reload(ReloadJob),
}

struct ReloadJob {
    event: EventId,
    reply: oneshot::Sender<Reloaded>,
}

/// What a transaction hands back to the actor: its failure, if any.
struct Finished {
    /// The changes of a failed transaction, with its cause; none was stored.
    failed: Option<(StorageError, Vec<Persist>)>,
}

pub struct OrderStore {
    database: Database,
    /// Work that arrived while a transaction ran, in arrival order.
    queue: VecDeque<Job>,
    /// A transaction is running; the next one starts when it ends.
    committing: bool,
    /// Most changes in one transaction, so one batch cannot grow without bound.
    batch_limit: usize,
    /// Per event, the first generation whose changes may still be written.
    /// Changes decided before an event's failed commit build on state that was
    /// never stored, so they are refused without being written.
    valid_from: HashMap<EventId, u64>,
    /// Shutdown waits here for the queue to drain.
    flush_waiters: Vec<oneshot::Sender<()>>,
}

impl OrderStore {
    pub fn new(database: Database, batch_limit: usize) -> Self {
        OrderStore {
            database,
            queue: VecDeque::new(),
            committing: false,
            batch_limit,
            valid_from: HashMap::new(),
            flush_waiters: Vec::new(),
        }
    }

    /// Starts the next transaction with everything queued, unless one is running.
    fn commit_queued(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.queue.is_empty() {
            return self.notify_if_flushed();
        }
        let mut writes = Vec::new();
        let mut reloads = Vec::new();
        while writes.len() < self.batch_limit {
            match self.queue.pop_front() {
                None => break,
                Some(Job::Reload(reload)) => reloads.push(reload),
                Some(Job::Write(persist)) if self.is_void(&persist) => {
                    let _ = persist.done.send(Err(NotStored));
                }
                Some(Job::Write(persist)) => writes.push(persist),
            }
        }
        self.committing = true;
        let database = self.database.clone();
        let run =
            actix_web::rt::task::spawn_blocking(move || write_batch(&database, writes, reloads));
        ctx.spawn(run.into_actor(self).map(|finished, store, ctx| {
            store.committing = false;
            match finished {
                Ok(finished) => store.finish(finished),
                Err(error) => log::error!("the commit thread was lost: {error}"),
            }
            store.commit_queued(ctx);
        }));
    }

    fn is_void(&self, persist: &Persist) -> bool {
        match (&persist.origin, &persist.change) {
            (Some((_, generation)), Change::Order { event, .. }) => self
                .valid_from
                .get(event)
                .is_some_and(|valid_from| generation < valid_from),
            _ => false,
        }
    }

    /// After a failed transaction: voids what its events decided since, tells
    /// them to reload, and answers its changes.
    fn finish(&mut self, finished: Finished) {
        let Some((error, writes)) = finished.failed else {
            return;
        };
        log::error!(
            "commit of {} changes failed, none stored: {error}",
            writes.len()
        );
        for persist in writes {
            if let (Some((actor, generation)), Change::Order { event, .. }) =
                (&persist.origin, &persist.change)
            {
                let valid_from = self.valid_from.entry(event.clone()).or_default();
                if *valid_from <= *generation {
                    *valid_from = generation + 1;
                    actor.do_send(StorageFailed {
                        generation: *generation,
                    });
                }
            }
            let _ = persist.done.send(Err(NotStored));
        }
    }

    fn notify_if_flushed(&mut self) {
        if !self.committing && self.queue.is_empty() {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// One transaction, on a blocking thread. A commit is confirmed from here, so
/// each confirmation goes straight to its waiting request.
fn write_batch(database: &Database, writes: Vec<Persist>, reloads: Vec<ReloadJob>) -> Finished {
    let mut failed = None;
    if !writes.is_empty() {
        let changes = writes.iter().map(|persist| &persist.change);
        // A panic must not lose the answers: treat it as a failed (rolled back) commit.
        let committed = catch_unwind(AssertUnwindSafe(|| database.commit(changes)))
            .unwrap_or_else(|_| Err(StorageError::Inconsistent("the commit panicked".into())));
        match committed {
            Ok(()) => {
                for persist in writes {
                    let _ = persist.done.send(Ok(()));
                }
            }
            Err(error) => failed = Some((error, writes)),
        }
    }
    // Reloads read after the writes queued before them.
    for ReloadJob { event, reply } in reloads {
        let _ = reply.send(database.load_event(&event).map_err(|error| {
            log::error!("reloading event {event} failed: {error}");
            NotStored
        }));
    }
    Finished { failed }
}

impl Actor for OrderStore {
    type Context = Context<Self>;
}

impl Handler<Persist> for OrderStore {
    type Result = ();

    fn handle(&mut self, persist: Persist, ctx: &mut Context<Self>) {
        self.queue.push_back(Job::Write(persist));
        self.commit_queued(ctx);
    }
}

impl Handler<Reload> for OrderStore {
    type Result = ResponseFuture<Reloaded>;

    fn handle(&mut self, Reload { event }: Reload, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, loaded) = oneshot::channel();
        self.queue
            .push_back(Job::Reload(ReloadJob { event, reply }));
        self.commit_queued(ctx);
        Box::pin(async move { loaded.await.unwrap_or(Err(NotStored)) })
    }
}

impl Handler<Flush> for OrderStore {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        let (waiter, flushed) = oneshot::channel();
        self.flush_waiters.push(waiter);
        self.notify_if_flushed();
        Box::pin(async move {
            let _ = flushed.await;
        })
    }
}
