//! The web console, end to end: every node serves it, and in headless Chromium (driven by
//! chromedriver over the W3C WebDriver protocol) it shows who is active and who leads, turns
//! maintenance on and off, shows a forced failover's report before any confirmation, carries
//! out a switchover and a confirmed forced failover, shows the API's refusals, and sends the
//! admin token typed into it.

use std::io::BufRead;
use std::io::BufReader;
use std::io::Read;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use serde_json::json;
use serde_json::Value;
use tandem_tests::other_data_node;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The console's first load must stay under this (docs/benchmarks.md).
const PAGE_MAX_BYTES: usize = 300 * 1024;
/// How long the page may take to show a change the API already shows (it refreshes every second).
const PAGE_WAIT: Duration = Duration::from_secs(15);

/// The value of header `name` in an answer's head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One HTTP/1.1 exchange (`Connection: close`, JSON body if any): status, head, body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))?;
    let mut out = Vec::new();
    match header(&head, "content-length").and_then(|v| v.parse().ok()) {
        Some(n) => {
            out.resize(n, 0);
            r.read_exact(&mut out)?;
        }
        None => {
            r.read_to_end(&mut out)?;
        }
    }
    Ok((status, head, out))
}

/// Headless Chromium driven by chromedriver; both (and every process they started) are killed
/// on drop.
struct Browser {
    driver: Child,
    addr: String,
    session: Option<String>,
    dir: tempfile::TempDir,
}

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Fails the test (never skips it) when Chromium or chromedriver is not installed.
fn require_browser() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the console test drives headless Chromium through chromedriver; run tests/run.sh, which installs {package} (or, as root: apt-get install chromium chromium-driver)"
        );
    }
}

