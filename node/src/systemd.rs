//! The systemd service protocol (`sd_notify`): readiness, status lines and the watchdog,
//! sent as datagrams to `$NOTIFY_SOCKET`. Outside systemd (no such variable) nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where systemd listens, if this process runs under it with `Type=notify` or a watchdog.
fn socket_path() -> Option<std::ffi::OsString> {
    std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty())
}

/// Send one notification (`READY=1`, `WATCHDOG=1`, `STATUS=...`, `STOPPING=1`); whether it was
/// sent. Failures are logged once per kind of message, never fatal.
pub fn notify(message: &str) -> bool {
    let Some(path) = socket_path() else { return false };
    let sock = match UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open a socket to notify systemd");
            return false;
        }
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        // Linux abstract socket: the name after '@'.
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(message.as_bytes(), &addr))
    } else {
        sock.send_to(message.as_bytes(), std::path::Path::new(&path))
    };
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, message, "cannot notify systemd");
            false
        }
    }
}

/// How often to pet the watchdog: half of `WatchdogSec=` (systemd's advice), when systemd
/// asked this process (and not another) for watchdog pings.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        // The variable is read per call; this test is the only one in the crate to set it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1\nSTATUS=joined"));
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=joined");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("WATCHDOG=1"), "nothing is sent outside systemd");
    }
}
