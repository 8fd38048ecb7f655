//! Running one health check: [`run`] carries out a [`Probe`] once, within its timeout, and
//! says why it failed in words an operator can act on.
//!
//! Every probe is bounded. Network probes are dropped at the timeout. Script probes run in a
//! process group of their own, killed whole at the timeout, so a hung check leaves nothing
//! behind. Probes that read the filesystem (a `/proc` scan, `statvfs` of a hung NFS mount) can
//! block in the kernel where no timeout reaches: they run on a blocking thread, and while one
//! of them is still stuck the next run fails at once instead of piling up threads.

use std::path::Path;
use std::process::Stdio;
#[cfg(feature = "https-monitors")]
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
#[cfg(feature = "https-monitors")]
use tokio_rustls::rustls;

use super::spec::Probe;
use super::spec::MONITOR_HTTP_BODY_MAX_BYTES;
use crate::resources::agent::collect;
use crate::resources::agent::kill_group;
use crate::resources::agent::read_bounded;
use crate::resources::agent::shell_command;
use crate::resources::agent::KILL_GRACE;

/// Output kept from one script check (stdout and stderr each); the rest is read and dropped.
pub const MONITOR_SCRIPT_OUTPUT_MAX_BYTES: usize = 4096;
/// Longest line of output or file content quoted in a reason.
pub const MONITOR_REASON_LINE_MAX_CHARS: usize = 200;
/// Bytes of a result file read: enough for `false` and a short explanation after it.
pub const MONITOR_RESULT_FILE_READ_BYTES: usize = 1024;

/// An https probe's TLS client setup, once built.
#[cfg(feature = "https-monitors")]
type TlsCache = Option<Arc<rustls::ClientConfig>>;
/// A build without the `https-monitors` feature has no TLS (its configs refuse https URLs).
#[cfg(not(feature = "https-monitors"))]
type TlsCache = ();

/// Per-monitor memory between runs (e.g. the previous /proc/stat sample for cpu).
#[derive(Default)]
pub struct ProbeState {
    /// The previous `/proc/stat` totals, for the busy share since then.
    cpu: Option<CpuSample>,
    /// The TLS client setup of an https probe, built on its first run (loading the system
    /// roots every second would cost more than the check).
    tls: TlsCache,
    /// A blocking run that timed out and has not returned yet.
    stuck: Option<tokio::task::JoinHandle<Result<String, String>>>,
}

/// Run the probe once, bounded by `timeout` (a probe that exceeds it fails with "timed out after …").
/// Ok(detail) = pass, with a short human detail ("HTTP 200 in 3 ms", "disk /var 41.2% used, 12.3 GiB free");
/// Err(reason) = fail, with a reason an operator understands ("connection refused to 127.0.0.1:8080",
/// "HTTP 500 (expected 200)", "body does not contain \"ok\"", "no process with executable mysqld",
/// "exit status 3: <first line of output>", "result file /x says false", "memory 93.1% used > 90%").
pub async fn run(probe: &Probe, state: &mut ProbeState, timeout: Duration) -> Result<String, String> {
    match probe {
        Probe::Process {
            executable,
            command_line,
        } => {
            let (executable, command_line) = (executable.clone(), command_line.clone());
            blocking(state, timeout, move || {
                processes(executable.as_deref(), command_line.as_deref())
            })
            .await
        }
        Probe::Systemd { unit } => within(timeout, systemd(unit)).await,
        Probe::Tcp { address } => within(timeout, tcp(address)).await,
        Probe::Http {
            url,
            expect_status,
            body_contains,
            ca_file,
        } => {
            let check = http(
                url,
                *expect_status,
                body_contains.as_deref(),
                ca_file.as_deref(),
                &mut state.tls,
            );
            within(timeout, check).await
        }
        Probe::Script { command, result_file } => script(command.as_deref(), result_file.as_deref(), timeout).await,
        Probe::Disk {
            path,
            max_used_percent,
            min_free_bytes,
        } => {
            let (path, max_used_percent, min_free_bytes) = (path.clone(), *max_used_percent, *min_free_bytes);
            blocking(state, timeout, move || disk(&path, max_used_percent, min_free_bytes)).await
        }
        // Reads of /proc/meminfo, /proc/stat and /proc/loadavg do not block.
        Probe::Memory { max_used_percent } => memory(*max_used_percent),
        Probe::Cpu { max_percent, max_load1 } => cpu(*max_percent, *max_load1, &mut state.cpu),
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", human_duration(timeout))
}

async fn within(
    timeout: Duration,
    check: impl std::future::Future<Output = Result<String, String>>,
) -> Result<String, String> {
    tokio::time::timeout(timeout, check)
        .await
        .unwrap_or_else(|_| Err(timed_out(timeout)))
}

/// Run `check` on a blocking thread within `timeout`; see the module note on stuck runs.
async fn blocking(
    state: &mut ProbeState,
    timeout: Duration,
    check: impl FnOnce() -> Result<String, String> + Send + 'static,
) -> Result<String, String> {
    if let Some(stuck) = &state.stuck {
        if !stuck.is_finished() {
            return Err("the previous run timed out and is still blocked in the kernel; not starting another".into());
        }
        state.stuck = None;
    }
    let mut task = tokio::task::spawn_blocking(check);
    match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(format!("the check stopped unexpectedly: {e}")),
        Err(_) => {
            state.stuck = Some(task);
            Err(timed_out(timeout))
        }
    }
}

