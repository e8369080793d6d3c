//! Sans-IO protocol cores: bytes and `now` in, replies and requests to the driver out.
//! A core never touches a socket, a clock or the directory.

pub mod pop3;
pub mod smtp;
