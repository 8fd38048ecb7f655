//! Health probes against real targets on this machine: a process, a TCP listener, HTTP and
//! HTTPS servers, shell scripts, the filesystem, memory and CPU. Each check is seen to pass
//! while its target is healthy and to fail, with the reason an operator reads, when it is not.

use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tandem_node::monitor::probe::run;
use tandem_node::monitor::probe::ProbeState;
use tandem_node::monitor::spec::Probe;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
#[cfg(feature = "https-monitors")]
use tokio_rustls::rustls;

const TIMEOUT: Duration = Duration::from_secs(5);

async fn check(probe: &Probe) -> Result<String, String> {
    run(probe, &mut ProbeState::default(), TIMEOUT).await
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}{nanos}", std::process::id())
}

/// The state letter of `/proc/PID/stat`, or `None` once the process is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Live (non-zombie) processes whose process group is `pgid`.
fn live_members_of_group(pgid: u32) -> Vec<u32> {
    let mut live = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        // state ppid pgrp …
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && !matches!(fields[0], "Z" | "X") {
            live.push(pid);
        }
    }
    live
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "waited too long for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_process_passes_while_it_runs_and_fails_once_killed() {
    // A copy of `sleep` under a name no other process has, started with a unique argument.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join(format!("tandem-probe-sleep-{}", unique()));
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let arg = format!("30.{}", unique());
    let mut child = loop {
        // Another test thread forking while the copy was open makes exec fail with ETXTBSY.
        match Command::new(&exe).arg(&arg).spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("cannot start {}: {e}", exe.display()),
        }
    };
    let file_name = exe.file_name().unwrap().to_str().unwrap().to_string();
    let by_path = Probe::Process {
        executable: Some(exe.to_str().unwrap().to_string()),
        command_line: None,
    };
    let by_name = Probe::Process {
        executable: Some(file_name.clone()),
        command_line: None,
    };
    let by_line = Probe::Process {
        executable: None,
        command_line: Some(format!("{} {arg}", exe.display())),
    };

    // Running: all three ways of naming it find it.
    for probe in [&by_path, &by_name, &by_line] {
        let detail = check(probe).await.unwrap();
        assert!(detail.contains(&format!("(pid {})", child.id())), "{detail}");
    }
    // Almost the command line is not the command line.
    let near = Probe::Process {
        executable: None,
        command_line: Some(format!("{} {arg} ", exe.display())),
    };
    assert!(check(&near).await.is_err());

    // Killed but not yet reaped: a zombie is not a running process.
    child.kill().unwrap();
    wait_until("the process is a zombie", || proc_state(child.id()) == Some('Z')).await;
    let reason = check(&by_name).await.unwrap_err();
    assert_eq!(reason, format!("no process with executable {file_name}"));
    assert!(check(&by_line)
        .await
        .unwrap_err()
        .starts_with("no process with command line"));

    // Reaped: gone altogether.
    child.wait().unwrap();
    assert!(check(&by_path)
        .await
        .unwrap_err()
        .starts_with("no process with executable /"));
}

#[tokio::test]
async fn tcp_passes_while_listening_and_is_refused_once_the_listener_is_gone() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let probe = Probe::Tcp {
        address: address.clone(),
    };
    assert!(check(&probe)
        .await
        .unwrap()
        .starts_with(&format!("connected to {address}")));

    drop(listener);
    assert_eq!(
        check(&probe).await.unwrap_err(),
        format!("connection refused to {address}")
    );
}

