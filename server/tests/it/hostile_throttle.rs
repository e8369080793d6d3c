//! The login throttle under hostile load (issue 21): one throttle per client address and per
//! account, shared by every connection, so that 100 parallel connections from one address get
//! no more refusals answered than one connection does, another address is not held up by them,
//! and a success on the attacker's own account resets nothing for the others. Real clients over
//! sockets; the tests count answers in a window and read the delays the server logged, they do
//! not time the server.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::hostile_support::{CAROL_PASSWORD, Client, PASSWORD, Rig};

/// How long the guessers guess. Long enough for one connection to get several answers (the
/// throttle's delays double from 250 ms), short enough for a test.
const WINDOW: Duration = Duration::from_secs(8);

/// The parallel guessers: as many connections as one address may hold by default.
const PARALLEL: usize = 100;

/// A TCP connection from `source` (a loopback address) to the server on 127.0.0.1.
fn tcp_from(source: Ipv4Addr, port: u16) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a runtime to make the socket");
    let stream = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
            let stream = socket
                .connect(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port))
                .await?;
            stream.into_std()
        })
        .expect("connect from a loopback address");
    stream.set_nonblocking(false).expect("blocking");
    stream
}

/// A POP3 connection that guesses one account's password until a deadline.
struct Guesser {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Guesser {
    /// Connects from `source` and reads the greeting.
    fn connect(source: Ipv4Addr, port: u16) -> Guesser {
        let stream = tcp_from(source, port);
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let writer = stream.try_clone().expect("clone the socket");
        let mut guesser = Guesser {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = guesser.line(Instant::now() + Duration::from_secs(20));
        assert!(greeting.starts_with("+OK"), "{greeting:?}");
        guesser
    }

    /// The next line, or empty when none came before `deadline` (or the server closed).
    fn line(&mut self, deadline: Instant) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return String::new();
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(left))
            .expect("read timeout");
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(_) => line,
            Err(_) => String::new(),
        }
    }

    /// Guesses `user`'s password (USER and PASS pipelined, RFC 2449) until `deadline`; returns
    /// how many refusals were answered before it.
    fn guess_until(&mut self, user: &str, deadline: Instant) -> usize {
        let mut answered = 0;
        for n in 0.. {
            if Instant::now() >= deadline {
                break;
            }
            let guess = format!("USER {user}\r\nPASS Wrong-throttle-guess-{n}\r\n");
            if self.writer.write_all(guess.as_bytes()).is_err() {
                break;
            }
            let user_reply = self.line(deadline);
            let pass_reply = self.line(deadline);
            if !user_reply.starts_with("+OK") || !pass_reply.starts_with("-ERR") {
                break;
            }
            answered += 1;
        }
        answered
    }
}

/// Logs in over POP3 from `source` and says whether the password was taken.
fn pop3_login(source: Ipv4Addr, port: u16, user: &str, password: &str) -> bool {
    let mut c = Client::connect_from(source, port);
    assert!(c.pop_line().starts_with("+OK"));
    assert!(c.pop(&format!("USER {user}")).starts_with("+OK"));
    let accepted = c.pop(&format!("PASS {password}")).starts_with("+OK");
    if accepted {
        assert!(c.pop("QUIT").starts_with("+OK"));
    }
    accepted
}

/// The server log's refusal lines for logins from `source` (each with its fields).
fn refusals_from(log: &str, source: Ipv4Addr) -> Vec<String> {
    let peer = format!("peer={source}:");
    log.lines()
        .filter(|l| l.contains("login refused") && l.contains(&peer))
        .map(str::to_owned)
        .collect()
}

