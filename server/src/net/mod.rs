//! Listeners and the drivers that join a protocol core to a tokio socket; `tls` makes the
//! rustls configuration.

pub mod backend;
pub mod conn;
pub mod throttle;
pub mod tls;