// ---- process ----

/// Live (not zombie) processes matching the executable or the exact command line.
fn processes(executable: Option<&str>, command_line: Option<&str>) -> Result<String, String> {
    let what = match (executable, command_line) {
        (Some(exe), _) => format!("executable {exe}"),
        (None, Some(line)) => format!("command line {:?}", first_line(line)),
        (None, None) => return Err("no executable or command line to look for".into()),
    };
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("cannot read /proc: {e}"))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // Processes come and go during the scan: whatever cannot be read is not counted.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if !is_alive(&stat) {
            continue;
        }
        let matched = match (executable, command_line) {
            (Some(exe), _) => executable_matches(pid, exe),
            (None, Some(line)) => read_command_line(pid).is_some_and(|l| l == line),
            (None, None) => false,
        };
        if matched {
            found.push(pid);
        }
    }
    found.sort_unstable();
    match found.as_slice() {
        [] => Err(format!("no process with {what}")),
        [pid] => Ok(format!("process with {what} running (pid {pid})")),
        pids => {
            let shown: Vec<String> = pids.iter().take(5).map(u32::to_string).collect();
            let more = if pids.len() > 5 { ", …" } else { "" };
            Ok(format!(
                "{} processes with {what} running (pids {}{more})",
                pids.len(),
                shown.join(", ")
            ))
        }
    }
}

/// A process in state Z (zombie) or X (dead) in `/proc/PID/stat` has stopped running.
fn is_alive(stat: &str) -> bool {
    // The state follows the command name, which may itself hold ") ".
    match stat.rsplit_once(") ") {
        Some((_, rest)) => !(rest.starts_with('Z') || rest.starts_with('X')),
        None => false,
    }
}

/// argv joined with single spaces.
fn read_command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // The list ends in a NUL, which leaves one empty piece.
    let args = match args.split_last() {
        Some((last, rest)) if last.is_empty() => rest,
        _ => &args[..],
    };
    (!args.is_empty()).then(|| args.join(" "))
}

/// A path is compared with the whole of `/proc/PID/exe`, a bare name with its file name.
fn executable_matches(pid: u32, want: &str) -> bool {
    let exe = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        // A binary replaced on disk (a package upgrade) shows as "PATH (deleted)".
        Ok(path) => path.to_string_lossy().trim_end_matches(" (deleted)").to_string(),
        // Another user's process, when the node does not run as root: argv[0] is all there is.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            match std::fs::read(format!("/proc/{pid}/cmdline")) {
                Ok(raw) => String::from_utf8_lossy(raw.split(|b| *b == 0).next().unwrap_or(&[])).into_owned(),
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    if want.contains('/') {
        exe == want
    } else {
        Path::new(&exe).file_name().is_some_and(|name| name == want)
    }
}

// ---- systemd ----

