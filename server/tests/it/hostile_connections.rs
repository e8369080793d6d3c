//! Connection floods (issue 21): a few addresses holding idle connections must not lock out
//! a client that comes to log in, nor close a session that has logged in; connections that
//! never log in are cut after `prelogin_timeout`; a `socket_max` beyond the open-file limit is
//! refused at start with numbers that say how to fix it, and a flood at that limit costs a
//! bounded number of log lines. Real sockets from several loopback addresses throughout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::hostile_support::{CAROL_PASSWORD, Client, PASSWORD, Rig, WAIT, eventually, expect};

/// 127.0.0.`n`.
fn host(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// Raises this process's soft open-file limit to its hard one: a flood holds thousands of
/// sockets here too. Servers started afterwards inherit it (and raise their own anyway).
fn raise_open_files() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the flood")
}

/// One flood connection: the socket, held open, and its first line from the server (the
/// greeting, or the busy line of a refusal; empty if the server said nothing in time or the
/// connection could not be made).
struct Held {
    stream: Option<TcpStream>,
    first: String,
}

/// Connects from `source` to `port` and reads the first line.
async fn connect_and_read_greeting(source: Ipv4Addr, port: u16, patience: Duration) -> Held {
    let made = tokio::time::timeout(patience, async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
        socket
            .connect(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port))
            .await
    })
    .await;
    let Ok(Ok(mut stream)) = made else {
        return Held {
            stream: None,
            first: String::new(),
        };
    };
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let _ = tokio::time::timeout(patience, async {
        while stream.read(&mut byte).await.unwrap_or(0) == 1 {
            line.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
    })
    .await;
    Held {
        stream: Some(stream),
        first: String::from_utf8_lossy(&line).into_owned(),
    }
}

/// True when the server has closed the connection (after its busy line, if any).
async fn closed_by_server(held: &mut Held) -> bool {
    let Some(stream) = &mut held.stream else {
        return true;
    };
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
            // Nothing to read yet: still open.
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // The busy line came; the end follows.
            Ok(Ok(_)) => continue,
        }
    }
}

/// A POP3 login as carol from `source`: true when it got through to the maildrop.
fn pop3_login_from(source: Ipv4Addr, port: u16) -> Result<(), String> {
    let mut c = Client::connect_from(source, port);
    let greeting = c.pop_line();
    if !greeting.starts_with("+OK") {
        return Err(greeting);
    }
    let user = c.pop("USER carol@example.jp");
    let pass = c.pop(&format!("PASS {CAROL_PASSWORD}"));
    if !pass.starts_with("+OK") {
        return Err(format!("{user} / {pass}"));
    }
    let quit = c.pop("QUIT");
    quit.starts_with("+OK").then_some(()).ok_or(quit)
}

#[test]
fn twenty_addresses_of_idle_connections_do_not_lock_out_a_login() {
    raise_open_files();
    // The numbers: 1,000 slots, 100 an address. A tenth is kept for logged-in sessions.
    let mut rig = Rig::with_imap("[limits]\nsocket_max = 1000\nper_address_max = 100\n");
    let ports = [rig.port("pop3"), rig.port("imap"), rig.port("smtp")];
    // Someone logged in before the flood, from an address of their own.
    let mut bob = Client::connect_from(host(22), rig.port("imap"));
    assert!(bob.line().starts_with("* OK"));
    expect(
        &bob.imap(&format!("a1 LOGIN bob@example.jp {PASSWORD}")),
        "a1 OK",
    );
    let runtime = runtime();
    let mut flood: Vec<Held> = Vec::new();
    let mut locked_out: Option<(usize, String)> = None;
    for n in 1..=20u8 {
        runtime.block_on(async {
            for i in 0..100usize {
                let port = ports[i % ports.len()];
                flood.push(connect_and_read_greeting(host(n), port, WAIT).await);
            }
        });
        // After each address's hundred, a stranger from 127.0.0.21 comes to log in.
        if let Err(said) = pop3_login_from(host(21), rig.port("pop3"))
            && locked_out.is_none()
        {
            locked_out = Some((flood.len(), said));
        }
    }
    assert!(
        locked_out.is_none(),
        "the outsider was locked out once the flood held {:?} connections",
        locked_out
    );
    // An IMAP login from outside gets in too.
    let mut outsider = Client::connect_from(host(21), rig.port("imap"));
    assert!(outsider.line().starts_with("* OK"));
    expect(
        &outsider.imap(&format!("b1 LOGIN carol@example.jp {CAROL_PASSWORD}")),
        "b1 OK",
    );
    expect(&outsider.imap("b2 SELECT INBOX"), "b2 OK");
    // The session logged in before the flood was not touched.
    expect(&bob.imap("a2 SELECT INBOX"), "a2 OK");
    expect(&bob.imap("a3 NOOP"), "a3 OK");
    // The flood churned among itself: every connection was greeted, and the server closed
    // enough of them to keep strangers to their 900 slots.
    let refused = flood
        .iter()
        .filter(|h| {
            !["+OK", "* OK", "220"]
                .iter()
                .any(|g| h.first.starts_with(g))
        })
        .count();
    assert_eq!(refused, 0, "flood connections refused at connect");
    eventually("the flood is down to the strangers' slots", || {
        let closed = runtime.block_on(async {
            let mut closed = 0;
            for held in &mut flood {
                if closed_by_server(held).await {
                    closed += 1;
                }
            }
            closed
        });
        // 2,000 flood connections, 900 slots for strangers, and the outsiders' logins took
        // some of them too.
        closed >= 2000 - 900
    });
    drop(flood);
    rig.server.assert_alive();
}