/// An HTTP/1.1 server answering every request with `response` (`None`: reads the request and
/// never answers). Each request's head is sent on the returned channel.
async fn http_server(response: Option<String>) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (heads, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let head = read_head(&mut socket).await;
            let _ = heads.send(head);
            match &response {
                Some(r) => {
                    let _ = socket.write_all(r.as_bytes()).await;
                    let _ = socket.shutdown().await;
                }
                // Keep the connection open, silent, for as long as the test runs.
                None => {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(socket);
                    });
                }
            }
        }
    });
    (address, seen)
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(socket: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn response(status: &str, body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

fn http_probe(address: &str, body_contains: Option<&str>) -> Probe {
    Probe::Http {
        url: format!("http://{address}/health?full=1"),
        expect_status: 200,
        body_contains: body_contains.map(str::to_string),
        ca_file: None,
    }
}

#[tokio::test]
async fn http_passes_on_the_expected_status_and_body_and_fails_otherwise() {
    // 200 with the expected text: passes, and the request named the host and path.
    let (ok, mut heads) = http_server(response("200 OK", "status: ok\n")).await;
    let detail = check(&http_probe(&ok, Some("ok"))).await.unwrap();
    assert!(detail.starts_with("HTTP 200 in "), "{detail}");
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /health?full=1 http/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("host: {ok}\r\n")), "{head}");

    // 500: fails naming both statuses.
    let (broken, _) = http_server(response("500 Internal Server Error", "ok")).await;
    assert_eq!(
        check(&http_probe(&broken, Some("ok"))).await.unwrap_err(),
        "HTTP 500 (expected 200)"
    );

    // 200 without the text: fails naming the text.
    let (wrong, _) = http_server(response("200 OK", "status: degraded\n")).await;
    let reason = check(&http_probe(&wrong, Some("status: ok"))).await.unwrap_err();
    assert!(reason.starts_with("body does not contain \"status: ok\""), "{reason}");
    assert!(
        check(&http_probe(&wrong, None)).await.is_ok(),
        "no body check: the status is enough"
    );

    // Accepts, never answers: fails at the timeout, not later.
    let (silent, _) = http_server(None).await;
    let started = tokio::time::Instant::now();
    let reason = run(
        &http_probe(&silent, None),
        &mut ProbeState::default(),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert_eq!(reason, "timed out after 300 ms");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Nobody listening.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    assert_eq!(
        check(&http_probe(&gone, None)).await.unwrap_err(),
        format!("connection refused to {gone}")
    );
}

/// A private CA and a certificate it signed for 127.0.0.1, made with the `openssl` CLI.
#[cfg(feature = "https-monitors")]
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl CLI makes the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    openssl(&[&["genpkey"][..], &ec, &["-out", "ca.key"]].concat());
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=Tandem test CA",
        "-days",
        "2",
        "-out",
        "ca.pem",
    ]);
    openssl(&[&["genpkey"][..], &ec, &["-out", "server.key"]].concat());
    openssl(&[
        "req",
        "-new",
        "-key",
        "server.key",
        "-subj",
        "/CN=127.0.0.1",
        "-out",
        "server.csr",
    ]);
    std::fs::File::create(dir.join("server.ext"))
        .unwrap()
        .write_all(
            b"basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// An HTTPS server answering 200 "ok" with the given certificate.
#[cfg(feature = "https-monitors")]
async fn https_server(cert: &Path, key: &Path) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::PrivateKeyDer;

    let chain = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake: nothing to answer.
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                read_head(&mut tls).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    address
}

#[cfg(feature = "https-monitors")]
#[tokio::test]
async fn https_trusts_a_private_ca_only_through_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let address = https_server(&cert, &key).await;
    let probe = |ca_file: Option<PathBuf>| Probe::Http {
        url: format!("https://{address}/"),
        expect_status: 200,
        body_contains: Some("ok".into()),
        ca_file,
    };

    // With the CA: the certificate checks out and the body is read through TLS.
    let detail = check(&probe(Some(ca.clone()))).await.unwrap();
    assert!(detail.starts_with("HTTP 200 in "), "{detail}");

    // With the system roots only: the issuer is unknown.
    let reason = check(&probe(None)).await.unwrap_err();
    assert!(
        reason.contains("not signed by a trusted CA (unknown issuer)"),
        "{reason}"
    );

    // A CA file that is not there is named.
    let reason = check(&probe(Some(dir.path().join("missing.pem")))).await.unwrap_err();
    assert!(reason.starts_with("cannot read ca_file "), "{reason}");
    assert!(reason.contains("missing.pem"), "{reason}");
}

