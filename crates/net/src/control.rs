//! The control socket, `<data_dir>/control.sock`: how `dirmail status` asks the running server
//! about itself. A Unix stream socket of mode 0600 in the store's 0700 directory, so only the
//! store's owner can ask. One JSON request line (`{"command":"status"}`) gets one JSON reply
//! line: uptime, version, the listeners, the open sessions with client address and user, and
//! the outbound queue.
//!
//! At start a socket left by a server that did not stop cleanly is removed and made anew; one
//! that still answers means another server runs on this store, and this one refuses to start.
//! The socket is removed when the server stops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::metrics::unix_now;
use super::shared::{Shared, stopped};

/// The socket's name in the data directory.
pub const SOCKET_NAME: &str = "control.sock";
/// The longest path a Unix socket address holds (`sun_path`, 108 bytes on Linux, with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// The longest request line read.
const MAX_REQUEST: u64 = 4 * 1024;
/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the control socket of the store in `data_dir` is.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// The bound control socket; dropping it removes the socket file.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Makes the control socket in `data_dir` (mode 0600), replacing one left by a server that is
/// gone. Must run inside the tokio runtime. `None` when the store's path is too long for a
/// socket address: the server runs without one (logged), rather than not at all.
pub fn bind(data_dir: &Path) -> Result<Option<ControlSocket>, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        tracing::warn!(
            path = %path.display(),
            "the store's path is too long for a control socket ({MAX_SOCKET_PATH} bytes at most): `dirmail status` cannot reach this server, and a second server on this store is not detected"
        );
        return Ok(None);
    }
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(format!(
            "another dirmail server is running on this store (it answers on {}); stop it first",
            path.display()
        ));
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed a control socket left by an earlier server")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove the old control socket {}: {e}",
                path.display()
            ));
        }
    }
    let cannot =
        |e: std::io::Error| format!("cannot make the control socket {}: {e}", path.display());
    let std_listener = std::os::unix::net::UnixListener::bind(&path).map_err(cannot)?;
    // The data directory is 0700 already; the socket itself is the owner's alone too, so a
    // looser directory later does not open it to others.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(cannot)?;
    std_listener.set_nonblocking(true).map_err(cannot)?;
    let listener = UnixListener::from_std(std_listener).map_err(cannot)?;
    Ok(Some(ControlSocket { listener, path }))
}

/// What `status` reports besides the live state: the listeners as bound.
#[derive(Debug, Clone)]
pub struct Facts {
    /// (service name, address), the metrics listener included.
    pub listeners: Vec<(&'static str, SocketAddr)>,
}

/// Answers requests on `socket` until the server stops; then the socket file is removed.
pub async fn serve(socket: ControlSocket, shared: Arc<Shared>, facts: Arc<Facts>) {
    let mut stopping = shared.stopping.clone();
    loop {
        let accepted = tokio::select! {
            accepted = socket.listener.accept() => accepted,
            _ = stopped(&mut stopping) => break,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        let facts = Arc::clone(&facts);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(stream, &shared, &facts)).await;
        });
    }
    drop(socket);
}

async fn exchange(stream: UnixStream, shared: &Arc<Shared>, facts: &Facts) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let reply = match serde_json::from_str::<Value>(line.trim()) {
        Ok(request) => match request.get("command").and_then(Value::as_str) {
            Some("status") => status(shared, facts).await,
            Some(other) => {
                json!({ "ok": false, "error": format!("unknown command {other:?}; the control socket knows \"status\"") })
            }
            None => json!({ "ok": false, "error": "the request has no \"command\"" }),
        },
        Err(e) => {
            json!({ "ok": false, "error": format!("the request is not one line of JSON: {e}") })
        }
    };
    let mut text = reply.to_string();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
    let _ = write.shutdown().await;
}

/// The reply to `status`.
async fn status(shared: &Arc<Shared>, facts: &Facts) -> Value {
    let now = Instant::now();
    let started = shared.metrics.started();
    let uptime = SystemTime::now()
        .duration_since(started)
        .unwrap_or_default()
        .as_secs();
    let sessions: Vec<Value> = shared
        .sessions
        .list()
        .iter()
        .map(|s| {
            json!({
                "service": s.service.name(),
                "protocol": s.service.protocol(),
                "client": s.client.to_string(),
                "user": s.user,
                "age_seconds": s.age(now).as_secs(),
            })
        })
        .collect();
    let queue = shared.backend.queue.clone();
    let clock = unix_now();
    let queue = match tokio::task::spawn_blocking(move || queue.summary(clock)).await {
        Ok(Ok(q)) => json!({
            "messages": q.messages,
            "due": q.due,
            "deferred": q.deferred,
            "unreadable": q.unreadable,
        }),
        Ok(Err(e)) => json!({ "error": e.to_string() }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "hostname": shared.config.server.hostname,
        "started": started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "uptime_seconds": uptime,
        "listeners": facts
            .listeners
            .iter()
            .map(|(service, address)| json!({ "service": service, "address": address.to_string() }))
            .collect::<Vec<_>>(),
        "sessions": sessions,
        "queue": queue,
    })
}