#[test]
fn a_client_that_does_not_log_in_is_cut_after_the_prelogin_timeout() {
    let rig = Rig::with_imap("[limits]\nprelogin_timeout = \"1s\"\n");
    // Connected first, so it has waited longest: the SMTP relay port, whose clients never
    // log in, keeps RFC 5321's wait while the server is not under pressure.
    let mut relay = Client::connect(rig.port("smtp"));
    expect(&relay.reply(), "220");
    let mut logged_in = Client::connect(rig.port("pop3"));
    assert!(logged_in.pop_line().starts_with("+OK"));
    assert!(logged_in.pop("USER bob@example.jp").starts_with("+OK"));
    assert!(
        logged_in
            .pop(&format!("PASS {PASSWORD}"))
            .starts_with("+OK")
    );
    let mut pop3 = Client::connect(rig.port("pop3"));
    assert!(pop3.pop_line().starts_with("+OK"));
    // Half a login is not a login.
    assert!(pop3.pop("USER carol@example.jp").starts_with("+OK"));
    let mut imap = Client::connect(rig.port("imap"));
    assert!(imap.line().starts_with("* OK"));
    let mut submission = Client::connect(rig.port("submission"));
    expect(&submission.reply(), "220");
    assert!(
        pop3.pop_line()
            .starts_with("-ERR [SYS/TEMP] Idle for too long without logging in")
    );
    assert!(
        imap.line()
            .starts_with("* BYE [UNAVAILABLE] Idle for too long without logging in")
    );
    expect(
        &submission.reply(),
        "421 4.7.0 Idle for too long without logging in",
    );
    for c in [&mut pop3, &mut imap, &mut submission] {
        assert!(c.closes(), "the connection stays open after the goodbye");
    }
    // The relay client and the logged-in session waited longer, and are still served.
    expect(&relay.cmd("EHLO relay.example"), "250");
    assert!(logged_in.pop("STAT").starts_with("+OK"));
    assert!(logged_in.pop("QUIT").starts_with("+OK"));
}

/// Runs `dirmail serve` in `dir` through `wrapper` and returns its standard error, once it has
/// exited with a failure. One that starts instead fails the test (and is stopped).
fn serve_expecting_refusal(dir: &std::path::Path, wrapper: &[&str]) -> String {
    let log = dir.join("refused.log");
    let mut child = std::process::Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(env!("CARGO_BIN_EXE_dirmail"))
        .arg("serve")
        .current_dir(dir)
        .env_remove("DIRMAIL_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the log"))
        .spawn()
        .expect("run dirmail serve");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for dirmail serve") {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            // It is serving: stop this child of ours, then fail below.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.is_some_and(|s| !s.success()), "it started: {stderr}");
    stderr
}

/// The soft and hard open-file limit the server ran under.
const PRLIMIT: [&str; 2] = ["prlimit", "--nofile=1024:1024"];

#[test]
fn a_socket_max_beyond_the_open_file_limit_is_refused_and_a_flood_at_the_limit_is_logged_briefly() {
    raise_open_files();
    // The default socket_max, 1,000, does not fit 1,024 files with the listeners and the
    // store: the server refuses to start and says what would fit.
    let rig = Rig::with_imap("");
    let stderr = serve_expecting_refusal(rig.dir.path(), &PRLIMIT);
    assert!(
        stderr.contains("limits.socket_max (1000) does not fit the open-file limit (1024)"),
        "{stderr}"
    );
    let fits: u32 = stderr
        .split("at most ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no \"at most N\" in {stderr}"));
    assert!((900..1000).contains(&fits), "{fits}");
    drop(rig);
    // With what it said, it starts; a flood of 4,000 connection attempts from 40 addresses,
    // held open, costs a few lines of log at most, and a login still gets in.
    let mut rig = Rig::start_under(
        &PRLIMIT,
        &format!("[imap]\nport = 0\n[limits]\nsocket_max = {fits}\nper_address_max = 100\n"),
    );
    let pop3 = rig.port("pop3");
    let ports = [pop3, rig.port("imap"), rig.port("smtp")];
    let lines_before = rig.server.log().lines().count();
    let runtime = runtime();
    let flood: Vec<Held> = runtime.block_on(async {
        let mut flood = Vec::new();
        for n in 1..=40u8 {
            for i in 0..100usize {
                let port = ports[i % ports.len()];
                flood.push(connect_and_read_greeting(host(n), port, Duration::from_secs(2)).await);
            }
        }
        flood
    });
    let mut login = Err(String::new());
    eventually("a login gets in after the flood", || {
        login = pop3_login_from(host(41), pop3);
        login.is_ok()
    });
    let log = rig.server.log();
    let flood_lines: Vec<&str> = log.lines().skip(lines_before).collect();
    let made = flood.iter().filter(|h| h.stream.is_some()).count();
    println!(
        "socket_max {fits}: a flood of {} attempts ({made} connected) cost {} log lines:\n{}",
        flood.len(),
        flood_lines.len(),
        flood_lines.join("\n")
    );
    assert!(
        flood_lines.len() <= 20,
        "{} log lines for the flood:\n{}",
        flood_lines.len(),
        flood_lines.join("\n")
    );
    drop(flood);
    rig.server.assert_alive();
}
