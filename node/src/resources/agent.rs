//! The ordered resources after the VIPs: **script** resources, an `acquire` and a `release`
//! shell command run with `/bin/sh -c`, each under its timeout, in its own process group, with
//! `TANDEM_NODE`, `TANDEM_ROLE`, `TANDEM_EPOCH` and `TANDEM_ACTION` in the environment; output is
//! logged and kept (the last [`SCRIPT_RUNS_KEPT`] runs) for `GET /v1/resources`. A release
//! that overruns is escalated: its process group is killed; if it still does not end, the node
//! process stops (DESIGN §4), since holding on would break the release budget a new active
//! counts on. An optional `check` command runs periodically while the resources are held; the
//! script running at any moment can be cancelled through the API (its process group is killed
//! and the run fails as "cancelled by operator").

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tandem_client::api::RunningScript;
use tandem_client::api::ScriptRun;
use tandem_raft_store::Epoch;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use crate::config::ResourceConfig;

/// Output kept from one script run (stdout and stderr each).
pub const SCRIPT_OUTPUT_MAX_BYTES: usize = 16 * 1024;
/// After killing an overrunning release's process group, how long it may take to go.
pub const KILL_GRACE: Duration = Duration::from_secs(1);
/// Script runs kept for `GET /v1/resources`.
pub const SCRIPT_RUNS_KEPT: usize = 100;

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
    #[error("resource {name}: {action} cancelled by the operator; its process group was killed")]
    CancelledByOperator { name: String, action: &'static str },
}

/// The script running now.
struct Running {
    resource: String,
    action: &'static str,
    pgid: Option<u32>,
    started: tokio::time::Instant,
    cancelled: Arc<AtomicBool>,
}

