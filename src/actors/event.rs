//! One actor per event: it owns the event's [`EventState`] and decides each
//! book, hold and cancel in the order they arrive, one at a time, and the
//! lapse of each hold at its expiry (a timer for the earliest, re-armed
//! after every decision).
//!
//! A decision is made at once, in memory, and the change goes to the
//! [`OrderStore`] together with the request's [`Reply`] channel (and, for an
//! idempotent request, its rendered answer): the store answers the request
//! once the change is committed. The actor never waits
//! for the disk; it decides the next message while the disk works. The
//! store keeps each actor's changes in order, so what is committed is always a
//! prefix of what was decided. If a commit fails, the store voids every change
//! decided since, and the actor reloads its state from the database.
//!
//! An actor lives only while its event is in use: the [`Directory`] starts
//! it from the database on the first message, and it stops itself once idle
//! for `passivate_after` (see `directory` for the order of both), unless it
//! has live holds: it must be awake to lapse them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::SpawnHandle;
use futures::channel::oneshot;

use super::directory::Directory;
use super::order_store::{NotStored, OrderStore, Origin, Persist, QueueSlot, Reload};
use super::status_feed::StatusFeed;
use crate::booking::{
    BookOutcome, CancelOutcome, EventState, HoldOutcome, OrderUpdate, PageCursor, Refusal,
    SettingsPatch, Standing, Summary, UtcMillis, WaitingPage,
};
use crate::idempotency::Pending;
use crate::ids::{EventId, UserKey};
use crate::storage::{Change, Database};

/// Why a message got no answer from the event's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingError {
    Refused(Refusal),
    /// No event with this id is stored.
    EventNotFound,
    /// The change, or a change it built on, was not stored.
    StorageUnavailable,
    /// A queue on the way (the event's mailbox, the store's backlog) was
    /// full: nothing was decided, the client may retry.
    Busy,
    /// No answer within the internal time-out. The change may still be
    /// committed: the client can find out, or retry with an `Idempotency-Key`.
    TimedOut,
    /// The actor is gone: the server is stopping.
    Stopped,
    /// The server was still starting (reading the idempotency keys) when the time-out passed.
    Recovering,
    /// Another instance owns the event (on PostgreSQL): nothing was decided.
    Elsewhere,
}

/// Where a book or cancel is answered: once its change is committed, or at
/// once if it is refused. The request waits on it, not the actor, which
/// meanwhile decides the next message.
pub type Reply<T> = oneshot::Sender<Result<T, BookingError>>;

/// For an idempotent request: renders its final answer from the decision, to
/// be stored in the transaction of its change. Written by the route, which
/// owns the wire format; the actor only calls it.
pub type Recorder<T, E> = Box<dyn FnOnce(Result<&T, E>) -> Pending + Send>;

/// Book a ticket for `user`, or a waiting place when sold out. Built, and
/// its decision rendered, by its `OrderMessage` impl in `routes/book.rs`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Book {
    pub user: UserKey,
    pub reply: Reply<BookOutcome>,
    pub recorder: Option<Recorder<BookOutcome, Refusal>>,
    /// Taken when the request was admitted: the store has room for the change.
    pub slot: QueueSlot,
}

/// Cancel `user`'s ticket, hold or waiting place. Built, and its decision
/// rendered, by its `OrderMessage` impl in `routes/cancel.rs`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Cancel {
    pub user: UserKey,
    pub reply: Reply<CancelOutcome>,
    pub recorder: Option<Recorder<CancelOutcome, Refusal>>,
    /// Taken when the request was admitted: the store has room for the change.
    pub slot: QueueSlot,
}

/// Hold a ticket for `user` for `hold_secs` seconds (else the default), or
/// a waiting place when none is free. Built, and its decision rendered, by
/// its `OrderMessage` impl in `routes/holds.rs`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hold {
    pub user: UserKey,
    /// As the request asked, 1 to `MAX_HOLD_SECS`; `None`: the default.
    pub hold_secs: Option<u32>,
    pub reply: Reply<HoldOutcome>,
    pub recorder: Option<Recorder<HoldOutcome, Refusal>>,
    /// Taken when the request was admitted: the store has room for the change.
    pub slot: QueueSlot,
}

/// Turn `user`'s live hold into a booking (see `routes/holds.rs`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfirmHold {
    pub user: UserKey,
    pub reply: Reply<()>,
    pub recorder: Option<Recorder<(), Refusal>>,
    /// Taken when the request was admitted: the store has room for the change.
    pub slot: QueueSlot,
}

