//! The install path for three machines: `deploy/install.sh bundle` makes the cluster CA, the
//! secret, the admin tokens and one archive per node; `install.sh node` installs an archive
//! under a root directory of its own. Here the three "machines" are three roots on loopback.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Output;
use std::time::SystemTime;

const NODES: [(u64, &str, &str); 3] = [(1, "a", "data"), (2, "b", "data"), (3, "w", "witness")];

/// What every node's archive holds, and nothing else (sorted).
const BUNDLE_FILES: [&str; 7] = [
    "cluster.secret",
    "tandem.toml",
    "tls/ca.crt",
    "tls/node.crt",
    "tls/node.key",
    "tokens/admin.token",
    "tokens/read.token",
];

/// Readable by root only, once installed.
const SECRET_FILES: [&str; 4] = [
    "cluster.secret",
    "tls/node.key",
    "tokens/admin.token",
    "tokens/read.token",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn install_sh(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .args(args)
        .output()
        .expect("run deploy/install.sh")
}

/// Stdout of a run that must have succeeded.
fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref().to_owned();
    Command::new(&program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program:?}: {e}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// The `--node` arguments of a loopback cluster: peer and admin ports for all three, a health
/// listener for each data node.
fn node_args() -> Vec<String> {
    let ports: Vec<u16> = (0..8).map(|_| tandem_tests::free_port("127.0.0.1")).collect();
    let mut args = Vec::new();
    for (i, (id, name, role)) in NODES.into_iter().enumerate() {
        let mut spec = format!(
            "{id}:{name}:{role}:127.0.0.1:{}:127.0.0.1:{}",
            ports[2 * i],
            ports[2 * i + 1]
        );
        if role == "data" {
            spec += &format!(":127.0.0.1:{}", ports[6 + i]);
        }
        args.push("--node".to_string());
        args.push(spec);
    }
    args
}

/// `install.sh node` of `archive` under `root`, without systemd, binaries from `bin`.
fn install_node(archive: &Path, root: &Path, bin: &Path) -> Output {
    install_sh(&[
        "node",
        "--bundle",
        s(archive),
        "--root",
        s(root),
        "--no-systemd",
        "--bin-dir",
        s(bin),
    ])
}

fn bundle(out: &Path, nodes: &[String]) -> Output {
    let mut args = vec!["bundle", "--out", s(out), "--cluster-name", "install-test"];
    args.extend(nodes.iter().map(String::as_str));
    install_sh(&args)
}

/// The files under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = snapshot(dir)
        .into_iter()
        .filter(|(path, _)| !path.is_dir())
        .map(|(path, _)| path.strip_prefix(dir).unwrap().to_str().unwrap().to_string())
        .collect();
    files.sort();
    files
}

/// Every entry under `dir` (hidden ones too) with its mode, modification time and content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, SystemTime, Vec<u8>)> {
    let mut all = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_dir() {
                todo.push(path.clone());
                Vec::new()
            } else {
                std::fs::read(&path).unwrap()
            };
            all.insert(path, (meta.mode() & 0o7777, meta.modified().unwrap(), content));
        }
    }
    all
}

fn archive_listing(archive: &Path) -> Vec<String> {
    let listing = ok(run("tar", &["-tzf", s(archive)]), "tar -tzf");
    let mut files: Vec<String> = listing
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .filter(|l| !l.is_empty() && !l.ends_with('/'))
        .collect();
    files.sort();
    files
}