impl Running {
    fn info(&self) -> RunningScript {
        RunningScript {
            resource: self.resource.clone(),
            action: self.action.to_string(),
            running_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

/// Carries out resource actions in place of shell commands: the seam the simulator's recording
/// agent plugs into. Everything around the action (serialization, cancel of an acquire by a
/// release, the run history) stays the agent's.
pub trait ActionRunner: Send + Sync + 'static {
    /// Run `action` (`acquire`, `release` or `check`) of `resource` in `epoch`. `Err` is what
    /// a failing script would have printed.
    fn run(
        &self,
        resource: &str,
        action: &'static str,
        epoch: Epoch,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'static>>;
}

/// Runs the configured resources. Operations are serialized: a release waits for an acquire in
/// progress, which stops before its next resource once a release is waiting.
/// Something an acquire waits for before it starts, or a release after it ends.
pub type AcquireGate = Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

pub struct ResourceAgent {
    node: String,
    resources: Vec<ResourceConfig>,
    busy: Mutex<()>,
    release_waiting: AtomicBool,
    /// Epoch of the last acquire, passed to release scripts as `TANDEM_EPOCH`.
    last_epoch: AtomicU64,
    running: std::sync::Mutex<Option<Running>>,
    runs: std::sync::Mutex<VecDeque<ScriptRun>>,
    /// `None`: the shell commands of the config.
    runner: Option<Arc<dyn ActionRunner>>,
    /// Where each finished action is reported, once the node set it.
    events: std::sync::OnceLock<Arc<crate::events::EventLog>>,
    /// Awaited in order before the first resource is acquired (the file mirror and the
    /// database catching up).
    gates: std::sync::Mutex<Vec<AcquireGate>>,
    /// Awaited in order before the first resource is released (the database made read-only).
    before_release: std::sync::Mutex<Vec<AcquireGate>>,
    /// Awaited in order after the last resource is released (the captures sending what is left).
    after_release: std::sync::Mutex<Vec<AcquireGate>>,
    /// How long whole acquires and releases took (gates and steps included).
    pub acquire_seconds: crate::metrics::Histogram,
    pub release_seconds: crate::metrics::Histogram,
    /// Activations of this node by how the service came to it: `[first start or after a
    /// release by this node, planned hand-over from the other node, failover from a node that
    /// never released]`.
    pub takeovers: [AtomicU64; 3],
}

impl ResourceAgent {
    pub fn new(node: String, resources: Vec<ResourceConfig>) -> Arc<Self> {
        Self::build(node, resources, None)
    }

    /// An agent whose actions are carried out by `runner` instead of the configured commands.
    pub fn with_runner(node: String, resources: Vec<ResourceConfig>, runner: Arc<dyn ActionRunner>) -> Arc<Self> {
        Self::build(node, resources, Some(runner))
    }

    fn build(node: String, resources: Vec<ResourceConfig>, runner: Option<Arc<dyn ActionRunner>>) -> Arc<Self> {
        Arc::new(Self {
            node,
            resources,
            busy: Mutex::new(()),
            release_waiting: AtomicBool::new(false),
            last_epoch: AtomicU64::new(0),
            running: std::sync::Mutex::new(None),
            runs: std::sync::Mutex::new(VecDeque::new()),
            runner,
            events: std::sync::OnceLock::new(),
            gates: std::sync::Mutex::default(),
            before_release: std::sync::Mutex::default(),
            after_release: std::sync::Mutex::default(),
            acquire_seconds: Default::default(),
            release_seconds: Default::default(),
            takeovers: Default::default(),
        })
    }

    /// Report every finished action, with its output, to `events`.
    pub fn report_to(&self, events: Arc<crate::events::EventLog>) {
        let _ = self.events.set(events);
    }

    /// Have every acquire wait for `gate` first: the service starts on a disk that holds every
    /// committed file change.
    pub fn gate_acquire(&self, gate: AcquireGate) {
        self.gates.lock().expect("gates lock").push(gate);
    }

    /// Have every release start with `step`, before any resource is released (and before
    /// waiting for an acquire in progress): the database stops taking writes first.
    pub fn before_release(&self, step: AcquireGate) {
        self.before_release.lock().expect("gates lock").push(step);
    }

    /// Have every release end with `step`: the service's last changes go out before the
    /// release counts as done.
    pub fn after_release(&self, step: AcquireGate) {
        self.after_release.lock().expect("gates lock").push(step);
    }

    /// Await each of `steps` in order.
    async fn run_steps(steps: &std::sync::Mutex<Vec<AcquireGate>>) {
        let steps: Vec<AcquireGate> = steps.lock().expect("gates lock").clone();
        for step in steps {
            step().await;
        }
    }

    pub fn resources(&self) -> &[ResourceConfig] {
        &self.resources
    }

    /// The script running now, if any.
    pub fn running(&self) -> Option<RunningScript> {
        self.running.lock().expect("running lock").as_ref().map(Running::info)
    }

    /// The latest script runs, oldest first.
    pub fn recent_runs(&self) -> Vec<ScriptRun> {
        self.runs.lock().expect("runs lock").iter().cloned().collect()
    }

    /// Cancel the script running now: kill its process group. Returns what was cancelled.
    pub fn cancel(&self) -> Option<RunningScript> {
        let running = self.running.lock().expect("running lock");
        let r = running.as_ref()?;
        r.cancelled.store(true, Ordering::SeqCst);
        kill_group(r.pgid);
        tracing::warn!(resource = %r.resource, action = r.action, "script cancelled by the operator");
        Some(r.info())
    }

    /// Run resource `i`'s check, unless an acquire or release is running (`None`: try later).
    pub async fn check(&self, i: usize, epoch: Epoch) -> Option<Result<(), ResourceError>> {
        let r = self.resources.get(i)?;
        let check = r.check.as_ref()?;
        let _turn = self.busy.try_lock().ok()?;
        if self.release_waiting.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.run(r, "check", &check.command, check.timeout, epoch).await)
    }

    /// Acquire every resource in order; stops at the first failure.
    pub async fn acquire(&self, epoch: Epoch) -> Result<(), ResourceError> {
        let started = std::time::Instant::now();
        let result = self.acquire_all(epoch).await;
        self.acquire_seconds.observe(started.elapsed());
        result
    }

    async fn acquire_all(&self, epoch: Epoch) -> Result<(), ResourceError> {
        let _turn = self.busy.lock().await;
        self.last_epoch.store(epoch, Ordering::SeqCst);
        Self::run_steps(&self.gates).await;
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
        let started = std::time::Instant::now();
        let result = self.release_all().await;
        self.release_seconds.observe(started.elapsed());
        result
    }

    async fn release_all(&self) -> Result<(), ResourceError> {
        self.release_waiting.store(true, Ordering::SeqCst);
        Self::run_steps(&self.before_release).await;
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
        Self::run_steps(&self.after_release).await;
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
        if let Some(runner) = &self.runner {
            return self.run_with(runner.as_ref(), r, action, epoch).await;
        }
        let role = if action == "release" { "standby" } else { "active" };
        let mut child = shell_command(command)
            .env("TANDEM_NODE", &self.node)
            .env("TANDEM_ROLE", role)
            .env("TANDEM_EPOCH", epoch.to_string())
            .env("TANDEM_ACTION", action)
            .env("TANDEM_RESOURCE", &r.name)
            .spawn()
            .map_err(|source| ResourceError::Spawn {
                name: r.name.clone(),
                action,
                source,
            })?;
        let pgid = child.id();
        let cancelled = Arc::new(AtomicBool::new(false));
        let run = self.begin(r, action, epoch, pgid, cancelled.clone());
        let (result, out, err) = self.wait_for(r, action, timeout, &mut child, pgid, &cancelled).await;
        let outcome = match &result {
            Ok(status) if status.success() => "ok".to_string(),
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        };
        self.end(run, outcome, out, err.clone());
        match result? {
            s if s.success() => Ok(()),
            s => Err(ResourceError::Failed {
                name: r.name.clone(),
                action,
                status: s.to_string(),
                stderr: err.trim_end().to_string(),
            }),
        }
    }

    /// [`Self::run`] through an [`ActionRunner`].
    async fn run_with(
        &self,
        runner: &dyn ActionRunner,
        r: &ResourceConfig,
        action: &'static str,
        epoch: Epoch,
    ) -> Result<(), ResourceError> {
        let run = self.begin(r, action, epoch, None, Arc::new(AtomicBool::new(false)));
        let result = runner.run(&r.name, action, epoch).await;
        let outcome = result
            .as_ref()
            .map_or_else(|e| format!("failed: {e}"), |_| "ok".to_string());
        self.end(
            run,
            outcome,
            String::new(),
            result.as_ref().err().cloned().unwrap_or_default(),
        );
        result.map_err(|stderr| ResourceError::Failed {
            name: r.name.clone(),
            action,
            status: "failed".to_string(),
            stderr,
        })
    }

    /// Mark a run as the one running now (for `running` and `cancel`).
    fn begin(
        &self,
        r: &ResourceConfig,
        action: &'static str,
        epoch: Epoch,
        pgid: Option<u32>,
        cancelled: Arc<AtomicBool>,
    ) -> ScriptRun {
        let started = tokio::time::Instant::now();
        *self.running.lock().expect("running lock") = Some(Running {
            resource: r.name.clone(),
            action,
            pgid,
            started,
            cancelled,
        });
        ScriptRun {
            resource: r.name.clone(),
            action: action.to_string(),
            epoch,
            started_at_ms: crate::unix_ms(),
            duration_ms: 0,
            outcome: String::new(),
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    /// The run begun by [`Self::begin`] ended: nothing runs now; keep it in the history.
    fn end(&self, mut run: ScriptRun, outcome: String, stdout: String, stderr: String) {
        let started = self.running.lock().expect("running lock").take().map(|r| r.started);
        run.duration_ms = started.map_or(0, |s| s.elapsed().as_millis() as u64);
        run.outcome = outcome;
        run.stdout = stdout;
        run.stderr = stderr;
        self.record(run);
    }

    fn record(&self, run: ScriptRun) {
        if let Some(events) = self.events.get() {
            let mut detail = format!(
                "{} of {} (epoch {}): {} in {} ms",
                run.action, run.resource, run.epoch, run.outcome, run.duration_ms
            );
            for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
                if !text.trim().is_empty() {
                    detail.push_str(&format!("; {name}: {}", text.trim()));
                }
            }
            // Passing checks are routine; everything else is news.
            if run.action != "check" || run.outcome != "ok" {
                events.record(crate::events::Kind::Resource, detail);
            }
        }
        let mut runs = self.runs.lock().expect("runs lock");
        if runs.len() == SCRIPT_RUNS_KEPT {
            runs.pop_front();
        }
        runs.push_back(run);
    }

    /// Wait for a started script within `timeout`; returns its status and output.
    async fn wait_for(
        &self,
        r: &ResourceConfig,
        action: &'static str,
        timeout: Duration,
        child: &mut tokio::process::Child,
        pgid: Option<u32>,
        cancelled: &AtomicBool,
    ) -> (Result<std::process::ExitStatus, ResourceError>, String, String) {
        let stdout = tokio::spawn(read_bounded(
            child.stdout.take(),
            SCRIPT_OUTPUT_MAX_BYTES,
            "SCRIPT_OUTPUT_MAX_BYTES",
        ));
        let stderr = tokio::spawn(read_bounded(
            child.stderr.take(),
            SCRIPT_OUTPUT_MAX_BYTES,
            "SCRIPT_OUTPUT_MAX_BYTES",
        ));
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                kill_group(pgid);
                if action == "release" && tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
                    // DESIGN §4: a release that cannot be stopped ends the node process.
                    tracing::error!(resource = %r.name, "release could not be stopped; stopping the node process");
                    std::process::exit(70);
                }
                // Whatever it printed before the kill is still worth keeping.
                let (out, err) = (collect_or_note(stdout).await, collect_or_note(stderr).await);
                let timed_out = ResourceError::TimedOut {
                    name: r.name.clone(),
                    action,
                    timeout,
                };
                return (Err(timed_out), out, err);
            }
        };
        // A daemon started in the background may keep the pipes open: take what arrived.
        let out = collect_or_note(stdout).await;
        let err = collect_or_note(stderr).await;
        if !out.is_empty() {
            tracing::info!(resource = %r.name, action, output = %out.trim_end(), "script output");
        }
        let status = if cancelled.load(Ordering::SeqCst) {
            Err(ResourceError::CancelledByOperator {
                name: r.name.clone(),
                action,
            })
        } else {
            status.map_err(|source| ResourceError::Spawn {
                name: r.name.clone(),
                action,
                source,
            })
        };
        (status, out, err)
    }
}