/// Give up `user`'s live hold (see `routes/holds.rs`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseHold {
    pub user: UserKey,
    pub reply: Reply<CancelOutcome>,
    pub recorder: Option<Recorder<CancelOutcome, Refusal>>,
    /// Taken when the request was admitted: the store has room for the change.
    pub slot: QueueSlot,
}

/// Change the event's settings (see `EventState::configure`); answered
/// with its status once committed. See `routes/event_settings.rs`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Configure {
    pub patch: SettingsPatch,
    pub reply: Reply<Summary>,
    pub recorder: Option<Recorder<Summary, Refusal>>,
    /// Taken when the request was admitted: the store has room for the change.
    pub slot: QueueSlot,
}

/// The event's ticket and queue counts.
#[derive(Message, Clone)]
#[rtype(result = "Result<Summary, BookingError>")]
pub struct GetSummary;

/// Where `user` stands; `None` if never seen at this event.
#[derive(Message, Clone)]
#[rtype(result = "Result<Option<Standing>, BookingError>")]
pub struct GetStanding {
    pub user: UserKey,
}

/// A page of the waiting list: `limit` users after `after` (the last entry
/// of the page before).
#[derive(Message, Clone)]
#[rtype(result = "Result<WaitingPage, BookingError>")]
pub struct GetWaitingList {
    pub after: Option<PageCursor>,
    pub limit: usize,
}

/// Someone opened a stream of `user`'s standing (and watches it in the
/// `StatusFeed` already): their standing is published once every change
/// before it is committed. Answers `false` for a user never seen at the
/// event, else once the standing is published.
#[derive(Message, Clone)]
#[rtype(result = "Result<bool, BookingError>")]
pub struct WatchStanding {
    pub user: UserKey,
}

/// From the store: a commit holding a change of `generation` failed.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct StorageFailed {
    pub generation: u64,
}

/// Sent by an idle actor to itself once it left the directory: it is the
/// last message in its mailbox, so the actor stops after handling the rest.
#[derive(Message)]
#[rtype(result = "()")]
struct Passivate;

/// Another instance asks for the event (PostgreSQL `NOTIFY`, see
/// `Storage::listen_for_handoffs`): it passivates, and its release lets that
/// instance take the event; not before it held it for `MIN_OWNERSHIP`.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct HandOff;

/// The least time an instance keeps an event before it hands it over: two
/// instances that both receive the event's requests (a load balancer that
/// flaps) pass it back and forth at most once per this, not per request.
const MIN_OWNERSHIP: Duration = Duration::from_secs(1);

/// An actor is checked every `passivate_after / IDLE_CHECKS`, and passivates
/// at the first check that finds `IDLE_CHECKS` whole intervals without a
/// message: after between `passivate_after` and a quarter more.
const IDLE_CHECKS: u32 = 4;

/// Watched users' standings are worked out at most this often: a storm of
/// changes moves a queue's positions on each, and their streams send at
/// most 10 a second anyway.
const STANDINGS_EVERY: Duration = Duration::from_millis(100);

/// An event actor's address, shared. Cloning an `Addr` allocates (actix gives
/// every sender its own parking state); cloning this only counts a reference.
pub type EventAddr = Arc<Addr<EventActor>>;

pub struct EventActor {
    id: EventId,
    /// Its own address, sent with each change: the store tells the actor
    /// through it when the change's commit failed.
    me: EventAddr,
    state: EventState,
    store: Addr<OrderStore>,
    /// Counts failed commits; a change carries the generation it was decided
    /// in, so the store can refuse the ones decided on top of a failure.
    generation: u64,
    /// The writer's session under which this instance owns the event (see
    /// `Storage::session`): once it ended, another instance may decide for
    /// the event, and this actor answers nothing more from its copy.
    session: u64,
    /// Where it reads the writer's current session.
    database: Database,
    /// The reload after a failure did not succeed either, so `state` may count
    /// changes that were never stored: nothing is answered from it until a
    /// reload succeeds.
    stale: bool,
    /// Where it takes itself out when idle.
    directory: Arc<Directory>,
    /// Idle this long, it stops; `None`: never.
    passivate_after: Option<Duration>,
    /// Checks in a row that found no message since the one before (every
    /// message sets it back to 0: cheaper than reading the clock).
    idle_checks: u32,
    /// Set once it left the directory: told when the actor has stopped.
    passivating: Option<oneshot::Sender<()>>,
    /// When it started: another instance's request to hand the event over
    /// is put off until it held the event for `MIN_OWNERSHIP`.
    started: Instant,
    /// Another instance asked for the event: it passivates (at once, or
    /// once it held the event for `MIN_OWNERSHIP`), and then lets that
    /// instance take it before its own requests may take it back.
    handing_off: bool,
    /// A hold's duration in seconds when its request names none.
    hold_secs: u32,
    /// The timer of the earliest live hold's lapse, and that expiry: moved
    /// whenever a decision changes which hold lapses first.
    expiry_timer: Option<(UtcMillis, SpawnHandle)>,
    /// Who watches which users' standings (see `publish_standings`).
    feed: Arc<StatusFeed>,
    /// Watched users' standings are due: armed after a change, it fires
    /// `STANDINGS_EVERY` after the last time they were worked out.
    standings_timer: Option<SpawnHandle>,
    /// When the watched users' standings were last worked out.
    standings_at: Instant,
}

