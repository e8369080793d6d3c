//! systemd's readiness protocol (`Type=notify`): one datagram to `$NOTIFY_SOCKET` saying
//! `READY=1` once the server serves, `RELOADING=1` and `READY=1` around a reload, and
//! `STOPPING=1` when it stops. Written here in a few lines rather than through libsystemd;
//! without `NOTIFY_SOCKET` (not started by systemd) each call does nothing.

use std::os::unix::net::UnixDatagram;

/// The states this server reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ready,
    Reloading,
    Stopping,
}

/// Tells the service manager `state`, if one is listening. A failure is logged, never fatal:
/// a server that cannot report readiness still serves.
pub fn notify(state: State) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
        return;
    };
    let message = match state {
        State::Ready => "READY=1".to_owned(),
        // systemd asks a reload to carry the monotonic clock, to tell it from an older one.
        State::Reloading => match monotonic_usec() {
            Some(usec) => format!("RELOADING=1\nMONOTONIC_USEC={usec}"),
            None => "RELOADING=1".to_owned(),
        },
        State::Stopping => "STOPPING=1".to_owned(),
    };
    if let Err(e) = send(&socket, message.as_bytes()) {
        tracing::warn!(
            "cannot tell the service manager {:?} through NOTIFY_SOCKET: {e}",
            message.lines().next().unwrap_or_default()
        );
    }
}

fn send(socket: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let datagram = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    // A name starting with '@' is in the abstract namespace (systemd uses one in containers).
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        datagram.send_to_addr(message, &addr)?;
    } else {
        datagram.send_to(message, socket)?;
    }
    Ok(())
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd reads it.
fn monotonic_usec() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(now.tv_sec()).ok()?;
    let micros = u64::try_from(now.tv_nsec() / 1_000).ok()?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), b"READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(monotonic_usec().is_some_and(|us| us > 0));
    }
}