/// The value of `field=` in a log line, as a number.
fn field(line: &str, field: &str) -> u64 {
    let key = format!("{field}=");
    let Some(at) = line.find(&key) else {
        panic!("no {field} in {line:?}");
    };
    line[at + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number in {line:?}"))
}

#[test]
fn a_hundred_parallel_connections_guess_no_faster_than_one() {
    let rig = Rig::start("");
    let port = rig.port("pop3");
    let alone = Ipv4Addr::new(127, 0, 0, 2);
    let crowd = Ipv4Addr::new(127, 0, 0, 3);
    let owner = Ipv4Addr::new(127, 0, 0, 4);
    let bystander = Ipv4Addr::new(127, 0, 0, 5);
    // Everyone connects first; the window opens when all are greeted.
    let mut single = Guesser::connect(alone, port);
    let mut parallel: Vec<Guesser> = (0..PARALLEL)
        .map(|_| Guesser::connect(crowd, port))
        .collect();
    let start = Barrier::new(PARALLEL + 2);
    let (one, many, owner_in) = std::thread::scope(|s| {
        let start = &start;
        let one = s.spawn(move || {
            start.wait();
            single.guess_until("carol@example.jp", Instant::now() + WINDOW)
        });
        let many: Vec<_> = parallel
            .iter_mut()
            .map(|g| {
                s.spawn(move || {
                    start.wait();
                    g.guess_until("bob@example.jp", Instant::now() + WINDOW)
                })
            })
            .collect();
        start.wait();
        // While bob's password is guessed from the crowd's address: bob himself, from an
        // address that has not failed, gets in; and a typo from another clean address is
        // charged for nothing the crowd did.
        std::thread::sleep(WINDOW / 4);
        let owner_in = pop3_login(owner, port, "bob@example.jp", PASSWORD);
        assert!(!pop3_login(bystander, port, "bob@example.jp", "Typo-pw1"));
        let one = one.join().unwrap();
        let many: usize = many.into_iter().map(|h| h.join().unwrap()).sum();
        (one, many, owner_in)
    });
    // Passwords checked in the window: the server logs each refusal when it has checked the
    // password, before any delay it adds to the answer.
    let log = rig.server.log();
    let one_checked = refusals_from(&log, alone).len();
    let many_checked = refusals_from(&log, crowd).len();
    let seconds = WINDOW.as_secs_f64();
    println!(
        "in {WINDOW:?}: one connection had {one_checked} passwords checked ({:.2} guesses/s), \
         {one} refusals answered; {PARALLEL} parallel connections had {many_checked} checked \
         ({:.2} guesses/s), {many} answered",
        one_checked as f64 / seconds,
        many_checked as f64 / seconds
    );
    // The margin: the crowd's first few checks run at once, before its first failure is known.
    assert!(
        many_checked <= 2 * one_checked + 2,
        "{PARALLEL} connections had {many_checked} passwords checked, one connection {one_checked}"
    );
    assert!(
        many <= 2 * one + 2,
        "{PARALLEL} connections got {many} refusals answered, one connection {one}"
    );
    // Another address guessing (another account) is not held up by the crowd.
    assert!(one >= 2, "one connection got only {one} answers");
    assert!(owner_in, "bob could not log in from a clean address");
    let typo = refusals_from(&log, bystander);
    assert_eq!(typo.len(), 1, "{log}");
    assert_eq!(field(&typo[0], "queued_ms"), 0, "{}", typo[0]);
    assert_eq!(field(&typo[0], "delay_ms"), 250, "{}", typo[0]);
    assert!(
        !log.contains("Wrong-throttle-guess"),
        "the log holds a guess"
    );
}

#[test]
fn a_success_on_the_attackers_own_account_resets_nothing_for_the_others() {
    let rig = Rig::start("");
    let port = rig.port("pop3");
    let attacker = Ipv4Addr::LOCALHOST;
    assert!(!pop3_login(attacker, port, "bob@example.jp", "Wrong-pw-1"));
    // The attacker's own account (carol, say) takes its password.
    assert!(pop3_login(
        attacker,
        port,
        "carol@example.jp",
        CAROL_PASSWORD
    ));
    assert!(!pop3_login(attacker, port, "bob@example.jp", "Wrong-pw-2"));
    let log = rig.server.log();
    let refusals = refusals_from(&log, attacker);
    assert_eq!(refusals.len(), 2, "{log}");
    let delays: Vec<u64> = refusals.iter().map(|l| field(l, "delay_ms")).collect();
    // The second failure is the address's second: the success in between cleared carol's
    // count, not the address's (nor bob's).
    assert_eq!(delays, [250, 500], "{log}");
}

#[test]
fn a_stopping_server_does_not_wait_for_throttled_attempts() {
    let mut rig = Rig::start("");
    let port = rig.port("pop3");
    let attacker = Ipv4Addr::new(127, 0, 0, 6);
    assert!(!pop3_login(attacker, port, "bob@example.jp", "Wrong-pw-1"));
    // Ten guesses at once after a failure queue for turns 0.5 s, 1 s, 2 s, … 8 s apart: more
    // than the 30 s a stopping server gives its sessions.
    let mut queued: Vec<Guesser> = (0..10)
        .map(|n| {
            let mut g = Guesser::connect(attacker, port);
            let guess = format!("USER bob@example.jp\r\nPASS Wrong-queued-{n}\r\n");
            g.writer.write_all(guess.as_bytes()).unwrap();
            g
        })
        .collect();
    // Let the guesses reach the server (this only gives them time; nothing is timed).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rig.server.stop(), Some(0), "a graceful stop");
    let log = rig.server.log();
    assert!(
        !log.contains("did not finish"),
        "the stop waited for throttled attempts:\n{log}"
    );
    for g in &mut queued {
        let deadline = Instant::now() + Duration::from_secs(5);
        let user = g.line(deadline);
        assert!(user.is_empty() || user.starts_with("+OK"), "{user:?}");
    }
}