impl EventActor {
    pub(super) fn new(
        id: EventId,
        state: EventState,
        session: u64,
        store: Addr<OrderStore>,
        me: EventAddr,
        directory: Arc<Directory>,
    ) -> Self {
        let database = directory.database();
        let (passivate_after, hold_secs) = (directory.passivate_after(), directory.hold_secs());
        let feed = directory.feed();
        EventActor {
            id,
            me,
            state,
            session,
            database,
            store,
            generation: 0,
            stale: false,
            directory,
            passivate_after,
            idle_checks: 0,
            passivating: None,
            started: Instant::now(),
            handing_off: false,
            hold_secs,
            expiry_timer: None,
            feed,
            standings_timer: None,
            standings_at: Instant::now(),
        }
    }

    /// Every `passivate_after / IDLE_CHECKS`: once idle for `passivate_after`,
    /// leaves the directory and sends itself `Passivate`.
    fn check_idle(&mut self, _: &mut Context<Self>) {
        if self.passivating.is_some() {
            return;
        }
        self.idle_checks += 1;
        // The first check after a message may come at once: it does not count.
        // Live holds keep it awake: no one else would lapse them in time.
        if self.idle_checks <= IDLE_CHECKS || self.state.next_expiry().is_some() {
            return;
        }
        self.passivate();
    }

    /// Leaves the directory and sends itself `Passivate`, unless on its way already.
    fn passivate(&mut self) {
        if self.passivating.is_some() {
            return;
        }
        if let Some(stopped) = self.directory.begin_passivation(&self.id, &self.me) {
            self.passivating = Some(stopped);
            // Behind every message sent before it left the directory, and no message comes after.
            self.me.do_send(Passivate);
        }
    }

