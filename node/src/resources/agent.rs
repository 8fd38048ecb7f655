//! The ordered resources after the VIPs: **script** resources, an `acquire` and a `release`
//! shell command run with `/bin/sh -c`, each under its timeout, in its own process group, with
//! `TANDEM_NODE`, `TANDEM_ROLE`, `TANDEM_EPOCH` and `TANDEM_ACTION` in the environment; output is
//! logged. A release that overruns is escalated: its process group is killed; if it still does
//! not end, the node process stops (DESIGN §4), since holding on would break the release budget
//! a new active counts on.

use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tandem_raft_store::Epoch;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use crate::config::ResourceConfig;

/// Output kept from one script run (stdout and stderr each).
pub const SCRIPT_OUTPUT_MAX_BYTES: usize = 16 * 1024;
/// After killing an overrunning release's process group, how long it may take to go.
pub const KILL_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("resource {name}: {action} exited with {status}; stderr: {stderr}")]
    Failed {
        name: String,
        action: &'static str,
        status: String,
        stderr: String,
    },
    #[error("resource {name}: {action} did not finish within {timeout:?}; its process group was killed")]
    TimedOut {
        name: String,
        action: &'static str,
        timeout: Duration,
    },
    #[error("resource {name}: cannot start {action}: {source}")]
    Spawn {
        name: String,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("acquire cancelled by a release")]
    Cancelled,
}

/// Runs the configured resources. Operations are serialized: a release waits for an acquire in
/// progress, which stops before its next resource once a release is waiting.
pub struct ResourceAgent {
    node: String,
    resources: Vec<ResourceConfig>,
    busy: Mutex<()>,
    release_waiting: AtomicBool,
    /// Epoch of the last acquire, passed to release scripts as `TANDEM_EPOCH`.
    last_epoch: AtomicU64,
}

impl ResourceAgent {
    pub fn new(node: String, resources: Vec<ResourceConfig>) -> Arc<Self> {
        Arc::new(Self {
            node,
            resources,
            busy: Mutex::new(()),
            release_waiting: AtomicBool::new(false),
            last_epoch: AtomicU64::new(0),
        })
    }

    /// Acquire every resource in order; stops at the first failure.
    pub async fn acquire(&self, epoch: Epoch) -> Result<(), ResourceError> {
        let _turn = self.busy.lock().await;
        self.last_epoch.store(epoch, Ordering::SeqCst);
        for r in &self.resources {
            if self.release_waiting.load(Ordering::SeqCst) {
                return Err(ResourceError::Cancelled);
            }
            self.run(r, "acquire", &r.acquire, r.acquire_timeout, epoch).await?;
            tracing::info!(resource = %r.name, %epoch, "acquired");
        }
        Ok(())
    }

    /// Release every resource in reverse order; a failure is reported and the rest still run.
    pub async fn release(&self) -> Result<(), ResourceError> {
        self.release_waiting.store(true, Ordering::SeqCst);
        let _turn = self.busy.lock().await;
        self.release_waiting.store(false, Ordering::SeqCst);
        let epoch = self.last_epoch.load(Ordering::SeqCst);
        let mut first_error = None;
        for r in self.resources.iter().rev() {
            match self.run(r, "release", &r.release, r.release_timeout, epoch).await {
                Ok(()) => tracing::info!(resource = %r.name, "released"),
                Err(e) => {
                    tracing::error!(error = %e, "release failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn run(
        &self,
        r: &ResourceConfig,
        action: &'static str,
        command: &str,
        timeout: Duration,
        epoch: Epoch,
    ) -> Result<(), ResourceError> {
        let role = if action == "acquire" { "active" } else { "standby" };
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .env("TANDEM_NODE", &self.node)
            .env("TANDEM_ROLE", role)
            .env("TANDEM_EPOCH", epoch.to_string())
            .env("TANDEM_ACTION", action)
            .env("TANDEM_RESOURCE", &r.name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ResourceError::Spawn {
                name: r.name.clone(),
                action,
                source,
            })?;
        let pgid = child.id();
        let stdout = tokio::spawn(read_bounded(child.stdout.take()));
        let stderr = tokio::spawn(read_bounded(child.stderr.take()));
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                kill_group(pgid);
                if action == "release" && tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
                    // DESIGN §4: a release that cannot be stopped ends the node process.
                    tracing::error!(resource = %r.name, "release could not be stopped; stopping the node process");
                    std::process::exit(70);
                }
                stdout.abort();
                stderr.abort();
                return Err(ResourceError::TimedOut {
                    name: r.name.clone(),
                    action,
                    timeout,
                });
            }
        };
        // A daemon started in the background may keep the pipes open: take what arrived.
        let out = collect(stdout).await;
        let err = collect(stderr).await;
        if !out.is_empty() {
            tracing::info!(resource = %r.name, action, output = %out.trim_end(), "script output");
        }
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(ResourceError::Failed {
                name: r.name.clone(),
                action,
                status: s.to_string(),
                stderr: err.trim_end().to_string(),
            }),
            Err(source) => Err(ResourceError::Spawn {
                name: r.name.clone(),
                action,
                source,
            }),
        }
    }
}

