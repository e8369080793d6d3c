//! In-memory IMAP sessions (filled in below).