fn script(command: &str) -> Probe {
    Probe::Script {
        command: Some(command.into()),
        result_file: None,
    }
}

#[tokio::test]
async fn a_script_passes_on_exit_0_and_fails_with_its_status_and_first_line() {
    assert!(check(&script("true")).await.unwrap().starts_with("exit 0 in "));
    assert_eq!(
        check(&script("echo checking; echo 'replica is 40 s behind' >&2; exit 3"))
            .await
            .unwrap_err(),
        "exit status 3: replica is 40 s behind"
    );
    assert_eq!(
        check(&script("echo only stdout; exit 1")).await.unwrap_err(),
        "exit status 1: only stdout"
    );
    assert_eq!(check(&script("kill -9 $$")).await.unwrap_err(), "killed by signal 9");
}

#[tokio::test]
async fn a_hung_script_is_killed_with_its_whole_process_group_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The shell writes its own pid (the group's id) and that of a child it waits for.
    let command = format!("sleep 300 & echo $$ $! > {}; wait", pids.display());
    let started = tokio::time::Instant::now();
    let reason = run(
        &script(&command),
        &mut ProbeState::default(),
        Duration::from_millis(500),
    )
    .await
    .unwrap_err();
    assert!(
        reason.starts_with("timed out after 500 ms; its process group was killed"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    let text = std::fs::read_to_string(&pids).unwrap();
    let ids: Vec<u32> = text.split_whitespace().map(|p| p.parse().unwrap()).collect();
    let (pgid, sleeper) = (ids[0], ids[1]);
    // The background child is dead (at most a zombie waiting for its new parent to reap it).
    wait_until(
        "the sleeper is dead",
        || !matches!(proc_state(sleeper), Some(s) if s != 'Z' && s != 'X'),
    )
    .await;
    assert_eq!(
        live_members_of_group(pgid),
        Vec::<u32>::new(),
        "nothing of the group runs on"
    );
}

#[tokio::test]
async fn a_result_file_fails_when_it_starts_with_false_or_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("result");
    let file_only = Probe::Script {
        command: None,
        result_file: Some(file.clone()),
    };

    std::fs::write(&file, "true\n").unwrap();
    assert_eq!(
        check(&file_only).await.unwrap(),
        format!("result file {} says \"true\"", file.display())
    );
    std::fs::write(&file, "false\n").unwrap();
    assert_eq!(
        check(&file_only).await.unwrap_err(),
        format!("result file {} says false", file.display())
    );
    std::fs::remove_file(&file).unwrap();
    let reason = check(&file_only).await.unwrap_err();
    assert!(
        reason.starts_with(&format!("cannot read result file {}: ", file.display())),
        "{reason}"
    );

    // With a command: the command writes the file, then the file decides.
    let both = |verdict: &str| Probe::Script {
        command: Some(format!("echo {verdict} > {}", file.display())),
        result_file: Some(file.clone()),
    };
    let detail = check(&both("true")).await.unwrap();
    assert!(
        detail.starts_with("exit 0 in ") && detail.ends_with("says \"true\""),
        "{detail}"
    );
    assert_eq!(
        check(&both("false")).await.unwrap_err(),
        format!("result file {} says false", file.display())
    );
    // A failing command fails the check before the file is read.
    let failing = Probe::Script {
        command: Some("exit 2".into()),
        result_file: Some(file.clone()),
    };
    assert_eq!(check(&failing).await.unwrap_err(), "exit status 2");
}

#[tokio::test]
async fn disk_thresholds_around_the_real_usage_pass_and_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // The same figures `df` shows, taken here independently of the probe.
    let st = rustix::fs::statvfs(&path).unwrap();
    let used_blocks = st.f_blocks - st.f_bfree;
    let used = used_blocks as f64 * 100.0 / (used_blocks + st.f_bavail) as f64;
    let free = st.f_bavail * st.f_frsize;
    assert!(
        used > 1.0 && used < 99.0,
        "the test needs a filesystem neither empty nor full: {used}%"
    );
    let disk = |max_used_percent: Option<f64>, min_free_bytes: Option<u64>| Probe::Disk {
        path: path.clone(),
        max_used_percent,
        min_free_bytes,
    };

    // Other processes write to this filesystem too: the margins absorb that.
    let detail = check(&disk(Some(used + 0.9), Some(free / 2))).await.unwrap();
    assert!(detail.starts_with(&format!("disk {} ", path.display())), "{detail}");
    assert!(detail.contains("% used, ") && detail.ends_with(" free"), "{detail}");

    let reason = check(&disk(Some(used - 0.9), None)).await.unwrap_err();
    assert!(reason.contains("% used > "), "{reason}");
    let reason = check(&disk(None, Some(free + (1 << 30)))).await.unwrap_err();
    assert!(reason.contains(" free < "), "{reason}");

    let nowhere = Probe::Disk {
        path: "/no/such/dir".into(),
        max_used_percent: Some(90.0),
        min_free_bytes: None,
    };
    let reason = check(&nowhere).await.unwrap_err();
    assert!(
        reason.starts_with("cannot read the filesystem of /no/such/dir"),
        "{reason}"
    );
}