impl Browser {
    fn start() -> Browser {
        require_browser();
        let dir = tempfile::tempdir().expect("temp dir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("browser home");
        let port = tandem_tests::free_port("127.0.0.1");
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).expect("chromedriver log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // Chromium keeps its crash database and caches under HOME: a home of its own.
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            // A process group of its own, so that drop ends Chromium's processes with it.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut b = Browser {
            driver,
            addr: format!("127.0.0.1:{port}"),
            session: None,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http(&b.addr, "GET", "/status", None, Duration::from_secs(2))
                .ok()
                .and_then(|(_, _, body)| serde_json::from_slice::<Value>(&body).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            if let Ok(Some(status)) = b.driver.try_wait() {
                panic!("chromedriver exited at start ({status}):\n{}", b.log());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within 20 s:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = b.dir.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = b.call("POST", "/session", Some(&caps));
        b.session = Some(v["sessionId"].as_str().expect("a session id").to_string());
        b
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// One WebDriver command; its `value`, or a panic naming the WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, _, out) = http(&self.addr, method, path, body, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let v: Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {}", String::from_utf8_lossy(&out)));
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let s = self.session.as_deref().expect("a session");
        self.call(method, &format!("/session/{s}{path}"), body)
    }

    fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The element `css` selects, if there is one now.
    fn find(&self, css: &str) -> Option<String> {
        let s = self.session.as_deref().expect("a session");
        let body = json!({"using": "css selector", "value": css});
        let (status, _, out) = http(
            &self.addr,
            "POST",
            &format!("/session/{s}/element"),
            Some(&body),
            Duration::from_secs(60),
        )
        .expect("WebDriver find element");
        let v: Value = serde_json::from_slice(&out).expect("WebDriver answer");
        match status {
            200 => Some(
                v["value"][ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("find {css}: no element reference in {v}"))
                    .to_string(),
            ),
            404 if v["value"]["error"] == "no such element" => None,
            _ => panic!("find {css}: {v}"),
        }
    }

    fn element(&self, css: &str) -> String {
        self.find(css).unwrap_or_else(|| panic!("the console has no {css}"))
    }

    /// The rendered text of `css` (empty while hidden).
    fn text(&self, css: &str) -> String {
        let e = self.element(css);
        self.session_call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let e = self.element(css);
        self.session_call("GET", &format!("/element/{e}/attribute/{name}"), None)
            .as_str()
            .map(str::to_string)
    }

    fn displayed(&self, css: &str) -> bool {
        let e = self.element(css);
        self.session_call("GET", &format!("/element/{e}/displayed"), None) == true
    }

    fn enabled(&self, css: &str) -> bool {
        let e = self.element(css);
        self.session_call("GET", &format!("/element/{e}/enabled"), None) == true
    }

    /// Click `css` as a user would, once it is enabled.
    fn click(&self, css: &str) {
        self.wait(&format!("{css} enabled"), PAGE_WAIT, |b| b.enabled(css).then_some(()));
        let e = self.element(css);
        self.session_call("POST", &format!("/element/{e}/click"), Some(&json!({})));
    }

    /// Type `text` into the field `css`, as a user would.
    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.session_call("POST", &format!("/element/{e}/value"), Some(&json!({ "text": text })));
    }

    /// The current value of the field `css`.
    fn value(&self, css: &str) -> String {
        let e = self.element(css);
        self.session_call("GET", &format!("/element/{e}/property/value"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The `data-node` of every row of the nodes table.
    fn node_rows(&self) -> Vec<String> {
        let script = "return Array.from(document.querySelectorAll('#nodes tr[data-node]')).map(r => r.dataset.node)";
        let v = self.session_call("POST", "/execute/sync", Some(&json!({"script": script, "args": []})));
        v.as_array()
            .map(|a| a.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// Poll `f` until it gives a value; fails the test naming `what` after `within`.
    fn wait<T>(&self, what: &str, within: Duration, mut f: impl FnMut(&Browser) -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the console did not show {what} within {within:?}; #message: {:?}",
                self.find("#message").map(|_| self.text("#message"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the text of `css` contains `needle`.
    fn wait_text(&self, css: &str, needle: &str) -> String {
        self.wait(&format!("{needle:?} in {css}"), PAGE_WAIT, |b| {
            Some(b.text(css)).filter(|t| t.contains(needle))
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            // Closes Chromium cleanly; the kill below ends whatever is left.
            let _ = http(
                &self.addr,
                "DELETE",
                &format!("/session/{s}"),
                None,
                Duration::from_secs(10),
            );
        }
        let pid = rustix::process::Pid::from_child(&self.driver);
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if std::thread::panicking() {
            eprintln!("---- chromedriver log ----\n{}", self.log());
        }
    }
}

const ADMIN_TOKEN: &str = "console-admin-token-0123456789";
const READ_TOKEN: &str = "console-read-token-0123456789";

/// The harness's own API calls carry the admin token (a cluster without tokens ignores it).
/// Every test here sets it first, before any client is made; it is set once per process.
fn harness_uses_admin_token() {
    tandem_client::set_default_access(tandem_client::Access {
        token: Some(ADMIN_TOKEN.into()),
        ca_file: None,
    });
}

/// Wait until the API names an active and a leader (asking the witness).
fn wait_active_and_leader(cluster: &Cluster) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let (Some(a), Some(l)) = api_view(cluster, "w") {
            return (a, l);
        }
        assert!(Instant::now() < deadline, "no node became active");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The active and the leader as the API reports them (asking `node`).
fn api_view(cluster: &Cluster, node: &str) -> (Option<String>, Option<String>) {
    let Ok(view) = cluster.block_on(cluster.client(node).cluster()) else {
        return (None, None);
    };
    let statuses: Vec<_> = view.nodes.iter().filter_map(|n| n.status.as_ref()).collect();
    let term = statuses.iter().map(|s| s.term).max();
    let leaders: Vec<_> = statuses
        .iter()
        .filter(|s| s.raft_state == "leader" && Some(s.term) == term)
        .collect();
    let leader = match leaders.as_slice() {
        [l] => Some(l.name.clone()),
        _ => None,
    };
    (view.active, leader)
}

#[test]
fn every_node_serves_the_console_and_it_drives_a_switchover_in_chromium() {
    require_browser();
    harness_uses_admin_token();
    let started = Instant::now();
    // A script resource on the data nodes, so a data node's resources differ from the witness's.
    let cluster = Cluster::start_initialized(ClusterOptions {
        data_config: "[[resources]]\ntype = \"script\"\nname = \"svc\"\nacquire = 'true'\nrelease = 'true'\n".into(),
        ..Default::default()
    })
    .unwrap();

    // Every member serves the page, the witness too, at / and /console.
    for n in &cluster.nodes {
        for path in ["/", "/console"] {
            let (status, head, body) = http(&n.admin_addr(), "GET", path, None, Duration::from_secs(5)).unwrap();
            assert_eq!(status, 200, "{} {path}: {head}", n.name);
            assert_eq!(
                header(&head, "content-type"),
                Some("text/html; charset=utf-8"),
                "{head}"
            );
            assert_eq!(header(&head, "cache-control"), Some("no-cache"), "{head}");
            assert!(
                body.len() <= PAGE_MAX_BYTES,
                "{} {path}: {} bytes, more than {PAGE_MAX_BYTES}",
                n.name,
                body.len()
            );
            assert!(String::from_utf8_lossy(&body).contains("id=\"active-node\""));
        }
    }

    // The active and the leader as the API reports them.
    let (active, leader) = wait_active_and_leader(&cluster);
    let standby = other_data_node(&active).to_string();

    let browser = Browser::start();

    // The witness's console shows the same cluster as the API: all three members, the active,
    // the leader.
    browser.goto(&format!("http://{}/", cluster.spec("w").admin_addr()));
    browser.wait_text("#active-node", &active);
    browser.wait_text("#leader-node", &leader);
    let rows = browser.wait("a row per member in #nodes", PAGE_WAIT, |b| {
        let mut rows = b.node_rows();
        rows.sort();
        (rows == ["a", "b", "w"]).then_some(rows)
    });
    assert_eq!(rows, ["a", "b", "w"]);

    // The witness holds nothing; its console shows the active's resources, passed on over the
    // peer port, and any member's when picked.
    browser.wait("the active's resources on the witness's console", PAGE_WAIT, |b| {
        let r = b.text("#resources");
        (b.text(".view-name") == active && r.contains("svc") && r.contains("acquire svc")).then_some(())
    });
    browser.click("#view-node option[value=\"w\"]");
    browser.wait("the witness's own resources", PAGE_WAIT, |b| {
        let r = b.text("#resources");
        (b.text(".view-name") == "w" && r.contains("Scripts") && !r.contains("svc")).then_some(())
    });
    browser.click(&format!("#view-node option[value=\"{standby}\"]"));
    browser.wait("the standby's resources", PAGE_WAIT, |b| {
        let r = b.text("#resources");
        (b.text(".view-name") == standby && r.contains("svc") && !r.contains("acquire svc")).then_some(())
    });

    // From here on, the active's own console (switchover and failover are sent to the active).
    browser.goto(&format!("http://{}/", cluster.spec(&active).admin_addr()));
    browser.wait("the active's name in #active-node", PAGE_WAIT, |b| {
        (b.text("#active-node") == active).then_some(())
    });
    assert_eq!(browser.text("#active-node"), active);

    // Maintenance on, then off: the replicated policy follows, and so does the button.
    for on in [true, false] {
        browser.wait("the maintenance state on its button", PAGE_WAIT, |b| {
            b.attribute("#btn-maintenance", "data-state")
                .filter(|s| s == if on { "off" } else { "on" })
        });
        browser.click("#btn-maintenance");
        cluster
            .wait_for(
                "maintenance changed through the console",
                Duration::from_secs(10),
                |s| s.reachable().count() == 3 && s.reachable().all(|n| n.policies.maintenance == on),
            )
            .unwrap();
        browser.wait("maintenance's new state on its button", PAGE_WAIT, |b| {
            b.attribute("#btn-maintenance", "data-state")
                .filter(|s| s == if on { "on" } else { "off" })
        });
    }

    // A forced failover first shows what the standby lacks, and changes nothing until the
    // confirm button is clicked; cancelling leaves the active in place.
    assert!(
        !browser.displayed("#btn-failover-confirm"),
        "confirm shown before any report"
    );
    browser.click("#btn-failover");
    let report = browser.wait_text("#failover-report", &format!("Forced failover {active} → {standby}"));
    assert!(report.contains("committed records"), "{report}");
    assert!(report.contains("Nothing changed"), "{report}");
    browser.wait("the confirm button", PAGE_WAIT, |b| {
        (b.displayed("#btn-failover-confirm") && b.enabled("#btn-failover-confirm")).then_some(())
    });
    assert_eq!(api_view(&cluster, "w").0.as_deref(), Some(active.as_str()));
    browser.click("#btn-failover-cancel");
    browser.wait("the confirm button gone", PAGE_WAIT, |b| {
        (!b.displayed("#btn-failover-confirm")).then_some(())
    });
    assert_eq!(api_view(&cluster, "w").0.as_deref(), Some(active.as_str()));

    // Switchover: the API shows the standby active, and so does the page.
    let switched = Instant::now();
    browser.click("#btn-switchover");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let api_active = api_view(&cluster, "w").0;
        let page_active = browser.text("#active-node");
        if api_active.as_deref() == Some(standby.as_str()) && page_active == standby {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the switchover click: the API shows {api_active:?} active, the page {page_active:?}, expected {standby}; #message: {}",
            browser.text("#message")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = switched.elapsed();
    browser.wait_text("#message", "Switchover done");
    // The event timeline shows the operator's switchover.
    browser.wait_text("#events", &format!("switchover: {active} -> {standby}"));

    // This console's node is no longer the active: a switchover clicked here is passed on to
    // the active, and the service comes back.
    browser.click("#btn-switchover");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(api_view(&cluster, "w").0.as_deref() == Some(active.as_str()) && browser.text("#active-node") == active) {
        assert!(
            Instant::now() < deadline,
            "the switchover sent to the standby's console did not make {active} active; #message: {}",
            browser.text("#message")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.wait_text("#events", &format!("switchover: {standby} -> {active}"));

    // A confirmed forced failover from the witness's console (passed on to the active) hands
    // the service over.
    browser.goto(&format!("http://{}/", cluster.spec("w").admin_addr()));
    browser.wait_text("#active-node", &active);
    browser.click("#btn-failover");
    browser.wait_text("#failover-report", &format!("Forced failover {active} → {standby}"));
    browser.click("#btn-failover-confirm");
    let deadline = Instant::now() + Duration::from_secs(30);
    while api_view(&cluster, "w").0.as_deref() != Some(standby.as_str()) {
        assert!(
            Instant::now() < deadline,
            "the confirmed forced failover did not make {standby} active; #message: {}",
            browser.text("#message")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.wait_text("#failover-report", "Done:");
    browser.wait_text("#message", &format!("Forced failover: {standby} leads"));
    browser.wait_text("#events", &format!("failover: forced {active} -> {standby}"));

    eprintln!(
        "console test: switchover seen by the page {:?} after the click; whole test {:?}",
        took,
        started.elapsed()
    );
}

#[test]
fn the_console_asks_for_a_token_and_sends_the_one_typed() {
    require_browser();
    harness_uses_admin_token();
    let tokens = tempfile::tempdir().unwrap();
    let d = tokens.path();
    std::fs::write(d.join("admin.token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    std::fs::write(d.join("read.token"), format!("{READ_TOKEN}\n")).unwrap();
    let extra = format!(
        "[[admin_tokens]]\nname = \"ops\"\nscope = \"admin\"\ntoken_file = \"{d}/admin.token\"\n\n\
         [[admin_tokens]]\nname = \"viewer\"\nscope = \"read\"\ntoken_file = \"{d}/read.token\"\n",
        d = d.display()
    );
    let cluster = Cluster::start_initialized(ClusterOptions {
        extra_config: extra,
        ..Default::default()
    })
    .unwrap();
    let (active, _) = wait_active_and_leader(&cluster);
    let addr = cluster.spec(&active).admin_addr();

    // The page itself needs no token; the API behind it does.
    let (status, _, _) = http(&addr, "GET", "/", None, Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200);
    let (status, _, _) = http(&addr, "GET", "/v1/status", None, Duration::from_secs(5)).unwrap();
    assert_eq!(status, 401);

    let browser = Browser::start();
    browser.goto(&format!("http://{addr}/"));
    browser.wait_text("#message", "token required");

    // A read token: the page shows the cluster, but changing a policy is not allowed.
    browser.type_into("#token", READ_TOKEN);
    browser.wait("the active's name in #active-node", PAGE_WAIT, |b| {
        (b.text("#active-node") == active).then_some(())
    });
    browser.click("#btn-maintenance");
    let message = browser.wait_text("#message", "not allowed");
    assert!(message.contains("forbidden"), "{message}");
    assert!(!cluster.status(&active).unwrap().policies.maintenance);

    // An admin token may.
    browser.click("#btn-token-clear");
    assert_eq!(browser.value("#token"), "");
    browser.type_into("#token", ADMIN_TOKEN);
    browser.click("#btn-maintenance");
    cluster
        .wait_for("maintenance on through the console", Duration::from_secs(10), |s| {
            s.reachable().count() == 3 && s.reachable().all(|n| n.policies.maintenance)
        })
        .unwrap();
    browser.wait_text("#message", "Maintenance is on");

    // The token stays with the tab: a reload needs no typing.
    browser.goto(&format!("http://{addr}/"));
    assert_eq!(browser.value("#token"), ADMIN_TOKEN);
    browser.wait("the active's name after a reload", PAGE_WAIT, |b| {
        (b.text("#active-node") == active).then_some(())
    });
    assert_eq!(browser.text("#message"), "");
}