#[test]
fn bundle_and_node_install_three_nodes_whose_configs_pass_the_check() {
    let bin = tandem_tests::bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    let nodes = node_args();
    let as_root = rustix::process::geteuid().is_root();

    // On the workstation: the CA, the secret, the tokens and one archive per node.
    let said = ok(bundle(&out, &nodes), "install.sh bundle");
    assert!(said.contains("tandem init --config /etc/tandem/tandem.toml"), "{said}");
    for secret in ["ca.key", "cluster.secret", "admin.token", "read.token"] {
        assert_eq!(mode(&out.join(secret)), 0o600, "{secret}");
    }
    let cluster_secret = read(&out.join("cluster.secret"));
    let admin_token = read(&out.join("admin.token"));
    let read_token = read(&out.join("read.token"));
    for value in [&cluster_secret, &admin_token, &read_token] {
        let value = value.trim();
        assert!(
            value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()),
            "32 random bytes in hex: {value:?}"
        );
    }
    assert!(cluster_secret != admin_token && admin_token != read_token);

    // Each archive holds what its node needs, and never the CA key.
    for (_, name, _) in NODES {
        let archive = out.join(format!("{name}.tar.gz"));
        assert_eq!(mode(&archive), 0o600, "{name}.tar.gz holds secrets");
        assert_eq!(archive_listing(&archive), BUNDLE_FILES, "{name}.tar.gz");
    }

    // On each "machine": install the archive under a root of its own.
    let mut keys = Vec::new();
    for (id, name, role) in NODES {
        let root = tmp.path().join(name);
        let archive = out.join(format!("{name}.tar.gz"));
        let said = ok(install_node(&archive, &root, &bin), &format!("install.sh node {name}"));
        assert!(said.contains("tandem init --config"), "{said}");

        // Binaries, unit, data directory.
        for b in ["tandem", "tandemctl"] {
            let installed = root.join("usr/local/bin").join(b);
            assert_eq!(mode(&installed), 0o755, "{b}");
            assert_eq!(
                std::fs::metadata(&installed).unwrap().len(),
                std::fs::metadata(bin.join(b)).unwrap().len(),
                "{b} is the built one"
            );
        }
        assert_eq!(
            read(&root.join("etc/systemd/system/tandem.service")),
            read(&repo().join("deploy/systemd/tandem.service"))
        );
        let data_dir = root.join("var/lib/tandem");
        assert!(data_dir.is_dir());
        assert_eq!(mode(&data_dir), 0o700);

        // /etc/tandem: the archive's files, secrets and the key readable by root only.
        let etc = root.join("etc/tandem");
        assert_eq!(files_under(&etc), BUNDLE_FILES, "{name}: /etc/tandem");
        assert_eq!(mode(&etc), 0o750);
        assert_eq!(mode(&etc.join("tokens")), 0o700);
        for secret in SECRET_FILES {
            let path = etc.join(secret);
            assert_eq!(mode(&path), 0o600, "{name}: {secret}");
            if as_root {
                assert_eq!(
                    std::fs::metadata(&path).unwrap().uid(),
                    0,
                    "{name}: {secret} owned by root"
                );
            }
        }
        assert_eq!(read(&etc.join("cluster.secret")), cluster_secret);
        assert_eq!(read(&etc.join("tokens/admin.token")), admin_token);
        assert_eq!(read(&etc.join("tokens/read.token")), read_token);
        assert_eq!(read(&etc.join("tls/ca.crt")), read(&out.join("ca.crt")));

        // The config: this node, under its root, with TLS, tokens and the three members.
        let config = read(&etc.join("tandem.toml"));
        let root_str = s(&root);
        for line in [
            format!("node_id = {id}"),
            format!("data_dir = \"{root_str}/var/lib/tandem\""),
            format!("cluster_secret_file = \"{root_str}/etc/tandem/cluster.secret\""),
            format!("ca_file = \"{root_str}/etc/tandem/tls/ca.crt\""),
            format!("cert_file = \"{root_str}/etc/tandem/tls/node.crt\""),
            format!("key_file = \"{root_str}/etc/tandem/tls/node.key\""),
            format!("token_file = \"{root_str}/etc/tandem/tokens/admin.token\""),
            format!("token_file = \"{root_str}/etc/tandem/tokens/read.token\""),
            "[tls]".to_string(),
            "admin = true".to_string(),
            "cluster_name = \"install-test\"".to_string(),
        ] {
            assert!(config.lines().any(|l| l == line), "{name}: no `{line}` in\n{config}");
        }
        assert!(config.contains("admin_listen = \"127.0.0.1:"), "{config}");
        assert_eq!(config.matches("[[admin_tokens]]").count(), 2, "{config}");
        assert_eq!(config.matches("[[members]]").count(), 3, "{config}");
        assert_eq!(
            config.contains("health_listen = \"127.0.0.1:"),
            role == "data",
            "health_listen on the data nodes only:\n{config}"
        );

        // The certificate: signed by the cluster CA, for both ends of mutual TLS, naming loopback,
        // and matching the node's key.
        let ca = s(&etc.join("tls/ca.crt")).to_string();
        let cert = s(&etc.join("tls/node.crt")).to_string();
        let key = s(&etc.join("tls/node.key")).to_string();
        for purpose in ["sslserver", "sslclient"] {
            let verified = ok(
                run("openssl", &["verify", "-CAfile", &ca, "-purpose", purpose, &cert]),
                &format!("openssl verify -purpose {purpose} ({name})"),
            );
            assert!(verified.trim_end().ends_with(": OK"), "{verified}");
        }
        let sans = ok(
            run("openssl", &["x509", "-in", &cert, "-noout", "-ext", "subjectAltName"]),
            "openssl x509 -ext",
        );
        assert!(
            sans.contains("IP Address:127.0.0.1") && sans.contains("DNS:localhost"),
            "{sans}"
        );
        let key_public = ok(run("openssl", &["pkey", "-in", &key, "-pubout"]), "openssl pkey");
        let cert_public = ok(
            run("openssl", &["x509", "-in", &cert, "-noout", "-pubkey"]),
            "openssl x509",
        );
        assert_eq!(key_public, cert_public, "{name}: node.key is node.crt's key");
        keys.push(key_public);

        // tandem itself accepts the installed config.
        let check = run(
            root.join("usr/local/bin/tandem"),
            &["config", "check", "--config", s(&etc.join("tandem.toml"))],
        );
        ok(check, &format!("tandem config check ({name})"));
    }
    assert!(
        keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2],
        "a key per node"
    );

    // Installing again changes nothing; a config changed on the machine is not replaced.
    let root_a = tmp.path().join("a");
    let archive_a = out.join("a.tar.gz");
    let again = [
        "node",
        "--bundle",
        s(&archive_a),
        "--root",
        s(&root_a),
        "--no-systemd",
        "--bin-dir",
        s(&bin),
    ];
    let said = ok(install_sh(&again), "install.sh node a, again");
    assert!(said.contains("nothing changed"), "{said}");
    let config_a = root_a.join("etc/tandem/tandem.toml");
    let edited = format!("{}# edited on the machine\n", read(&config_a));
    std::fs::write(&config_a, &edited).unwrap();
    let refused = install_sh(&again);
    assert!(!refused.status.success(), "a changed config was replaced");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(read(&config_a), edited);
}

