//! `GET /v1/openapi.json` on a running node: every route the node serves is in it (the
//! document and the router come from one registration; here every documented operation is
//! called and reaches its handler, and every path the client library calls is documented),
//! and every schema reference resolves.

use std::collections::BTreeSet;
use std::time::Duration;

use tandem_tests::http_request;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

fn refs(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.insert(x.as_str().unwrap().to_string());
                }
                refs(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn every_route_is_documented_and_every_documented_route_is_served() {
    let cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    cluster.wait_active(None, Duration::from_secs(20));
    let addr = cluster.spec("w").admin_addr();
    let (code, body) = http_request(&addr, "GET", "/v1/openapi.json", &[], b"").unwrap();
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();

    // Every schema reference resolves.
    let mut found = BTreeSet::new();
    refs(&doc, &mut found);
    assert!(found.len() > 20, "{found:?}");
    for r in &found {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
        assert!(doc["components"]["schemas"][name].is_object(), "{r} does not resolve");
    }

    // Every path the client library calls is documented, with its method.
    let client = include_str!("../../client/src/lib.rs");
    let mut called = BTreeSet::new();
    for (i, _) in client.match_indices("(\"") {
        let rest = &client[i + 2..];
        let Some((method, rest)) = rest.split_once("\", ") else {
            continue;
        };
        if !["GET", "POST", "PUT"].contains(&method) {
            continue;
        }
        let path: String = rest
            .trim_start_matches("&format!(")
            .trim_start_matches("&self.of_node(")
            .trim_start_matches('"')
            .chars()
            .take_while(|c| *c != '"' && *c != '?')
            .collect();
        if !path.starts_with('/') {
            continue; // a path built elsewhere in the function
        }
        called.insert((method.to_lowercase(), path));
    }
    assert!(called.len() >= 15, "the client's calls were found: {called:?}");
    for (method, path) in &called {
        assert!(
            paths.get(path).is_some_and(|p| p.get(method).is_some()),
            "{method} {path} is called by the client library but not in the OpenAPI document"
        );
    }

    // Every documented operation reaches a handler: never the fallback's `not_found` nor 405.
    // Bodies are not JSON, so no operation that takes one does anything.
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            // The event stream never ends: its status line is enough.
            let (code, text) = if path.ends_with("/stream") {
                (
                    tandem_tests::http_status(&addr, path).expect("the stream answers"),
                    String::new(),
                )
            } else {
                let (code, body) = http_request(
                    &addr,
                    &method.to_uppercase(),
                    path,
                    &[("content-type", "application/json")],
                    b"not json",
                )
                .unwrap();
                (code, String::from_utf8_lossy(&body).into_owned())
            };
            assert_ne!(code, 405, "{method} {path}: {text}");
            assert!(
                !(code == 404 && text.contains("\"not_found\"")),
                "{method} {path} is documented but not served: {text}"
            );
            let op = &item[method];
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path}");
            assert!(op["responses"]["200"].is_object(), "{method} {path}");
            if op["requestBody"].is_object() {
                assert_eq!(
                    code, 400,
                    "{method} {path} takes JSON and refuses a body that is not: {text}"
                );
            }
        }
    }
    assert!(operations >= 28, "{operations} operations");
    // One node's own views and actions take the member they are of: `node`, a query parameter
    // of their handlers, which any member passes on.
    for (method, path) in [
        ("get", "/v1/resources"),
        ("post", "/v1/resources/cancel"),
        ("get", "/v1/files"),
        ("get", "/v1/db"),
        ("post", "/v1/db/seed"),
    ] {
        let params = paths[path][method]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            params.iter().any(|p| p["name"] == "node" && p["in"] == "query"),
            "{method} {path} documents no node parameter: {params:?}"
        );
    }
    // An undocumented path is the fallback's.
    let (code, body) = http_request(&addr, "GET", "/v1/nothing-here", &[], b"").unwrap();
    assert_eq!(code, 404);
    assert!(String::from_utf8_lossy(&body).contains("not_found"));
}