fn kill_group(pgid: Option<u32>) {
    let Some(pid) = pgid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        tracing::warn!(error = %e, "cannot kill the script's process group");
    }
}

/// How long output is still collected after the script exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

async fn collect(reader: tokio::task::JoinHandle<String>) -> String {
    let abort = reader.abort_handle();
    match tokio::time::timeout(OUTPUT_GRACE, reader).await {
        Ok(Ok(text)) => text,
        _ => {
            abort.abort();
            String::from("(output not collected: a process the script started keeps its output open)")
        }
    }
}

/// Read a pipe to its end, keeping the first `SCRIPT_OUTPUT_MAX_BYTES` (the rest is drained,
/// so a chatty script never blocks on a full pipe).
async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> String {
    let Some(mut pipe) = pipe else { return String::new() };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut dropped = 0usize;
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = SCRIPT_OUTPUT_MAX_BYTES - kept.len();
                kept.extend_from_slice(&chunk[..n.min(room)]);
                dropped += n.saturating_sub(room);
            }
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!("\n({dropped} more bytes not kept: SCRIPT_OUTPUT_MAX_BYTES)"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(name: &str, acquire: &str, release: &str, timeout_ms: u64) -> ResourceConfig {
        ResourceConfig {
            name: name.into(),
            acquire: acquire.into(),
            release: release.into(),
            acquire_timeout: Duration::from_millis(timeout_ms),
            release_timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn log_line(log: &std::path::Path) -> String {
        format!(
            "echo \"$TANDEM_ACTION $TANDEM_RESOURCE node=$TANDEM_NODE role=$TANDEM_ROLE epoch=$TANDEM_EPOCH\" >> {}",
            log.display()
        )
    }

    #[tokio::test]
    async fn resources_are_acquired_in_order_and_released_in_reverse_with_their_environment() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let line = log_line(&log);
        let agent = ResourceAgent::new(
            "a".into(),
            vec![script("vip", &line, &line, 2000), script("app", &line, &line, 2000)],
        );
        agent.acquire(7).await.unwrap();
        agent.release().await.unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            vec![
                "acquire vip node=a role=active epoch=7",
                "acquire app node=a role=active epoch=7",
                "release app node=a role=standby epoch=7",
                "release vip node=a role=standby epoch=7",
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_acquire_stops_at_that_resource_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let line = log_line(&log);
        let agent = ResourceAgent::new(
            "a".into(),
            vec![
                script("first", &line, &line, 2000),
                script("broken", "echo 'port 80 in use' >&2; exit 3", "true", 2000),
                script("third", &line, &line, 2000),
            ],
        );
        let err = agent.acquire(1).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("resource broken: acquire exited with exit status: 3"),
            "{text}"
        );
        assert!(text.contains("port 80 in use"), "{text}");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap().lines().count(),
            1,
            "third never ran"
        );
    }

    #[tokio::test]
    async fn a_hung_release_is_stopped_with_its_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // The release starts a helper in the background, records its pid, and hangs.
        let release = format!("sleep 30 & echo $! > {}; sleep 30", pid_file.display());
        let agent = ResourceAgent::new("a".into(), vec![script("stuck", "true", &release, 300)]);
        let err = agent.release().await.unwrap_err();
        assert!(matches!(err, ResourceError::TimedOut { .. }), "{err}");
        let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // The background helper went with the group (give the kernel a moment to reap it).
        let gone = (0..50).any(|_| {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false);
            if alive {
                std::thread::sleep(Duration::from_millis(20));
            }
            !alive
        });
        assert!(gone, "the helper {pid} survived the kill of its group");
    }

    #[tokio::test]
    async fn a_daemon_left_in_the_background_does_not_hang_the_acquire() {
        // `sleep 5 &` keeps the script's stdout open after the script itself exited.
        let agent = ResourceAgent::new("a".into(), vec![script("daemon", "sleep 5 &", "true", 2000)]);
        agent.acquire(1).await.expect("the acquire ends when the script does");
    }

    #[tokio::test]
    async fn a_chatty_script_neither_blocks_nor_floods_the_log() {
        let out = read_bounded(Some(std::io::Cursor::new(vec![b'x'; 1024 * 1024]))).await;
        assert!(out.len() < SCRIPT_OUTPUT_MAX_BYTES + 200, "{}", out.len());
        assert!(
            out.ends_with("more bytes not kept: SCRIPT_OUTPUT_MAX_BYTES)"),
            "{}",
            &out[out.len() - 80..]
        );
        let agent = ResourceAgent::new(
            "a".into(),
            vec![script("chatty", "head -c 1000000 /dev/zero", "true", 5000)],
        );
        agent
            .acquire(1)
            .await
            .expect("a megabyte of output does not block the script");
    }
}