    /// Replies to a decided change: the change, or the answer of an
    /// idempotent request, goes to the store, which replies once they are
    /// committed; a plain refusal is replied to at once.
    fn commit_then_reply<T: Send + 'static>(
        &mut self,
        decided: Result<(T, Change), Refusal>,
        reply: Reply<T>,
        recorder: Option<Recorder<T, Refusal>>,
        slot: QueueSlot,
    ) {
        let (result, change) = match decided {
            Ok((outcome, change)) => (Ok(outcome), Some(change)),
            Err(refusal) => (Err(refusal), None),
        };
        let answer = recorder.map(|record| record(result.as_ref().map_err(|refusal| *refusal)));
        if change.is_none() && answer.is_none() {
            // The place is given back before the client hears the refusal.
            drop(slot);
            let _ = reply.send(result.map_err(BookingError::Refused));
            return;
        }
        let done = Box::new(move |stored: Result<(), NotStored>| {
            let answer = match stored {
                Ok(()) => result.map_err(BookingError::Refused),
                Err(NotStored) => Err(BookingError::StorageUnavailable),
            };
            let _ = reply.send(answer);
        });
        let origin = Origin {
            actor: self.me.clone(),
            event: self.id.clone(),
            generation: self.generation,
        };
        let published = change.is_some().then(|| self.next_version());
        self.store.do_send(Persist {
            change,
            answer,
            origin: Some(origin),
            published,
            standings: Vec::new(),
            done,
            slot: Some(slot),
        });
    }

    /// Counts one more change handed to the store, and says the event's
    /// status after it, for its status streams once it is committed.
    fn next_version(&mut self) -> Summary {
        self.state.bump_version();
        self.state.summary()
    }

    /// Lapses the holds whose expiry has passed, each a change of its own
    /// for the store (no request waits on it), and sets the timer for the
    /// next. Called before every decision and answer, so that nothing is
    /// decided or read on a hold that has lapsed, whether or not its timer
    /// has fired yet.
    fn lapse_due(&mut self, ctx: &mut Context<Self>) {
        let Some(next) = self.state.next_expiry() else {
            return self.cancel_expiry_timer(ctx);
        };
        let now = UtcMillis::now();
        if next <= now {
            // One at a time: each change carries the status just after it.
            while let Some(update) = self.state.lapse_next(now) {
                let origin = Origin {
                    actor: self.me.clone(),
                    event: self.id.clone(),
                    generation: self.generation,
                };
                let published = Some(self.next_version());
                self.store.do_send(Persist {
                    change: Some(Change::Order {
                        event: self.id.clone(),
                        update,
                    }),
                    answer: None,
                    origin: Some(origin),
                    published,
                    standings: Vec::new(),
                    // A failure reloads the event (`StorageFailed`), which lapses the hold again.
                    done: Box::new(|_| {}),
                    slot: None,
                });
            }
            self.standings_due(ctx);
        }
        self.arm_expiry_timer(ctx);
    }

    /// Points the timer at the earliest live hold's expiry, if it is not there yet.
    fn arm_expiry_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(next) = self.state.next_expiry() else {
            return self.cancel_expiry_timer(ctx);
        };
        if matches!(self.expiry_timer, Some((armed, _)) if armed == next) {
            return;
        }
        self.cancel_expiry_timer(ctx);
        let wait = UtcMillis::now().until(next);
        let handle = ctx.run_later(wait, |actor, ctx| {
            actor.expiry_timer = None;
            if actor.check_fresh(ctx).is_ok() {
                actor.lapse_due(ctx);
            }
        });
        self.expiry_timer = Some((next, handle));
    }

    fn cancel_expiry_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some((_, handle)) = self.expiry_timer.take() {
            ctx.cancel_future(handle);
        }
    }

    /// After a change: the standings of the users someone watches may have
    /// moved (a queue's positions move with every cancel and promotion).
    /// They are worked out at most every `STANDINGS_EVERY`, on a timer, so
    /// that one computation covers a burst of changes.
    fn standings_due(&mut self, ctx: &mut Context<Self>) {
        if self.standings_timer.is_some() || !self.feed.watches_standings(&self.id) {
            return;
        }
        let wait = (self.standings_at + STANDINGS_EVERY).saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, |actor, ctx| {
            actor.standings_timer = None;
            if actor.check_fresh(ctx).is_ok() {
                actor.standings_at = Instant::now();
                let watched = actor.feed.watched_users(&actor.id);
                actor.publish_standings(watched, Box::new(|_| {}));
            }
        });
        self.standings_timer = Some(handle);
    }

    /// Works out these `users`' standings now and sends them to the store
    /// behind every change decided so far: it publishes them once those are
    /// committed, so that a stream never shows what a storage failure then
    /// undoes. `done` hears whether they were.
    fn publish_standings(
        &mut self,
        users: Vec<UserKey>,
        done: Box<dyn FnOnce(Result<(), NotStored>) + Send>,
    ) {
        let standings = users
            .into_iter()
            .filter_map(|user| Some((user.clone(), self.state.standing(&user)?)))
            .collect();
        let origin = Origin {
            actor: self.me.clone(),
            event: self.id.clone(),
            generation: self.generation,
        };
        self.store.do_send(Persist {
            change: None,
            answer: None,
            origin: Some(origin),
            published: None,
            standings,
            done,
            slot: None,
        });
    }

    /// Replaces the state with what the database holds. The mailbox waits
    /// meanwhile: nothing may be decided on the state being replaced.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        let reload = self.store.send(Reload {
            event: self.id.clone(),
        });
        ctx.wait(
            reload
                .into_actor(self)
                .map(|loaded, actor, ctx| match loaded {
                    Ok(Ok(Some((state, session)))) => {
                        log::info!("event {} reloaded from the database", actor.id);
                        actor.state = state;
                        actor.session = session;
                        actor.stale = false;
                        // What lapsed meanwhile, or was lapsed and not stored, lapses now.
                        actor.cancel_expiry_timer(ctx);
                        actor.lapse_due(ctx);
                        // The standings published may be of changes voided since.
                        actor.standings_due(ctx);
                    }
                    _ => {
                        log::warn!(
                            "event {} could not be reloaded; refusing requests until it is",
                            actor.id
                        );
                        actor.stale = true;
                    }
                }),
        );
    }

    /// While stale, answers `StorageUnavailable` and tries another reload.
    fn check_fresh(&mut self, ctx: &mut Context<Self>) -> Result<(), BookingError> {
        if self.database.session() != self.session {
            // The session that owned the event ended: so did this actor's
            // right to answer for it. It leaves; the next request activates
            // the event again, from the database, wherever it is owned then.
            self.passivate();
            return Err(BookingError::StorageUnavailable);
        }
        if self.stale {
            self.reload(ctx);
            return Err(BookingError::StorageUnavailable);
        }
        Ok(())
    }

    /// Decides a change of the event's orders with `decision` (given the
    /// time now) and answers it, once the state is fresh; else refuses.
    fn decide<T: Send + 'static>(
        &mut self,
        reply: Reply<T>,
        recorder: Option<Recorder<T, Refusal>>,
        slot: QueueSlot,
        ctx: &mut Context<Self>,
        decision: impl FnOnce(&mut EventState, UtcMillis) -> Result<(T, OrderUpdate), Refusal>,
    ) {
        let event = self.id.clone();
        self.decide_change(reply, recorder, slot, ctx, |state, now| {
            let (outcome, update) = decision(state, now)?;
            Ok((outcome, Change::Order { event, update }))
        });
    }

    /// Decides any change with `decision` (given the time now) and answers
    /// it, once the state is fresh and the holds due have lapsed; else refuses.
    fn decide_change<T: Send + 'static>(
        &mut self,
        reply: Reply<T>,
        recorder: Option<Recorder<T, Refusal>>,
        slot: QueueSlot,
        ctx: &mut Context<Self>,
        decision: impl FnOnce(&mut EventState, UtcMillis) -> Result<(T, Change), Refusal>,
    ) {
        match self.check_fresh(ctx) {
            Ok(()) => {
                self.lapse_due(ctx);
                let decided = decision(&mut self.state, UtcMillis::now());
                let changed = decided.is_ok();
                self.commit_then_reply(decided, reply, recorder, slot);
                self.arm_expiry_timer(ctx);
                if changed {
                    self.standings_due(ctx);
                }
            }
            Err(error) => {
                // The key and the place are freed before the client hears the 503 and retries.
                drop((recorder, slot));
                let _ = reply.send(Err(error));
            }
        }
    }
}

