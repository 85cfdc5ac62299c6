//! The Grafana dashboard shipped in `deploy/grafana/heartbeat.json`: every panel query is
//! valid PromQL (checked by the real `promtool`), and every metric it names is one the
//! real server binary exports once it has answered heartbeats, refusals, a bad token and a
//! job delivered over SSE. A panel over a metric the server does not have would stay empty.
#![allow(clippy::unwrap_used)]

mod process;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use heartbeat_core::{HeartbeatData, RejectStrategy, TokenCodec};
use process::ServerProcess;
use serde_json::Value;

const DASHBOARD: &str = include_str!("../../deploy/grafana/heartbeat.json");
const KEY: &str = "grafana-dashboard-test-shared-key";
const ADMIN_KEY: &str = "grafana-dashboard-test-admin-key";

/// Every panel's queries, with Grafana's variables as Prometheus would see them.
fn queries() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            queries.push(
                expr.replace("$__rate_interval", "5m")
                    .replace("$instance", ".*"),
            );
        }
    }
    queries
}

/// The metric names in a query: its identifiers that start with `heartbeat_`.
fn metric_names(query: &str) -> Vec<&str> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("heartbeat_"))
        .collect()
}

#[test]
fn every_panel_query_is_valid_promql() {
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<Value> = queries()
        .iter()
        .enumerate()
        .map(|(n, expr)| serde_json::json!({ "record": format!("dashboard:panel_query_{n}"), "expr": expr }))
        .collect();
    // A rules file is YAML, and JSON is YAML.
    let file = dir.path().join("dashboard-queries.yml");
    let groups = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(&file, groups.to_string()).unwrap();
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run promtool ({error}): install it (Debian: apt-get install \
                 prometheus; scripts/test does) and run the tests again"
            )
        });
    assert!(
        output.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_metric_the_dashboard_names_is_exported() {
    let server = ServerProcess::start(
        None,
        &[
            ("SHARED_KEY", KEY),
            ("ADMIN_KEY", ADMIN_KEY),
            ("STORAGE", "memory"),
            ("JOB_TIME", "100"),
        ],
    );
    let url = format!("http://127.0.0.1:{}", server.port);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let metrics = runtime.block_on(async {
        let http = reqwest::Client::new();
        let codec = TokenCodec::new(KEY).unwrap();
        let token = |user: &str| {
            let data = HeartbeatData::builder(user, 14)
                .cycle(0.2)
                .lower_tolerance(0.2)
                .upper_tolerance(60.0)
                .session_limit(1)
                .checking_threshold(1)
                .sessions_edge(10)
                .strategy(RejectStrategy::MostRecent)
                .build()
                .unwrap();
            codec.seal(&data).unwrap()
        };
        let beat = |token: String| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let body = serde_json::json!({ "heartbeat_token": token, "progress": 3 });
                let response = http
                    .post(format!("{url}/heartbeat"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (status, body["heartbeat_token"].as_str().map(str::to_owned))
            }
        };
        // Accepted; a second device of the same user is admitted once, then refused over
        // the limit of one at its next heartbeat; then a token that does not open.
        assert_eq!(beat(token("dashboard-user")).await.0, 200);
        let (status, second) = beat(token("dashboard-user")).await;
        assert_eq!(status, 200);
        assert_eq!(beat(second.unwrap()).await.0, 412);
        assert_eq!(beat("not a token".to_owned()).await.0, 406);
        // A job delivered to an open stream.
        let stream = http
            .get(format!("{url}/v1/events?uuid=dashboard-owner"))
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        let mut events = stream.bytes_stream().eventsource();
        let created = http
            .post(format!("{url}/v1/jobs?uuid=dashboard-owner"))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = events.next().await {
                if event.unwrap().data.contains("\"completed\"") {
                    break;
                }
            }
        })
        .await
        .expect("the job's completion on its stream");
        http.get(format!("{url}/metrics"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let queries = queries();
    let named: BTreeSet<&str> = queries.iter().flat_map(|q| metric_names(q)).collect();
    assert!(named.len() >= 8, "{named:?}");
    for name in named {
        assert!(
            exported.contains(name),
            "the dashboard queries {name}, which the server does not export:\n{metrics}"
        );
    }
    // The delivery lag was observed for the completion the stream received (and for the
    // creation too when the stream was subscribed before it).
    let delivered = metrics
        .lines()
        .find_map(|line| line.strip_prefix("heartbeat_event_delivery_seconds_count "))
        .and_then(|count| count.parse::<u64>().ok());
    assert!(matches!(delivered, Some(1 | 2)), "{metrics}");
}