async fn systemd(unit: &str) -> Result<String, String> {
    // sd_booted(3): systemd runs as init exactly when this directory exists.
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(format!(
            "systemd is not running on this host (no /run/systemd/system), so unit {unit} cannot be checked"
        ));
    }
    let output = tokio::process::Command::new("systemctl")
        .args(["is-active", "--", unit])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await;
    let output = match output {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "systemctl not found on this host, so unit {unit} cannot be checked"
            ))
        }
        Err(e) => return Err(format!("cannot run systemctl: {e}")),
    };
    // `is-active` prints the state ("active", "inactive", "failed", "activating").
    let state = first_line(&String::from_utf8_lossy(&output.stdout));
    if output.status.success() {
        return Ok(format!("unit {unit} is {state}"));
    }
    if state.is_empty() {
        let stderr = first_line(&String::from_utf8_lossy(&output.stderr));
        return Err(format!("systemctl is-active {unit} failed: {stderr}"));
    }
    Err(format!("unit {unit} is {state}"))
}

// ---- tcp and http ----

async fn connect(address: &str) -> Result<TcpStream, String> {
    TcpStream::connect(address).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("connection refused to {address}"),
        _ => format!("cannot connect to {address}: {e}"),
    })
}

async fn tcp(address: &str) -> Result<String, String> {
    let started = Instant::now();
    drop(connect(address).await?);
    Ok(format!(
        "connected to {address} in {}",
        human_duration(started.elapsed())
    ))
}

async fn http(
    url: &str,
    expect_status: u16,
    body_contains: Option<&str>,
    ca_file: Option<&Path>,
    tls: &mut TlsCache,
) -> Result<String, String> {
    let started = Instant::now();
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    let authority = uri.authority().ok_or_else(|| format!("{url:?} names no host"))?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::USER_AGENT, "tandem-monitor")
        .header(hyper::header::CONNECTION, "close")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("cannot build a request for {url}: {e}"))?;

    let stream = connect(&address).await?;
    let (status, body) = if https {
        https_exchange(stream, &host, ca_file, tls, request, body_contains.is_some()).await?
    } else {
        exchange(stream, request, body_contains.is_some()).await?
    };
    let took = human_duration(started.elapsed());
    if status != expect_status {
        return Err(format!("HTTP {status} (expected {expect_status})"));
    }
    if let Some(needle) = body_contains {
        let found = body.windows(needle.len()).any(|w| w == needle.as_bytes());
        if !found {
            return Err(format!(
                "body does not contain {needle:?} (HTTP {status}, first {} bytes read)",
                body.len()
            ));
        }
    }
    Ok(format!("HTTP {status} in {took}"))
}

/// One GET over `io`: the status, and the first [`MONITOR_HTTP_BODY_MAX_BYTES`] of the body
/// when `read_body`.
async fn exchange<T>(
    io: T,
    request: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
    read_body: bool,
) -> Result<(u16, Vec<u8>), String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    // The connection task ends with this probe, whichever way it ends (timeout included).
    let connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP request failed: {e}"))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    if read_body {
        let mut stream = response.into_body();
        while body.len() < MONITOR_HTTP_BODY_MAX_BYTES {
            match stream.frame().await {
                None => break,
                Some(Err(e)) => return Err(format!("HTTP {status}: reading the body failed: {e}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = MONITOR_HTTP_BODY_MAX_BYTES - body.len();
                        body.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
        }
    }
    drop(connection);
    Ok((status, body))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The exchange over TLS, trusting `ca_file` or the system's roots.
#[cfg(feature = "https-monitors")]
async fn https_exchange(
    stream: TcpStream,
    host: &str,
    ca_file: Option<&Path>,
    tls: &mut TlsCache,
    request: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
    read_body: bool,
) -> Result<(u16, Vec<u8>), String> {
    let config = match tls {
        Some(config) => config.clone(),
        None => tls.insert(tls_config(ca_file).await?).clone(),
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| tls_reason(host, e))?;
    exchange(stream, request, read_body).await
}

#[cfg(not(feature = "https-monitors"))]
async fn https_exchange(
    _stream: TcpStream,
    _host: &str,
    _ca_file: Option<&Path>,
    _tls: &mut TlsCache,
    _request: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
    _read_body: bool,
) -> Result<(u16, Vec<u8>), String> {
    Err("this build has no TLS (built without the https-monitors feature)".into())
}

/// Trust only the CAs of `ca_file` when given, else the system's roots.
#[cfg(feature = "https-monitors")]
async fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match ca_file {
        Some(file) => {
            let pem = tokio::fs::read(file)
                .await
                .map_err(|e| format!("cannot read ca_file {}: {e}", file.display()))?;
            tandem_client::pem_roots(&pem, &format!("ca_file {}", file.display()))?
        }
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                return Err(format!(
                    "no trusted CA certificates found on this host{why}; set ca_file"
                ));
            }
            roots
        }
    };
    Ok(Arc::new(tandem_client::tls_client_config(roots)?))
}