/// `sh -c command` in a process group of its own, with its output piped and no input; the
/// shell is killed if the child handle is dropped.
pub(crate) fn shell_command(command: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("/bin/sh");
    c.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    c
}

/// SIGKILL a script's whole process group (a group already gone is no error).
pub(crate) fn kill_group(pgid: Option<u32>) {
    let Some(pid) = pgid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) else {
        return;
    };
    match rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => tracing::warn!(error = %e, "cannot kill the script's process group"),
    }
}

/// How long a script's output is still collected after the script exited: a process it left in
/// the background may hold the pipes open.
pub(crate) const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// What a pipe reader read, if it finished within [`OUTPUT_GRACE`]; else it is stopped.
pub(crate) async fn collect(reader: tokio::task::JoinHandle<String>) -> Option<String> {
    let abort = reader.abort_handle();
    match tokio::time::timeout(OUTPUT_GRACE, reader).await {
        Ok(Ok(text)) => Some(text),
        _ => {
            abort.abort();
            None
        }
    }
}

async fn collect_or_note(reader: tokio::task::JoinHandle<String>) -> String {
    collect(reader)
        .await
        .unwrap_or_else(|| String::from("(output not collected: a process the script started keeps its output open)"))
}

/// Read a pipe to its end, keeping the first `max` bytes (the rest is drained, so a chatty
/// script never blocks on a full pipe, and counted in a note naming the `limit`).
pub(crate) async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>, max: usize, limit: &str) -> String {
    let Some(mut pipe) = pipe else { return String::new() };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut dropped = 0usize;
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max - kept.len();
                kept.extend_from_slice(&chunk[..n.min(room)]);
                dropped += n.saturating_sub(room);
            }
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!("\n({dropped} more bytes not kept: {limit})"));
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
            check: None,
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
        let out = read_bounded(
            Some(std::io::Cursor::new(vec![b'x'; 1024 * 1024])),
            SCRIPT_OUTPUT_MAX_BYTES,
            "SCRIPT_OUTPUT_MAX_BYTES",
        )
        .await;
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

    #[tokio::test]
    async fn a_hung_acquire_is_cancelled_by_the_operator_and_the_run_is_kept() {
        let agent = ResourceAgent::new(
            "a".into(),
            vec![script("stuck", "echo starting; sleep 30", "true", 60_000)],
        );
        let acquiring = {
            let agent = agent.clone();
            tokio::spawn(async move { agent.acquire(3).await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while agent.running().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the acquire started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cancelled = agent.cancel().expect("something to cancel");
        assert_eq!(
            (cancelled.resource.as_str(), cancelled.action.as_str()),
            ("stuck", "acquire")
        );
        let err = tokio::time::timeout(Duration::from_secs(5), acquiring)
            .await
            .expect("the cancel ends the acquire long before its timeout")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, ResourceError::CancelledByOperator { .. }), "{err}");
        assert!(agent.running().is_none());
        assert!(agent.cancel().is_none(), "nothing left to cancel");
        let runs = agent.recent_runs();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].epoch, 3);
        assert!(runs[0].outcome.contains("cancelled by the operator"), "{:?}", runs[0]);
    }

    #[tokio::test]
    async fn checks_run_with_the_active_environment_and_report_failure() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("broken");
        let mut r = script("app", "true", "true", 2000);
        r.check = Some(crate::config::Check {
            command: format!(
                "test \"$TANDEM_ROLE $TANDEM_ACTION\" = 'active check' && ! test -e {}",
                marker.display()
            ),
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(2),
        });
        let agent = ResourceAgent::new("a".into(), vec![r, script("plain", "true", "true", 2000)]);
        agent.acquire(4).await.unwrap();
        assert!(matches!(agent.check(0, 4).await, Some(Ok(()))));
        assert!(agent.check(1, 4).await.is_none(), "no check configured");
        std::fs::write(&marker, "").unwrap();
        let failed = agent.check(0, 4).await.expect("ran").unwrap_err();
        assert!(failed.to_string().contains("resource app: check exited"), "{failed}");
        // Outputs and outcomes are kept, oldest first, up to SCRIPT_RUNS_KEPT.
        for _ in 0..SCRIPT_RUNS_KEPT {
            agent.check(0, 4).await;
        }
        let runs = agent.recent_runs();
        assert_eq!(runs.len(), SCRIPT_RUNS_KEPT);
        assert!(runs.iter().all(|r| r.action == "check"));
    }
}
