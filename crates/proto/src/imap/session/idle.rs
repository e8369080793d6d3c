//! IDLE (RFC 2177), NOOP and CHECK: the commands that re-scan the selected folder and tell the
//! client what changed, and the continuation of every re-scan (also those a poke or a command's
//! completion asks for).

use imap_types::core::Tag;
use imap_types::response::Code;

use super::{Event, Pending, Request, Response, Session, State};
use crate::imap::reply::Reply;

/// A tagged `OK` held back until the re-scan before it is answered.
#[derive(Debug)]
pub(super) struct Completion {
    pub(super) tag: Tag<'static>,
    pub(super) code: Option<Code<'static>>,
    pub(super) text: &'static str,
}

/// What to do once a re-scan is answered.
#[derive(Debug)]
pub(super) enum Then {
    Complete(Completion),
    EnterIdle(Tag<'static>),
    Idle(Tag<'static>),
}

impl Session {
    pub(super) fn idle(&mut self, tag: Tag<'static>) {
        if self.view.is_some() {
            self.ask(Pending::Refresh(Then::EnterIdle(tag)), Request::Refresh);
        } else {
            self.enter_idle(tag);
        }
    }

    pub(super) fn noop(&mut self, tag: Tag<'static>, text: &'static str) {
        if self.view.is_some() {
            self.ask(
                Pending::Refresh(Then::Complete(Completion {
                    tag,
                    code: None,
                    text,
                })),
                Request::Refresh,
            );
        } else {
            self.ok(tag, None, text);
        }
    }

    fn enter_idle(&mut self, tag: Tag<'static>) {
        self.reply(Reply::continuation("idling"));
        self.state = State::Idle(tag);
    }

    /// The continuation of a re-scan: the changes told, then what was waiting for it.
    pub(super) fn refreshed(&mut self, then: Then, response: Response) {
        if let (Some(view), Response::Snapshot(snapshot)) = (&mut self.view, response) {
            view.dirty = false;
            let replies = view.update(snapshot);
            self.out.extend(replies.into_iter().map(Event::Reply));
        }
        match then {
            Then::Complete(Completion { tag, code, text }) => self.ok(tag, code, text),
            Then::EnterIdle(tag) => self.enter_idle(tag),
            // Back to idling, without asking again: a refresh that failed (the folder was
            // renamed away or deleted) would fail the same way at once, a loop without end.
            // `dirty` stays set, so the next poke or command tries again.
            Then::Idle(tag) => self.state = State::Idle(tag),
        }
    }
}