#[cfg(feature = "https-monitors")]
fn tls_reason(host: &str, e: std::io::Error) -> String {
    use rustls::CertificateError;
    let tls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => format!(
            "TLS: the certificate of {host} is not signed by a trusted CA (unknown issuer); set ca_file to its CA"
        ),
        Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
        | Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
            format!("TLS: the certificate presented is not valid for {host}")
        }
        Some(other) => format!("TLS handshake with {host} failed: {other}"),
        None => format!("TLS handshake with {host} failed: {e}"),
    }
}

// ---- script ----

async fn script(command: Option<&str>, result_file: Option<&Path>, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut details = Vec::new();
    if let Some(command) = command {
        details.push(run_command(command, timeout).await?);
    }
    if let Some(file) = result_file {
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, read_result(file)).await;
        details.push(read.unwrap_or_else(|_| Err(timed_out(timeout)))?);
    }
    Ok(details.join("; "))
}

/// Kills a script's process group when dropped, so a check abandoned by its caller does not
/// leave the script running either.
struct GroupKill(Option<u32>);

impl GroupKill {
    fn kill(&mut self) {
        kill_group(self.0.take());
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn run_command(command: &str, timeout: Duration) -> Result<String, String> {
    let started = Instant::now();
    let mut child = shell_command(command)
        .spawn()
        .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
    // Declared after `child`, so dropped first: the group is killed before the shell is reaped,
    // while its id cannot have been reused.
    let mut group = GroupKill(child.id());
    let stdout = tokio::spawn(read_script_output(child.stdout.take()));
    let stderr = tokio::spawn(read_script_output(child.stderr.take()));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(|e| format!("cannot wait for the script: {e}"))?,
        Err(_) => {
            group.kill();
            // Reap the shell; the rest of the group was killed with it.
            let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
            let said = output_line(&collect_output(stdout).await, &collect_output(stderr).await);
            let said = if said.is_empty() {
                String::new()
            } else {
                format!(" (it said: {said})")
            };
            return Err(format!("{}; its process group was killed{said}", timed_out(timeout)));
        }
    };
    // The script ended by itself: whatever it left in the background is its own business.
    group.0 = None;
    let (out, err) = (collect_output(stdout).await, collect_output(stderr).await);
    let took = human_duration(started.elapsed());
    if status.success() {
        return Ok(format!("exit 0 in {took}"));
    }
    let how = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    };
    let said = output_line(&out, &err);
    if said.is_empty() {
        Err(how)
    } else {
        Err(format!("{how}: {said}"))
    }
}

/// The first non-empty line of stderr, else of stdout.
fn output_line(stdout: &str, stderr: &str) -> String {
    [stderr, stdout]
        .iter()
        .map(|text| first_line(text))
        .find(|line| !line.is_empty())
        .unwrap_or_default()
}

async fn collect_output(reader: tokio::task::JoinHandle<String>) -> String {
    collect(reader).await.unwrap_or_default()
}

/// A script's output, up to [`MONITOR_SCRIPT_OUTPUT_MAX_BYTES`] (only its first line is shown).
async fn read_script_output<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> String {
    read_bounded(pipe, MONITOR_SCRIPT_OUTPUT_MAX_BYTES, "MONITOR_SCRIPT_OUTPUT_MAX_BYTES").await
}

/// Result-file mode: a file whose first five characters are `false` fails the check.
async fn read_result(file: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read result file {}: {e}", file.display());
    let opened = tokio::fs::File::open(file).await.map_err(cannot)?;
    let mut head = Vec::new();
    opened
        .take(MONITOR_RESULT_FILE_READ_BYTES as u64)
        .read_to_end(&mut head)
        .await
        .map_err(cannot)?;
    let text = String::from_utf8_lossy(&head);
    let line = first_line(&text);
    if head.starts_with(b"false") {
        let rest = line["false".len()..].trim_start_matches([':', ' ']);
        return Err(if rest.is_empty() {
            format!("result file {} says false", file.display())
        } else {
            format!("result file {} says false: {rest}", file.display())
        });
    }
    Ok(format!("result file {} says {:?}", file.display(), line))
}

