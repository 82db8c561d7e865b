//! One actor per event: it owns the event's [`EventState`] and decides each
//! book and cancel in the order they arrive, one at a time.
//!
//! A decision is made at once, in memory, and the change goes to the
//! [`OrderStore`] together with the request's [`Reply`] channel: the store
//! answers the request once the change is committed. The actor never waits
//! for the disk; it decides the next message while the disk works. The
//! store keeps each actor's changes in order, so what is committed is always a
//! prefix of what was decided. If a commit fails, the store voids every change
//! decided since, and the actor reloads its state from the database.

use std::sync::Arc;

use actix::prelude::*;
use futures::channel::oneshot;

use super::order_store::{NotStored, OrderStore, Persist, Reload};
use crate::booking::{
    BookOutcome, CancelOutcome, EventState, OrderUpdate, Refusal, Summary, UserStatus,
};
use crate::ids::EventId;
use crate::storage::Change;

/// Why a message got no answer from the event's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingError {
    Refused(Refusal),
    /// The change, or a change it built on, was not stored.
    StorageUnavailable,
}

/// Where a book or cancel is answered: once its change is committed, or at
/// once if it is refused. The request waits on it, not the actor, which
/// meanwhile decides the next message.
pub type Reply<T> = oneshot::Sender<Result<T, BookingError>>;

/// Book a ticket for `user`, or a waiting place when sold out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Book {
    pub user: Arc<str>,
    pub reply: Reply<BookOutcome>,
}

/// Cancel `user`'s ticket or waiting place.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Cancel {
    pub user: Arc<str>,
    pub reply: Reply<CancelOutcome>,
}

/// The event's ticket and queue counts.
#[derive(Message)]
#[rtype(result = "Result<Summary, BookingError>")]
pub struct GetSummary;

/// Where `user` stands; `None` if never seen at this event.
#[derive(Message)]
#[rtype(result = "Result<Option<UserStatus>, BookingError>")]
pub struct GetUserStatus {
    pub user: Arc<str>,
}

/// From the store: a commit holding a change of `generation` failed.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct StorageFailed {
    pub generation: u64,
}

pub struct EventActor {
    id: EventId,
    state: EventState,
    store: Addr<OrderStore>,
    /// Counts failed commits; a change carries the generation it was decided
    /// in, so the store can refuse the ones decided on top of a failure.
    generation: u64,
    /// The reload after a failure did not succeed either, so `state` may count
    /// changes that were never stored: nothing is answered from it until a
    /// reload succeeds.
    stale: bool,
}

impl EventActor {
    pub fn new(id: EventId, state: EventState, store: Addr<OrderStore>) -> Self {
        EventActor {
            id,
            state,
            store,
            generation: 0,
            stale: false,
        }
    }

    /// Sends `update` to the store, which gives `reply` the `outcome` once it
    /// is committed (or a failure if it is not).
    fn persist<T: Send + 'static>(
        &self,
        update: OrderUpdate,
        outcome: T,
        reply: Reply<T>,
        ctx: &Context<Self>,
    ) {
        let change = Change::Order {
            event: self.id.clone(),
            update,
        };
        let done = Box::new(move |stored: Result<(), NotStored>| {
            let _ = reply.send(
                stored
                    .map(|()| outcome)
                    .map_err(|NotStored| BookingError::StorageUnavailable),
            );
        });
        self.store.do_send(Persist {
            change,
            origin: Some((ctx.address(), self.generation)),
            done,
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
                .map(|loaded, actor, _| match loaded {
                    Ok(Ok(Some(state))) => {
                        log::info!("event {} reloaded from the database", actor.id);
                        actor.state = state;
                        actor.stale = false;
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
        if self.stale {
            self.reload(ctx);
            return Err(BookingError::StorageUnavailable);
        }
        Ok(())
    }
}

impl Actor for EventActor {
    type Context = Context<Self>;
}

impl Handler<Book> for EventActor {
    type Result = ();

    fn handle(&mut self, Book { user, reply }: Book, ctx: &mut Context<Self>) {
        let decided = self
            .check_fresh(ctx)
            .and_then(|()| self.state.book(&user).map_err(BookingError::Refused));
        match decided {
            Ok((outcome, update)) => self.persist(update, outcome, reply, ctx),
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

impl Handler<Cancel> for EventActor {
    type Result = ();

    fn handle(&mut self, Cancel { user, reply }: Cancel, ctx: &mut Context<Self>) {
        let decided = self
            .check_fresh(ctx)
            .and_then(|()| self.state.cancel(&user).map_err(BookingError::Refused));
        match decided {
            Ok((outcome, update)) => self.persist(update, outcome, reply, ctx),
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

impl Handler<GetSummary> for EventActor {
    type Result = Result<Summary, BookingError>;

    fn handle(&mut self, _: GetSummary, ctx: &mut Context<Self>) -> Self::Result {
        self.check_fresh(ctx)?;
        Ok(self.state.summary())
    }
}

impl Handler<GetUserStatus> for EventActor {
    type Result = Result<Option<UserStatus>, BookingError>;

    fn handle(
        &mut self,
        GetUserStatus { user }: GetUserStatus,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.check_fresh(ctx)?;
        Ok(self.state.user_status(&user))
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