impl Actor for EventActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(after) = self.passivate_after {
            let every = (after / IDLE_CHECKS).max(Duration::from_millis(1));
            ctx.run_interval(every, Self::check_idle);
        }
        // Before any request is decided: the holds that lapsed while the
        // event was not in memory (or the server was down), in order of expiry.
        self.lapse_due(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Behind every change it sent: the event is given up once they are committed.
        if self.handing_off {
            self.directory.hand_over(&self.id);
        } else {
            self.directory.release(&self.id);
        }
        if let Some(stopped) = self.passivating.take() {
            self.directory.finish_passivation(&self.id, stopped);
        }
    }
}

impl Handler<HandOff> for EventActor {
    type Result = ();

    fn handle(&mut self, _: HandOff, ctx: &mut Context<Self>) {
        let held = self.started.elapsed();
        let first = !self.handing_off;
        self.handing_off = true;
        if held >= MIN_OWNERSHIP {
            self.passivate();
        } else if first {
            ctx.run_later(MIN_OWNERSHIP - held, |actor, _| actor.passivate());
        }
    }
}

impl Handler<Passivate> for EventActor {
    type Result = ();

    fn handle(&mut self, _: Passivate, ctx: &mut Context<Self>) {
        if let Some(due) = self.standings_timer.take() {
            ctx.cancel_future(due);
            // The last changes' standings, before the actor is gone; not
            // from a state that may hold changes never stored.
            if !self.stale && self.database.session() == self.session {
                self.publish_standings(self.feed.watched_users(&self.id), Box::new(|_| {}));
            }
        }
        ctx.stop();
    }
}

impl Handler<Book> for EventActor {
    type Result = ();

    fn handle(
        &mut self,
        Book {
            user,
            reply,
            recorder,
            slot,
        }: Book,
        ctx: &mut Context<Self>,
    ) {
        self.idle_checks = 0;
        self.decide(reply, recorder, slot, ctx, |state, _| state.book(&user));
    }
}

impl Handler<Cancel> for EventActor {
    type Result = ();

    fn handle(
        &mut self,
        Cancel {
            user,
            reply,
            recorder,
            slot,
        }: Cancel,
        ctx: &mut Context<Self>,
    ) {
        self.idle_checks = 0;
        self.decide(reply, recorder, slot, ctx, |state, now| {
            state.cancel(&user, now)
        });
    }
}