#[tokio::test]
async fn memory_trips_at_a_tiny_threshold_and_passes_at_a_hundred_percent() {
    let reason = check(&Probe::Memory { max_used_percent: 0.1 }).await.unwrap_err();
    assert!(
        reason.starts_with("memory ") && reason.ends_with("% used > 0.1%"),
        "{reason}"
    );
    let detail = check(&Probe::Memory {
        max_used_percent: 100.0,
    })
    .await
    .unwrap();
    assert!(
        detail.contains("% used, ") && detail.ends_with(" available"),
        "{detail}"
    );
}

#[tokio::test]
async fn cpu_busy_share_trips_on_the_second_run_while_a_thread_spins() {
    let spin = Arc::new(AtomicBool::new(true));
    let spinner = {
        let spin = spin.clone();
        std::thread::spawn(move || {
            let mut n: u64 = 0;
            while spin.load(Ordering::Relaxed) {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        })
    };
    let tiny = Probe::Cpu {
        max_percent: Some(0.1),
        max_load1: None,
    };
    let mut state = ProbeState::default();

    // The first run only takes the sample.
    assert_eq!(run(&tiny, &mut state, TIMEOUT).await.unwrap(), "cpu first sample taken");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reason = run(&tiny, &mut state, TIMEOUT).await.unwrap_err();
    assert!(
        reason.starts_with("cpu ") && reason.ends_with("% busy > 0.1%"),
        "{reason}"
    );

    // A ceiling nothing reaches passes, and so does a huge load ceiling.
    let generous = Probe::Cpu {
        max_percent: Some(100.0),
        max_load1: Some(10_000.0),
    };
    let mut state = ProbeState::default();
    run(&generous, &mut state, TIMEOUT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let detail = run(&generous, &mut state, TIMEOUT).await.unwrap();
    assert!(detail.contains("% busy, load average "), "{detail}");

    spin.store(false, Ordering::Relaxed);
    spinner.join().unwrap();
}

#[tokio::test]
async fn systemd_says_why_it_cannot_check_or_that_the_unit_is_not_active() {
    let probe = Probe::Systemd {
        unit: format!("tandem-probe-{}.service", unique()),
    };
    let reason = check(&probe).await.unwrap_err();
    let systemd_runs = Path::new("/run/systemd/system").is_dir();
    let has_systemctl = Command::new("systemctl").arg("--version").output().is_ok();
    if !systemd_runs {
        assert!(
            reason.starts_with("systemd is not running on this host (no /run/systemd/system)"),
            "{reason}"
        );
    } else if !has_systemctl {
        assert!(reason.starts_with("systemctl not found on this host"), "{reason}");
    } else {
        // A unit nobody installed is inactive.
        assert!(reason.ends_with(" is inactive"), "{reason}");
    }
}
