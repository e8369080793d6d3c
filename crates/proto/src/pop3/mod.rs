//! The POP3 session core (docs/spec.md §7): a sans-IO [`Session`] that turns the client's bytes
//! into [`Event`]s (replies to write, [`Request`]s for the driver, `StartTls`, `Close`).
//!
//! - `command.rs`: lines to [`Command`]s.
//! - `reply.rs`: `+OK`/`-ERR [CODE]` replies and the multi-line wire form of messages.
//! - `session.rs`: the AUTHORIZATION / TRANSACTION / UPDATE state machine.

pub mod command;
pub mod reply;
pub mod session;
#[cfg(test)]
mod tests;

pub use command::Command;
pub use reply::{Reply, RespCode, wire_body};
pub use session::{AnswerError, Config, Event, MessageInfo, Request, Response, Session};
