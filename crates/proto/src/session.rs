//! The shape the three protocol cores share, as a trait, so that one driver runs any of them:
//! a greeting, bytes and `now` in, [`Step`]s out, an answer for each request, the STARTTLS
//! handshake, a deadline, whether the client has logged in, and the things the server itself
//! may have to say (it is stopping; it is too busy to start or keep a session), each in the
//! protocol's own typed reply.

use std::time::Instant;

use crate::{imap, pop3, smtp, trace};

/// Why the server turns a connection away under its connection limits: refused before any
/// session starts, or closed before the client logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Every connection slot is taken.
    Full,
    /// The peer's address has its share of the slots.
    AddressShare,
    /// The slots for clients that have not logged in are full, and this one had waited the
    /// longest without logging in: its slot goes to a newcomer.
    Evicted,
    /// The client sent nothing for `[limits] prelogin_timeout` without having logged in.
    LoginTimeout,
}

impl Busy {
    /// The words after the protocol's refusal code.
    pub fn text(self) -> &'static str {
        match self {
            Busy::Full => "Too many connections, try again later",
            Busy::AddressShare => "Too many connections from your address, try again later",
            Busy::Evicted => {
                "Too many connections; closing an idle connection that has not logged in"
            }
            Busy::LoginTimeout => "Idle for too long without logging in, closing connection",
        }
    }
}

/// What a core wants done next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<Request> {
    /// A reply was appended to the output: it goes out before anything that waits.
    Wrote,
    /// Answer it with [`Session::answer`]; the core reads no input until then.
    Request(Request),
    /// Write what is pending, do the TLS handshake, then call [`Session::tls_started`].
    StartTls,
    /// Close the connection once what is pending is written.
    Close,
}

/// A sans-IO protocol core, as a driver sees it.
pub trait Session {
    /// What the core asks of the driver (logins, mailboxes, deliveries).
    type Request;
    /// The driver's answer to a request.
    type Response;
    /// `answer` was called out of turn.
    type AnswerError: std::error::Error;

    /// The protocol's name, for the log.
    const PROTOCOL: &'static str;

    /// What follows this protocol's conversation for a trace, hiding its secrets.
    const TRACE: trace::Protocol;

    /// Appends the greeting to `out`.
    fn write_greeting(&self, out: &mut Vec<u8>);

    /// Appends the reply refusing a connection over the limits to `out`; no session exists
    /// yet, or the driver closes one that has not logged in (nothing of it needs tidying).
    fn write_busy(why: Busy, out: &mut Vec<u8>)
    where
        Self: Sized;

    /// Bytes from the client.
    fn feed(&mut self, bytes: &[u8], now: Instant);

    /// The next thing to do, or `None` when the core needs input (or an answer). A reply is
    /// appended to `out` and reported as [`Step::Wrote`].
    fn next_step(&mut self, out: &mut Vec<u8>) -> Option<Step<Self::Request>>;

    /// The driver's answer to the outstanding request.
    fn answer(&mut self, response: Self::Response) -> Result<(), Self::AnswerError>;

    /// The TLS handshake after [`Step::StartTls`] is done.
    fn tls_started(&mut self, now: Instant);

    /// When the driver should call [`Session::timeout`]; `None` while it is busy for the core.
    fn deadline(&self) -> Option<Instant>;

    /// The deadline may have passed.
    fn timeout(&mut self, now: Instant);

    /// The server is stopping: the core says goodbye its own way and closes. Called only
    /// while the core waits for the client, never with a request outstanding.
    fn stop(&mut self);

    /// Octets of client input the core holds (read ahead, or a command being framed), so the
    /// driver can keep all sessions together within a memory budget.
    fn buffered(&self) -> usize;

    /// True once the client has logged in: the driver then counts the connection among the
    /// authenticated ones and lifts `[limits] prelogin_timeout`.
    fn is_authenticated(&self) -> bool;

    /// True while the client is sending a message (SMTP DATA): a wait there keeps the
    /// protocol's own timeout even before login.
    fn in_message(&self) -> bool {
        false
    }

    /// Something outside the connection may have changed what the session shows (IMAP:
    /// another session or a delivery changed the selected folder). Most protocols never ask.
    fn news(&mut self) {}

    /// True while the session waits for news rather than commands (IMAP IDLE), so the driver
    /// looks for changes itself too.
    fn awaits_news(&self) -> bool {
        false
    }
}

