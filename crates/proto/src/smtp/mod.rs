//! The SMTP session core (docs/spec.md §6): a sans-IO [`Session`] that turns the client's bytes
//! into [`Event`]s (replies to write, [`Request`]s for the driver, `StartTls`, `Close`).
//!
//! - `command.rs`: lines to [`Command`]s, parsed by `smtp-proto`.
//! - `address.rs`: envelope paths kept verbatim and the relay rule R16.
//! - `data.rs`: the DATA reader (R19).
//! - `reply.rs`: every reply, with its enhanced status code.
//! - `session.rs`: the state machine.
//! - `client.rs`: the other side, the sans-IO SMTP client that outbound delivery drives.
//! - `dsn.rs`: delivery status notifications (bounces, RFC 3464).
//! - `header.rs`: the Message-ID read from a header section, for the log.

pub mod address;
pub mod client;
pub mod command;
pub mod data;
pub mod dsn;
pub mod header;
pub mod reply;
pub mod session;
#[cfg(test)]
mod tests;

pub use address::{ForwardPath, RcptAddress, RcptDecision, RouteForm, decide_recipient};
pub use client::{BodyEncoder, Client};
pub use command::Command;
pub use dsn::{Notice, Notification};
pub use reply::{Reply, Status};
pub use session::{
    AnswerError, Config, Delivery, Event, Listener, ReceivedHeader, Recipient, RecipientLookup,
    Request, Response, Session, Target, delivery_reply,
};