// ---- disk, memory, cpu ----

fn disk(path: &Path, max_used_percent: Option<f64>, min_free_bytes: Option<u64>) -> Result<String, String> {
    let st = rustix::fs::statvfs(path).map_err(|e| format!("cannot read the filesystem of {}: {e}", path.display()))?;
    // As `df`: the share of what non-root users may use that is used.
    let used_blocks = st.f_blocks.saturating_sub(st.f_bfree);
    let usable = used_blocks + st.f_bavail;
    let used = if usable == 0 {
        0.0
    } else {
        used_blocks as f64 * 100.0 / usable as f64
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let shown = format!("disk {}", path.display());
    let mut broken = Vec::new();
    if let Some(max) = max_used_percent.filter(|max| used > *max) {
        broken.push(format!("{shown} {used:.1}% used > {max}%"));
    }
    if let Some(min) = min_free_bytes.filter(|min| free < *min) {
        broken.push(format!("{shown} {} free < {}", human_bytes(free), human_bytes(min)));
    }
    if broken.is_empty() {
        Ok(format!("{shown} {used:.1}% used, {} free", human_bytes(free)))
    } else {
        Err(broken.join("; "))
    }
}

fn memory(max_used_percent: f64) -> Result<String, String> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("cannot read /proc/meminfo: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/meminfo has no {name}"))
    };
    let total_kb = field("MemTotal")?;
    let available_kb = field("MemAvailable")?;
    if total_kb == 0 {
        return Err("/proc/meminfo reports MemTotal 0".into());
    }
    let used = (1.0 - available_kb as f64 / total_kb as f64) * 100.0;
    if used > max_used_percent {
        return Err(format!("memory {used:.1}% used > {max_used_percent}%"));
    }
    Ok(format!(
        "memory {used:.1}% used, {} available",
        human_bytes(available_kb * 1024)
    ))
}

/// Jiffies from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    total: u64,
    idle: u64,
}

fn cpu_sample() -> Result<CpuSample, String> {
    let text = std::fs::read_to_string("/proc/stat").map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("/proc/stat has no cpu line")?;
    let values: Vec<u64> = line.split_whitespace().skip(1).map_while(|v| v.parse().ok()).collect();
    if values.len() < 4 {
        return Err(format!("/proc/stat cpu line is too short: {line:?}"));
    }
    // user nice system idle iowait irq softirq steal; guest time is already in user and nice.
    let total = values.iter().take(8).sum();
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Ok(CpuSample { total, idle })
}

fn cpu(max_percent: Option<f64>, max_load1: Option<f64>, previous: &mut Option<CpuSample>) -> Result<String, String> {
    let mut seen = Vec::new();
    let mut broken = Vec::new();
    if let Some(max) = max_percent {
        let now = cpu_sample()?;
        match previous.replace(now) {
            None => seen.push("cpu first sample taken".to_string()),
            Some(before) => {
                let total = now.total.saturating_sub(before.total);
                let idle = now.idle.saturating_sub(before.idle);
                if total == 0 {
                    seen.push("cpu no time elapsed since the last sample".to_string());
                } else {
                    let busy = total.saturating_sub(idle) as f64 * 100.0 / total as f64;
                    if busy > max {
                        broken.push(format!("cpu {busy:.1}% busy > {max}%"));
                    } else {
                        seen.push(format!("cpu {busy:.1}% busy"));
                    }
                }
            }
        }
    }
    if let Some(max) = max_load1 {
        let text = std::fs::read_to_string("/proc/loadavg").map_err(|e| format!("cannot read /proc/loadavg: {e}"))?;
        let load: f64 = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("/proc/loadavg is unreadable: {text:?}"))?;
        if load > max {
            broken.push(format!("load average {load:.2} > {max}"));
        } else {
            seen.push(format!("load average {load:.2}"));
        }
    }
    if broken.is_empty() {
        Ok(seen.join(", "))
    } else {
        Err(broken.join("; "))
    }
}

// ---- wording ----