// The impls below call each core's inherent methods, which share the trait's names: an
// inherent method is always chosen first, so none of these calls itself.

impl Session for smtp::Session {
    type Request = smtp::Request;
    type Response = smtp::Response;
    type AnswerError = smtp::AnswerError;
    const PROTOCOL: &'static str = "smtp";
    const TRACE: trace::Protocol = trace::Protocol::Smtp;

    fn write_greeting(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.greeting().to_bytes());
    }

    fn write_busy(why: Busy, out: &mut Vec<u8>) {
        out.extend_from_slice(&smtp::Reply::too_busy(why.text()).to_bytes());
    }

    fn feed(&mut self, bytes: &[u8], now: Instant) {
        smtp::Session::feed(self, bytes, now);
    }

    fn next_step(&mut self, out: &mut Vec<u8>) -> Option<Step<smtp::Request>> {
        Some(match self.poll()? {
            smtp::Event::Reply(reply) => {
                out.extend_from_slice(&reply.to_bytes());
                Step::Wrote
            }
            smtp::Event::Request(request) => Step::Request(request),
            smtp::Event::StartTls => Step::StartTls,
            smtp::Event::Close => Step::Close,
        })
    }

    fn answer(&mut self, response: smtp::Response) -> Result<(), smtp::AnswerError> {
        smtp::Session::answer(self, response)
    }

    fn tls_started(&mut self, now: Instant) {
        smtp::Session::tls_started(self, now);
    }

    fn deadline(&self) -> Option<Instant> {
        smtp::Session::deadline(self)
    }

    fn timeout(&mut self, now: Instant) {
        smtp::Session::timeout(self, now);
    }

    fn stop(&mut self) {
        smtp::Session::stop(self);
    }

    fn buffered(&self) -> usize {
        smtp::Session::buffered(self)
    }

    fn is_authenticated(&self) -> bool {
        smtp::Session::is_authenticated(self)
    }

    fn in_message(&self) -> bool {
        self.in_data()
    }
}

impl Session for pop3::Session {
    type Request = pop3::Request;
    type Response = pop3::Response;
    type AnswerError = pop3::AnswerError;
    const PROTOCOL: &'static str = "pop3";
    const TRACE: trace::Protocol = trace::Protocol::Pop3;

    fn write_greeting(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.greeting().to_bytes());
    }

    fn write_busy(why: Busy, out: &mut Vec<u8>) {
        out.extend_from_slice(&pop3::Reply::too_busy(why.text()).to_bytes());
    }

    fn feed(&mut self, bytes: &[u8], now: Instant) {
        pop3::Session::feed(self, bytes, now);
    }

    fn next_step(&mut self, out: &mut Vec<u8>) -> Option<Step<pop3::Request>> {
        Some(match self.poll()? {
            pop3::Event::Reply(reply) => {
                out.extend_from_slice(&reply.to_bytes());
                Step::Wrote
            }
            pop3::Event::Request(request) => Step::Request(request),
            pop3::Event::StartTls => Step::StartTls,
            pop3::Event::Close => Step::Close,
        })
    }

    fn answer(&mut self, response: pop3::Response) -> Result<(), pop3::AnswerError> {
        pop3::Session::answer(self, response)
    }

    fn tls_started(&mut self, now: Instant) {
        pop3::Session::tls_started(self, now);
    }

    fn deadline(&self) -> Option<Instant> {
        pop3::Session::deadline(self)
    }

    fn timeout(&mut self, now: Instant) {
        pop3::Session::timeout(self, now);
    }

    fn stop(&mut self) {
        pop3::Session::stop(self);
    }

    fn buffered(&self) -> usize {
        pop3::Session::buffered(self)
    }

    fn is_authenticated(&self) -> bool {
        pop3::Session::is_authenticated(self)
    }
}

impl Session for imap::Session {
    type Request = imap::Request;
    type Response = imap::Response;
    type AnswerError = imap::AnswerError;
    const PROTOCOL: &'static str = "imap";
    const TRACE: trace::Protocol = trace::Protocol::Imap;

    fn write_greeting(&self, out: &mut Vec<u8>) {
        self.greeting().write_to(out);
    }

    fn write_busy(why: Busy, out: &mut Vec<u8>) {
        imap::Reply::too_busy(why.text()).write_to(out);
    }

    fn feed(&mut self, bytes: &[u8], now: Instant) {
        imap::Session::feed(self, bytes, now);
    }

