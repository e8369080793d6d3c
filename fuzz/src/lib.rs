//! The fuzz harnesses behind `fuzz_targets/`: each plays the driver of a sans-IO core with
//! bytes chosen by libFuzzer, and asserts the core's invariants, not only that it survives.
//!
//! - [`smtp`]: the SMTP session command stream (R16, R19, bounded input, reply syntax).
//! - [`pop3`]: the POP3 session stream (clear-text rules, R20 snapshot, byte-stuffing).
//! - [`imap_session`]: the IMAP session stream (reply syntax, tags, STARTTLS, literals, the
//!   client's view of the selected mailbox).
//! - [`smtp_client`]: the outbound SMTP client against a fuzzed server (credentials only over
//!   TLS, extensions respected, one outcome naming every recipient, bounded input).
//! - [`sasl`]: the SASL steppers (PLAIN, LOGIN, CRAM-MD5) on their own.
//! - [`address`]: forward-path classification and the relay decision (R16).
//!
//! Every input starts with a few header octets (flags, how to split the stream, the driver's
//! answers); `fuzz/README.md` gives the layout, so seeds can be written by hand.

pub mod address;
pub mod imap_session;
pub mod pop3;
pub mod sasl;
pub mod smtp;
pub mod smtp_client;

/// Reads the header octets of an input; past the end every octet reads as 0.
#[derive(Debug)]
pub struct Header<'a> {
    data: &'a [u8],
}

impl<'a> Header<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Header { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    /// A length octet, then that many octets (fewer if the input ends).
    pub fn counted(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte()).min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        taken
    }

    /// Whatever follows the header.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// The driver's answers, in order, one octet per request, reused from the start when used up.
#[derive(Debug, Clone)]
pub struct Answers<'a> {
    octets: &'a [u8],
    next: usize,
}

impl<'a> Answers<'a> {
    pub fn new(octets: &'a [u8]) -> Self {
        Answers { octets, next: 0 }
    }

    pub fn next(&mut self) -> u8 {
        let octet = self
            .octets
            .get(self.next % self.octets.len().max(1))
            .copied()
            .unwrap_or(0);
        self.next = self.next.wrapping_add(1);
        octet
    }
}

/// Cuts the client's stream into the reads a driver would see. `seed` 0 gives the whole
/// stream at once; other seeds give pseudo-random pieces of 1 to 64 octets, so every line
/// ending and every state change gets split somewhere.
pub fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![stream];
    }
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        // xorshift32: cheap, deterministic, and good enough to vary the cuts.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let len = (state % 64 + 1) as usize;
        let (head, tail) = rest.split_at(len.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// True when every CR is followed by LF and every LF follows a CR.
pub fn only_crlf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        b'\n' => i.checked_sub(1).and_then(|p| bytes.get(p)) == Some(&b'\r'),
        _ => true,
    })
}

/// How many events a session may emit for one call before the harness calls it a livelock.
pub const EVENT_BOUND: usize = 1_000_000;
