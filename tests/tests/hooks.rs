//! The Elastic IP hook (`deploy/hooks/aws-eip.sh`) against stand-ins for the AWS CLI and the
//! instance metadata service: which calls it makes on acquire, check and release, that it is
//! idempotent, and that a missing setting is named. (No cloud account is reachable from the
//! test machine; the stand-ins keep the address's association in a file.)

use std::path::Path;
use std::process::Command;
use std::process::Output;

const ALLOC: &str = "eipalloc-0abc";
const MINE: &str = "eni-mine";

/// `aws` and `curl` stand-ins in `dir`: the association lives in `dir/state`
/// (`ENI ASSOCIATION PRIVATE_IP PUBLIC_IP`), every `aws` call is logged to `dir/calls`.
fn stand_ins(dir: &Path, state: &str) {
    std::fs::write(dir.join("state"), state).unwrap();
    let aws = format!(
        r#"#!/bin/sh
echo "$*" >> {d}/calls
case "$*" in
  *describe-addresses*) cat {d}/state ;;
  *associate-address*--network-interface-id\ *)
    eni=$(echo "$*" | sed 's/.*--network-interface-id \([^ ]*\).*/\1/')
    echo "$eni eipassoc-new 10.0.0.5 203.0.113.7" > {d}/state
    echo eipassoc-new ;;
  *) echo "unexpected aws call: $*" >&2; exit 1 ;;
esac
"#,
        d = dir.display()
    );
    let curl = r#"#!/bin/sh
case "$*" in
  *api/token*) echo token ;;
  *placement/region*) echo eu-west-1 ;;
  *meta-data/mac*) echo 0a:00:00:00:00:01 ;;
  *interface-id*) echo eni-mine ;;
  *) echo "unexpected curl call: $*" >&2; exit 22 ;;
esac
"#;
    for (name, text) in [("aws", aws.as_str()), ("curl", curl)] {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let _ = std::fs::remove_file(dir.join("calls"));
}

fn hook(dir: &Path, action: &str, env: &[(&str, &str)]) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/hooks/aws-eip.sh");
    let mut c = Command::new("bash");
    c.arg(script)
        .arg(action)
        .env("PATH", format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()))
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn calls(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("calls")).unwrap_or_default()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn the_elastic_ip_hook_moves_the_address_here_once_and_checks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let env = [("TANDEM_EIP_ALLOCATION_ID", ALLOC), ("TANDEM_HOOK_DEADLINE_S", "10")];

    // A missing setting is named, with exit status 2, and nothing is called.
    stand_ins(d, "eni-other eipassoc-old 10.0.0.9 203.0.113.7\n");
    let out = hook(d, "acquire", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("TANDEM_EIP_ALLOCATION_ID is not set"),
        "{}",
        text(&out)
    );
    assert_eq!(calls(d), "");

    // On the other node: check fails, acquire re-associates it here in one call.
    let out = hook(d, "check", &env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("eni-other"), "{}", text(&out));
    let out = hook(d, "acquire", &env);
    assert!(out.status.success(), "{}", text(&out));
    let made = calls(d);
    let associate: Vec<&str> = made.lines().filter(|l| l.contains("associate-address")).collect();
    assert_eq!(associate.len(), 1, "{made}");
    assert!(
        associate[0].contains(&format!(
            "--allocation-id {ALLOC} --network-interface-id {MINE} --allow-reassociation"
        )),
        "{made}"
    );
    assert!(
        made.contains("--region eu-west-1"),
        "the region from the metadata service: {made}"
    );
    assert!(std::fs::read_to_string(d.join("state")).unwrap().starts_with(MINE));

    // Again: already here, so nothing is changed; check passes.
    let _ = std::fs::remove_file(d.join("calls"));
    let out = hook(d, "acquire", &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already associated"), "{}", text(&out));
    assert!(!calls(d).contains("associate-address"), "{}", calls(d));
    assert!(hook(d, "check", &env).status.success());

    // Release keeps the address by default (the next active takes it): no AWS call.
    let _ = std::fs::remove_file(d.join("calls"));
    let out = hook(d, "release", &env);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(calls(d), "");

    // An allocation id that is not one is refused before any call.
    let out = hook(d, "acquire", &[("TANDEM_EIP_ALLOCATION_ID", "203.0.113.7")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(calls(d), "");
}