    fn next_step(&mut self, out: &mut Vec<u8>) -> Option<Step<imap::Request>> {
        Some(match self.poll()? {
            imap::Event::Reply(reply) => {
                reply.write_to(out);
                Step::Wrote
            }
            imap::Event::Request(request) => Step::Request(request),
            imap::Event::StartTls => Step::StartTls,
            imap::Event::Close => Step::Close,
        })
    }

    fn answer(&mut self, response: imap::Response) -> Result<(), imap::AnswerError> {
        imap::Session::answer(self, response)
    }

    fn tls_started(&mut self, now: Instant) {
        imap::Session::tls_started(self, now);
    }

    fn deadline(&self) -> Option<Instant> {
        imap::Session::deadline(self)
    }

    fn timeout(&mut self, now: Instant) {
        imap::Session::timeout(self, now);
    }

    fn stop(&mut self) {
        imap::Session::stop(self);
    }

    fn buffered(&self) -> usize {
        imap::Session::buffered(self)
    }

    fn is_authenticated(&self) -> bool {
        imap::Session::is_authenticated(self)
    }

    fn news(&mut self) {
        self.poke();
    }

    fn awaits_news(&self) -> bool {
        self.is_idle()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Drains the core's steps, returning what it wrote and whether it closed.
    fn drain(session: &mut impl Session) -> (String, bool) {
        let mut out = Vec::new();
        let mut closed = false;
        while let Some(step) = session.next_step(&mut out) {
            closed |= matches!(step, Step::Close);
        }
        (String::from_utf8_lossy(&out).into_owned(), closed)
    }

    #[test]
    fn each_protocol_says_stopping_in_its_own_words() {
        let now = Instant::now();
        let mut smtp = smtp::Session::new(smtp::Config::new("mx.example"), PEER, false, now);
        Session::stop(&mut smtp);
        assert_eq!(
            drain(&mut smtp),
            (
                "421 4.3.2 mx.example Service shutting down\r\n".into(),
                true
            )
        );
        let mut pop3 = pop3::Session::new(pop3::Config::new("mx", "<1@mx>"), PEER, false, now);
        Session::stop(&mut pop3);
        assert_eq!(
            drain(&mut pop3),
            (
                "-ERR [SYS/TEMP] Server shutting down; nothing was deleted\r\n".into(),
                true
            )
        );
        let mut imap = imap::Session::new(imap::Config::new("mx"), PEER, false, now);
        Session::stop(&mut imap);
        assert_eq!(
            drain(&mut imap),
            ("* BYE [UNAVAILABLE] Server shutting down\r\n".into(), true)
        );
    }

    #[test]
    fn no_session_starts_logged_in() {
        let now = Instant::now();
        let smtp = smtp::Session::new(smtp::Config::new("mx.example"), PEER, false, now);
        let pop3 = pop3::Session::new(pop3::Config::new("mx", "<1@mx>"), PEER, false, now);
        let imap = imap::Session::new(imap::Config::new("mx"), PEER, false, now);
        assert!(!Session::is_authenticated(&smtp) && !Session::in_message(&smtp));
        assert!(!Session::is_authenticated(&pop3));
        assert!(!Session::is_authenticated(&imap));
    }

    #[test]
    fn each_protocol_says_too_busy_in_its_own_words() {
        let busy = |write: fn(Busy, &mut Vec<u8>), why| {
            let mut out = Vec::new();
            write(why, &mut out);
            String::from_utf8_lossy(&out).into_owned()
        };
        assert_eq!(
            busy(smtp::Session::write_busy, Busy::Full),
            "421 4.7.0 Too many connections, try again later\r\n"
        );
        assert_eq!(
            busy(pop3::Session::write_busy, Busy::AddressShare),
            "-ERR [SYS/TEMP] Too many connections from your address, try again later\r\n"
        );
        assert_eq!(
            busy(imap::Session::write_busy, Busy::AddressShare),
            "* BYE [UNAVAILABLE] Too many connections from your address, try again later\r\n"
        );
        assert_eq!(
            busy(smtp::Session::write_busy, Busy::Evicted),
            "421 4.7.0 Too many connections; closing an idle connection that has not logged in\r\n"
        );
        assert_eq!(
            busy(pop3::Session::write_busy, Busy::LoginTimeout),
            "-ERR [SYS/TEMP] Idle for too long without logging in, closing connection\r\n"
        );
    }
}