/// The first non-empty line, trimmed, at most [`MONITOR_REASON_LINE_MAX_CHARS`] characters.
fn first_line(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    match line.char_indices().nth(MONITOR_REASON_LINE_MAX_CHARS) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_string(),
    }
}

fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording_of_sizes_and_durations() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12_300 * 1024 * 1024), "12.0 GiB");
        assert_eq!(human_duration(Duration::from_millis(3)), "3 ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5 s");
    }

    #[test]
    fn zombies_and_dead_processes_do_not_count_as_running() {
        assert!(is_alive("42 (mysqld) S 1 42 42 0"));
        assert!(is_alive("42 (odd) name) R 1 42"));
        assert!(!is_alive("42 (mysqld) Z 1 42 42 0"));
        assert!(!is_alive("42 (mysqld) X 1 42 42 0"));
        assert!(!is_alive("garbage"));
    }

    #[test]
    fn reasons_quote_one_bounded_line() {
        assert_eq!(first_line("\n  first  \nsecond"), "first");
        let long = "x".repeat(MONITOR_REASON_LINE_MAX_CHARS + 50);
        let line = first_line(&long);
        assert_eq!(
            line.chars().count(),
            MONITOR_REASON_LINE_MAX_CHARS + 1,
            "the cut is marked with …"
        );
        assert!(line.ends_with('…'));
        assert_eq!(
            first_line(&"x".repeat(MONITOR_REASON_LINE_MAX_CHARS)).len(),
            MONITOR_REASON_LINE_MAX_CHARS
        );
        assert_eq!(
            output_line("out", "\n"),
            "out",
            "stderr is preferred, when it says anything"
        );
        assert_eq!(output_line("out", "err"), "err");
    }

    #[tokio::test]
    async fn script_output_is_kept_up_to_its_limit_and_the_rest_drained() {
        // A megabyte on each stream: the script must not block on a full pipe.
        let cmd = "head -c 1000000 /dev/zero | tr '\\0' x; head -c 1000000 /dev/zero | tr '\\0' y >&2; exit 4";
        let reason = run_command(cmd, Duration::from_secs(10)).await.unwrap_err();
        assert!(reason.starts_with("exit status 4: yyy"), "{}", &reason[..40]);
        assert!(reason.len() <= "exit status 4: ".len() + MONITOR_REASON_LINE_MAX_CHARS + 3);
        let kept = read_script_output(Some(&b"z".repeat(MONITOR_SCRIPT_OUTPUT_MAX_BYTES + 10)[..])).await;
        assert!(
            kept.starts_with(&"z".repeat(MONITOR_SCRIPT_OUTPUT_MAX_BYTES)),
            "the limit is kept"
        );
        assert!(
            kept.ends_with("\n(10 more bytes not kept: MONITOR_SCRIPT_OUTPUT_MAX_BYTES)"),
            "{}",
            &kept[kept.len() - 60..]
        );
    }

    #[tokio::test]
    async fn a_result_file_is_read_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("result");
        // "false" past the read limit is never seen.
        let mut text = "t".repeat(MONITOR_RESULT_FILE_READ_BYTES);
        text.push_str("false");
        std::fs::write(&file, &text).unwrap();
        let detail = read_result(&file).await.unwrap();
        assert!(!detail.contains("false"), "{detail}");
        std::fs::write(&file, "false: replica 30 s behind\n").unwrap();
        assert_eq!(
            read_result(&file).await.unwrap_err(),
            format!("result file {} says false: replica 30 s behind", file.display())
        );
    }

    #[tokio::test]
    async fn a_blocked_run_is_not_started_twice() {
        let mut state = ProbeState::default();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let reason = blocking(&mut state, Duration::from_millis(50), move || {
            let _ = wait.recv();
            Ok("late".into())
        })
        .await
        .unwrap_err();
        assert_eq!(reason, "timed out after 50 ms");
        let reason = blocking(&mut state, Duration::from_secs(1), || Ok("next".into()))
            .await
            .unwrap_err();
        assert!(reason.contains("still blocked"), "{reason}");
        // Once the stuck run returns, checks run again.
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !state.stuck.as_ref().unwrap().is_finished() {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let detail = blocking(&mut state, Duration::from_secs(1), || Ok("next".into())).await;
        assert_eq!(detail, Ok("next".into()));
    }
}
