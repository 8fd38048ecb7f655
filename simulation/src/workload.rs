//! The client host: bootstraps the cluster, then writes test records to the node it believes
//! is active, carrying the epoch that node reported as a fencing token, and carries out the
//! operator actions the fault schedule asks for (switchover, forced failover).
//!
//! Like a real client it caches what it learnt: after a failover it keeps writing with the old
//! epoch until a write is refused, so late writes from a previous epoch reach the new active and
//! must be fenced off (DESIGN §4).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use crate::net::SimHttp;
use crate::rng::Rng;
use crate::world::now;
use crate::world::Ack;
use crate::world::Shared;

/// Deadline of one client call.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
/// Pause between two writes (ms, inclusive).
pub const WRITE_GAP_MS: (u64, u64) = (10, 120);

/// Operator actions, issued by the client host against the node serving now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Switchover,
    ForcedFailover,
}

pub type OperatorQueue = Arc<Mutex<VecDeque<Operator>>>;

fn admin(host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", crate::cluster::ADMIN_PORT)
}

/// Which data node serves now, and in which epoch (asks `/health/active` of each).
async fn find_active(http: &SimHttp) -> Option<(String, u64)> {
    for host in ["a", "b"] {
        if let Ok((200, body)) = http
            .call("GET", &admin(host, "/health/active"), None, CALL_TIMEOUT)
            .await
        {
            let epoch = body.as_str()?.trim().strip_prefix("active epoch ")?.parse().ok()?;
            return Some((host.to_string(), epoch));
        }
    }
    None
}

pub async fn run(shared: Arc<Shared>, operator: OperatorQueue, mut rng: Rng) {
    let http = SimHttp::default();
    loop {
        match http
            .call("POST", &admin("a", "/v1/cluster/init"), None, CALL_TIMEOUT)
            .await
        {
            Ok((200, _)) => break,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    shared.trace(now(), "client: cluster initialized through a");
    let mut target: Option<(String, u64)> = None;
    let mut next_id = 1u64;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.range(WRITE_GAP_MS.0, WRITE_GAP_MS.1))).await;
        if shared.quiet.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        let op = operator.lock().expect("operator lock").pop_front();
        if let Some(op) = op {
            operate(&http, &shared, op).await;
            continue;
        }
        if target.is_none() || rng.percent(3) {
            target = find_active(&http).await.or(target);
        }
        let Some((host, epoch)) = target.clone() else { continue };
        let id = next_id;
        next_id += 1;
        let body = json!({ "id": id, "payload": format!("w{id}"), "epoch": epoch });
        match http
            .call("POST", &admin(&host, "/v1/test-records"), Some(body), CALL_TIMEOUT)
            .await
        {
            Ok((200, answer)) => {
                let index = answer["index"].as_u64().expect("an acknowledged write has an index");
                let at = now();
                shared.trace(
                    at,
                    format_args!("client: write {id} acknowledged by {host} at index {index} (epoch {epoch})"),
                );
                shared
                    .acked
                    .lock()
                    .expect("acked lock")
                    .push(Ack { id, index, epoch, at });
            }
            Ok((421, answer)) => {
                // Follow the leader hint, keeping the epoch learnt earlier.
                let leader = answer["leader"]["admin_addr"]
                    .as_str()
                    .and_then(|a| a.split(':').next());
                target = leader.map(|h| (h.to_string(), epoch));
            }
            _ => target = None,
        }
    }
}

async fn operate(http: &SimHttp, shared: &Shared, op: Operator) {
    let Some((host, epoch)) = find_active(http).await else {
        shared.trace(now(), format_args!("operator: {op:?} skipped, no node serves"));
        return;
    };
    let (path, body) = match op {
        Operator::Switchover => ("/v1/switchover", json!({})),
        Operator::ForcedFailover => ("/v1/failover", json!({ "force": true, "accept_data_loss": true })),
    };
    shared.trace(now(), format_args!("operator: {op:?} sent to {host} (epoch {epoch})"));
    let answer = http
        .call("POST", &admin(host.as_str(), path), Some(body), Duration::from_secs(20))
        .await;
    let code = answer.map_or_else(|e| e, |(status, _)| status.to_string());
    shared.trace(now(), format_args!("operator: {op:?} answered {code}"));
}
