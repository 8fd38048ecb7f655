//! TLS and tokens on a real three-process cluster: mutual TLS on the peer port (a client
//! without the cluster CA's certificate is refused), HTTPS on the admin API, bearer tokens with
//! read and admin scopes, the audit trail naming the token, and the plain health port.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tandem_client::api::SwitchoverRequest;
use tandem_client::Access;
use tandem_client::Client;
use tandem_tests::http_request;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `<ca>.crt`/`.key` and a certificate `<name>.crt`/`.key` it signed, valid for 127.0.0.1
/// as server and client.
fn make_ca_and_cert(dir: &Path, ca: &str, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// `openssl s_client` to `addr` with `extra` arguments; what it printed, with an HTTP request
/// sent once connected.
fn s_client(addr: &str, ca: &Path, extra: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-CAfile"])
        .arg(ca)
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let request = format!("POST /raft/vote HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = std::io::Write::write_all(child.stdin.as_mut().unwrap(), request.as_bytes());
    std::thread::sleep(Duration::from_millis(500));
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// The active data node as the (HTTPS) status API says, waiting up to `within` for one other
/// than `not`.
fn wait_active(cluster: &Cluster, not: Option<&str>, within: Duration) -> &'static str {
    let deadline = std::time::Instant::now() + within;
    loop {
        for name in ["a", "b"] {
            if Some(name) != not && cluster.status(name).is_ok_and(|s| s.service == "active") {
                return name;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no node became active within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tls_and_tokens_guard_the_peer_port_and_the_admin_api() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    make_ca_and_cert(d, "ca", "node");
    make_ca_and_cert(d, "rogue-ca", "rogue");
    std::fs::write(d.join("admin.token"), "admin-token-0123456789abcdef\n").unwrap();
    std::fs::write(d.join("read.token"), "read-token-0123456789abcdef\n").unwrap();
    let extra = format!(
        "health_listen = \"127.0.0.1:@HEALTH_PORT@\"\n\n[tls]\nca_file = \"{d}/ca.crt\"\ncert_file = \"{d}/node.crt\"\nkey_file = \"{d}/node.key\"\n\n\
         [[admin_tokens]]\nname = \"ops\"\nscope = \"admin\"\ntoken_file = \"{d}/admin.token\"\n\n\
         [[admin_tokens]]\nname = \"viewer\"\nscope = \"read\"\ntoken_file = \"{d}/read.token\"\n",
        d = d.display()
    );
    let admin = Access {
        token: Some("admin-token-0123456789abcdef".into()),
        ca_file: Some(d.join("ca.crt")),
    };
    // The harness's own calls (and tandemctl's, through the same setting) use the admin token
    // over HTTPS.
    tandem_client::set_default_access(admin.clone());
    let cluster = Cluster::start_initialized(ClusterOptions {
        extra_config: extra,
        ..Default::default()
    })
    .expect("a cluster whose peers speak mutual TLS elects a leader");
    let active = wait_active(&cluster, None, Duration::from_secs(20));
    let a = cluster.spec(active).clone();

    // The admin API speaks only TLS: plain HTTP gets no HTTP answer.
    assert!(
        http_request(&a.admin_addr(), "GET", "/v1/status", &[], b"").is_err(),
        "plain HTTP must not be answered on a TLS admin port"
    );
    // ... and trusts nobody's CA but the one given: a client with another CA cannot verify it.
    let wrong_ca = Access {
        token: admin.token.clone(),
        ca_file: Some(d.join("rogue-ca.crt")),
    };
    let err = cluster
        .block_on(Client::with_access(a.admin_addr(), &wrong_ca).status())
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");

    // Tokens: none, unknown, read scope, admin scope.
    let with = |token: Option<&str>| {
        Client::with_access(
            a.admin_addr(),
            &Access {
                token: token.map(str::to_string),
                ca_file: Some(d.join("ca.crt")),
            },
        )
    };
    let err = cluster.block_on(with(None).status()).unwrap_err();
    assert_eq!(err.code(), Some("token_required"), "{err}");
    assert!(
        matches!(err, tandem_client::ClientError::Api { status: 401, .. }),
        "{err}"
    );
    let err = cluster
        .block_on(with(Some("not-a-token-0123456789")).status())
        .unwrap_err();
    assert_eq!(err.code(), Some("bad_token"), "{err}");
    let viewer = with(Some("read-token-0123456789abcdef"));
    let status = cluster.block_on(viewer.status()).expect("a read token reads");
    assert_eq!(status.name, active);
    let other = tandem_tests::other_data_node(active);
    let err = cluster
        .block_on(viewer.switchover(&SwitchoverRequest { to: Some(other.into()) }))
        .unwrap_err();
    assert_eq!(err.code(), Some("forbidden"), "{err}");
    assert!(
        matches!(err, tandem_client::ClientError::Api { status: 403, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("viewer") && err.to_string().contains("admin scope"),
        "{err}"
    );
    assert_eq!(
        wait_active(&cluster, None, Duration::ZERO),
        active,
        "a refused call changes nothing"
    );

    // The admin token may; the audit trail names it.
    let ops = with(admin.token.as_deref());
    cluster
        .block_on(ops.switchover(&SwitchoverRequest { to: Some(other.into()) }))
        .expect("an admin token may switch over");
    wait_active(&cluster, Some(active), Duration::from_secs(30));
    let audit = cluster.block_on(ops.audit()).unwrap();
    let last = audit
        .iter()
        .rev()
        .find(|e| e.action == "switchover")
        .expect("the switchover is audited");
    assert!(last.actor.starts_with("token:ops@"), "{:?}", last.actor);
    // Every call that could change something is in the node's log (target tandem::audit),
    // refused ones too, with the caller.
    let log = std::fs::read_to_string(cluster.log_path(active)).unwrap();
    let audit_lines: Vec<&str> = log.lines().filter(|l| l.contains("tandem::audit")).collect();
    let has = |words: &[&str]| audit_lines.iter().any(|l| words.iter().all(|w| l.contains(w)));
    assert!(!log.contains('\u{1b}'), "no terminal colours in a log file");
    assert!(
        has(&["admin call", "caller=\"ops\"", "/v1/switchover", "status=200"]),
        "{audit_lines:#?}"
    );
    assert!(
        has(&["beyond the token's scope", "viewer", "/v1/switchover"]),
        "{audit_lines:#?}"
    );
    assert!(has(&["without a token refused", "/v1/status"]), "{audit_lines:#?}");
    assert!(has(&["unknown token refused"]), "{audit_lines:#?}");

    // The health port: plain HTTP, no token, health routes only.
    let health = format!("127.0.0.1:{}", cluster.spec(other).health_port);
    let (code, body) = http_request(&health, "GET", "/health/active", &[], b"").unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let standby_health = format!("127.0.0.1:{}", a.health_port);
    let (code, _) = http_request(&standby_health, "GET", "/health/active", &[], b"").unwrap();
    assert_eq!(code, 503);
    let (code, _) = http_request(&health, "GET", "/v1/status", &[], b"").unwrap();
    assert_eq!(code, 404, "the health port serves nothing else");

    // The peer port asks for a certificate of the cluster's CA: none, or another CA's, is
    // refused during the handshake, so no request reaches Raft.
    let peer = a.peer_addr();
    let with_cert = |name: &str| {
        let (cert, key) = (d.join(format!("{name}.crt")), d.join(format!("{name}.key")));
        s_client(&peer, &d.join("ca.crt"), &["-cert", s(&cert), "-key", s(&key)])
    };
    let no_cert = s_client(&peer, &d.join("ca.crt"), &[]);
    assert!(
        !no_cert.contains("HTTP/1.1 "),
        "answered without a client certificate:\n{no_cert}"
    );
    assert!(no_cert.contains("alert"), "{no_cert}");
    let rogue = with_cert("rogue");
    assert!(
        !rogue.contains("HTTP/1.1 "),
        "answered a certificate of another CA:\n{rogue}"
    );
    assert!(rogue.contains("alert"), "{rogue}");
    // With the cluster's certificate the handshake succeeds and the peer API answers (and
    // still wants the cluster secret).
    let good = with_cert("node");
    assert!(good.contains("HTTP/1.1 401") || good.contains("HTTP/1.1 403"), "{good}");

    // The cluster still works after all this: writes commit.
    cluster
        .write(7, "after the checks")
        .expect("write through the new active");
}

#[test]
fn config_check_names_a_certificate_from_another_ca() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    make_ca_and_cert(d, "ca", "node");
    make_ca_and_cert(d, "rogue-ca", "rogue");
    let base =
        "node_id = 1\ndata_dir = \"x\"\npeer_listen = \"127.0.0.1:7001\"\ncluster_secret = \"0123456789abcdef0123\"\n";
    let members = "[[members]]\nid = 1\nname = \"a\"\nrole = \"data\"\npeer_addr = \"127.0.0.1:7001\"\nadmin_addr = \"127.0.0.1:7101\"\n\
                   [[members]]\nid = 2\nname = \"b\"\nrole = \"data\"\npeer_addr = \"127.0.0.1:7002\"\nadmin_addr = \"127.0.0.1:7102\"\n\
                   [[members]]\nid = 3\nname = \"w\"\nrole = \"witness\"\npeer_addr = \"127.0.0.1:7003\"\nadmin_addr = \"127.0.0.1:7103\"\n";
    let check = |cert: &str, key: &str| {
        let path = d.join("node.toml");
        std::fs::write(
            &path,
            format!("{base}\n[tls]\nca_file = \"ca.crt\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\n{members}"),
        )
        .unwrap();
        let out = tandem_tests::tandem()
            .args(["config", "check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = check("node.crt", "node.key");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("127.0.0.1:7480") && text.contains("mutual TLS"), "{text}");
    let (code, text) = check("rogue.crt", "rogue.key");
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("tls.cert_file") && text.contains("does not verify"),
        "{text}"
    );
    let (code, text) = check("node.crt", "rogue.key");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("tls.key_file"), "{text}");
    let (code, text) = check("node.crt", "missing.key");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("tls.key_file") && text.contains("cannot read"), "{text}");
}