impl Handler<Hold> for EventActor {
    type Result = ();

    fn handle(
        &mut self,
        Hold {
            user,
            hold_secs,
            reply,
            recorder,
            slot,
        }: Hold,
        ctx: &mut Context<Self>,
    ) {
        self.idle_checks = 0;
        let default = self.hold_secs;
        self.decide(reply, recorder, slot, ctx, |state, now| {
            // The request's duration, else the event's, else the server's.
            let secs = hold_secs.or(state.settings().hold_secs).unwrap_or(default);
            state.hold(&user, now.plus_secs(secs))
        });
    }
}

impl Handler<ConfirmHold> for EventActor {
    type Result = ();

    fn handle(
        &mut self,
        ConfirmHold {
            user,
            reply,
            recorder,
            slot,
        }: ConfirmHold,
        ctx: &mut Context<Self>,
    ) {
        self.idle_checks = 0;
        self.decide(reply, recorder, slot, ctx, |state, _| state.confirm(&user));
    }
}

impl Handler<ReleaseHold> for EventActor {
    type Result = ();

    fn handle(
        &mut self,
        ReleaseHold {
            user,
            reply,
            recorder,
            slot,
        }: ReleaseHold,
        ctx: &mut Context<Self>,
    ) {
        self.idle_checks = 0;
        self.decide(reply, recorder, slot, ctx, |state, now| {
            state.release(&user, now)
        });
    }
}

impl Handler<Configure> for EventActor {
    type Result = ();

    fn handle(
        &mut self,
        Configure {
            patch,
            reply,
            recorder,
            slot,
        }: Configure,
        ctx: &mut Context<Self>,
    ) {
        self.idle_checks = 0;
        let event = self.id.clone();
        self.decide_change(reply, recorder, slot, ctx, |state, now| {
            let (settings, promoted) = state.configure(patch, now)?;
            let change = Change::Configure {
                event,
                settings,
                promoted,
            };
            Ok((state.summary(), change))
        });
    }
}

impl Handler<GetSummary> for EventActor {
    type Result = Result<Summary, BookingError>;

    fn handle(&mut self, _: GetSummary, ctx: &mut Context<Self>) -> Self::Result {
        self.idle_checks = 0;
        self.check_fresh(ctx)?;
        self.lapse_due(ctx);
        Ok(self.state.summary())
    }
}

impl Handler<GetStanding> for EventActor {
    type Result = Result<Option<Standing>, BookingError>;

    fn handle(
        &mut self,
        GetStanding { user }: GetStanding,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.idle_checks = 0;
        self.check_fresh(ctx)?;
        self.lapse_due(ctx);
        Ok(self.state.standing(&user))
    }
}

impl Handler<WatchStanding> for EventActor {
    type Result = ResponseFuture<Result<bool, BookingError>>;

    fn handle(
        &mut self,
        WatchStanding { user }: WatchStanding,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.idle_checks = 0;
        if let Err(error) = self.check_fresh(ctx) {
            return Box::pin(async move { Err(error) });
        }
        self.lapse_due(ctx);
        if self.state.standing(&user).is_none() {
            return Box::pin(async { Ok(false) });
        }
        // This user's alone: the others' are the timer's (`standings_due`).
        let (published, answer) = oneshot::channel();
        self.publish_standings(
            vec![user],
            Box::new(move |stored| {
                let _ = published.send(stored);
            }),
        );
        Box::pin(async move {
            match answer.await {
                Ok(Ok(())) => Ok(true),
                Ok(Err(NotStored)) => Err(BookingError::StorageUnavailable),
                Err(_) => Err(BookingError::Stopped),
            }
        })
    }
}

impl Handler<GetWaitingList> for EventActor {
    type Result = Result<WaitingPage, BookingError>;

    fn handle(
        &mut self,
        GetWaitingList { after, limit }: GetWaitingList,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.idle_checks = 0;
        self.check_fresh(ctx)?;
        self.lapse_due(ctx);
        Ok(self.state.waiting_page(after.as_ref(), limit))
    }
}

impl Handler<StorageFailed> for EventActor {
    type Result = ();

    fn handle(&mut self, StorageFailed { generation }: StorageFailed, ctx: &mut Context<Self>) {
        // Several failed changes of one generation need one reload.
        if generation == self.generation {
            self.generation += 1;
            self.reload(ctx);
        }
    }
}
