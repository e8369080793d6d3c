//! Outbound delivery (issue 12), built in steps. So far: where mail for a domain goes.
//!
//! `route` decides (MX order, the null MX, the implicit MX, failures permanent or temporary)
//! without DNS; `dns` asks hickory's resolver through `[outbound] dns_servers` and hands the
//! answers to `route`. Nothing here is wired into `serve` yet.

pub mod dns;
pub mod route;

pub use dns::{DnsTimeouts, Router, SetupError};
pub use route::{Destination, Hop, RouteError, Status};