#[test]
fn a_second_bundle_into_the_same_directory_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    let nodes = node_args();
    ok(bundle(&out, &nodes), "install.sh bundle");
    let before = snapshot(&out);

    let again = bundle(&out, &nodes);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success(),
        "a second bundle without --force was not refused"
    );
    assert!(
        stderr.contains("already holds a bundle") && stderr.contains("--force"),
        "the refusal names the problem and the fix: {stderr}"
    );
    assert!(snapshot(&out) == before, "the refused run changed the bundle directory");

    // With --force, the CA, secret and tokens stay; the node archives are made again.
    let mut args = vec!["bundle", "--out", s(&out), "--cluster-name", "install-test", "--force"];
    args.extend(nodes.iter().map(String::as_str));
    ok(install_sh(&args), "install.sh bundle --force");
    let after = snapshot(&out);
    for kept in ["ca.crt", "ca.key", "cluster.secret", "admin.token", "read.token"] {
        let path = out.join(kept);
        assert!(after[&path] == before[&path], "--force replaced {kept}");
    }
    assert!(after[&out.join("a.tar.gz")].2 != before[&out.join("a.tar.gz")].2);
}

/// Kills the node processes it holds when dropped.
struct Procs(Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn an_installed_cluster_starts_joins_and_is_reached_with_its_ca_and_tokens() {
    let bin = tandem_tests::bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    let nodes = node_args();
    ok(bundle(&out, &nodes), "install.sh bundle");
    let mut procs = Procs(Vec::new());
    for (_, name, _) in NODES {
        let root = tmp.path().join(name);
        let archive = out.join(format!("{name}.tar.gz"));
        ok(install_node(&archive, &root, &bin), &format!("install.sh node {name}"));
        let log = std::fs::File::create(tmp.path().join(format!("{name}.log"))).unwrap();
        procs.0.push(
            Command::new(root.join("usr/local/bin/tandem"))
                .args(["run", "--config", s(&root.join("etc/tandem/tandem.toml"))])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    let root_a = tmp.path().join("a");
    let etc_a = root_a.join("etc/tandem");
    let config_a = read(&etc_a.join("tandem.toml"));
    // The admin API listens on loopback, at the address the bundle gave node a.
    let admin_a = config_a
        .lines()
        .find_map(|l| l.strip_prefix("admin_listen = \""))
        .map(|l| l.trim_end_matches('"').to_string())
        .expect("admin_listen in the installed config");
    assert!(admin_a.starts_with("127.0.0.1:"), "{admin_a}");
    let logs = || {
        NODES
            .iter()
            .map(|(_, n, _)| {
                format!(
                    "--- {n}:\n{}",
                    std::fs::read_to_string(tmp.path().join(format!("{n}.log"))).unwrap_or_default()
                )
            })
            .collect::<String>()
    };
    // `tandem init` on node a reaches its own TLS admin API with the config's CA and admin
    // token.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let init = run(
            root_a.join("usr/local/bin/tandem"),
            &["init", "--config", s(&etc_a.join("tandem.toml"))],
        );
        if init.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tandem init: {}\n{}",
            String::from_utf8_lossy(&init.stderr),
            logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // tandemctl with the CA and the read token sees all three members (gathered over the peer
    // ports) and one active.
    let ctl = root_a.join("usr/local/bin/tandemctl");
    let (ca, read_token) = (etc_a.join("tls/ca.crt"), etc_a.join("tokens/read.token"));
    // tandemctl on node a with the CA and the read token.
    let ctl_read = |args: &[&str]| {
        let mut all = vec!["--nodes", &admin_a, "--ca-file", s(&ca), "--token-file", s(&read_token)];
        all.extend_from_slice(args);
        run(&ctl, &all)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let out = ctl_read(&["--json", "status"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success()
            && text.matches("\"service\": \"active\"").count() == 1
            && text.matches("\"reachable\": true").count() == 3
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tandemctl status: {text}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(status.contains("\"name\": \"w\""), "{status}");
    // The read token may not change anything.
    let out = ctl_read(&["maintenance", "on"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin scope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the CA, the admin API cannot be verified.
    let out = run(
        &ctl,
        &[
            "--nodes",
            &admin_a,
            "--token-file",
            s(&etc_a.join("tokens/read.token")),
            "status",
        ],
    );
    assert!(!out.status.success());
    // The config snippet for node b, printed from the running cluster, names the same members
    // as b's installed config.
    let out = ctl_read(&["config", "snippet", "--node", "b"]);
    let snippet = ok(out, "tandemctl config snippet");
    let config_b = read(&tmp.path().join("b/etc/tandem/tandem.toml"));
    for line in config_b
        .lines()
        .filter(|l| l.starts_with("peer_addr") || l.starts_with("admin_addr") || l.starts_with("node_id"))
    {
        assert!(snippet.contains(line), "the snippet lacks {line:?}:\n{snippet}");
    }
    drop(procs);
}
