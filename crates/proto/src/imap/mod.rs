//! The IMAP session core (docs/spec.md §8): a sans-IO [`Session`] that turns the client's bytes
//! into [`Event`]s (replies to write, [`Request`]s for the driver, `StartTls`, `Close`). imap-codec
//! frames and decodes the commands and encodes the replies; nothing here parses IMAP syntax by
//! hand.
//!
//! - `session.rs`: the not-authenticated / authenticated / selected / IDLE state machine, the
//!   framing and the dispatch; `session/` the command groups, each command's start beside its
//!   continuation (`auth.rs`, `mailboxes.rs`, `messages.rs`, `idle.rs`).
//! - `view.rs`: the selected folder as this session sees it; sequence sets; updates.
//! - `fetch.rs`, `search.rs`: FETCH items and SEARCH keys for one message.
//! - `mime.rs`: sections, ENVELOPE and BODYSTRUCTURE (with mail-parser).
//! - `reply.rs`: typed replies and their wire form.
//! - `mailbox.rs`: the folders' value types (flags, STATUS counts, checked names).

pub mod fetch;
pub mod mailbox;
pub mod mime;
pub mod reply;
pub mod search;
pub mod session;
#[cfg(test)]
mod tests;
pub mod view;

pub use reply::Reply;
pub use session::{AnswerError, Config, Event, Failure, Request, Response, Session};
pub use view::{MessageMeta, Snapshot};
