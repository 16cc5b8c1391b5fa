//! Prometheus metrics on `listen.metrics`: what a scrape reports after real traffic.

use reqwest::Method;
use serde_json::json;

use crate::common::{api, register_raw, TestServer};

/// The value of the sample whose name and labels are exactly `series` (OpenMetrics text).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok())
}

async fn scrape(server: &TestServer) -> String {
    let url = server.metrics_url.as_ref().expect("the server announced its metrics listener");
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_scrape_counts_requests_by_route_events_by_origin_and_reads_the_store() {
    let server = TestServer::start_with(&[("listen.metrics", "127.0.0.1:0".into())]);
    let (_, token) = register_raw(&server, "metered").await;
    let (status, room) =
        api(&server, Method::POST, Some(&token), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    assert_eq!(status, 200);
    let room = room["room_id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}");
        let (status, _) =
            api(&server, Method::PUT, Some(&token), &path, Some(json!({"msgtype": "m.text", "body": "x"}))).await;
        assert_eq!(status, 200);
    }
    let (status, _) = api(&server, Method::GET, None, "/_matrix/client/v3/no/such/path/secret-42", None).await;
    assert_eq!(status, 404);

    let text = scrape(&server).await;
    assert!(text.ends_with("# EOF\n"), "a complete exposition");
    let send = r#"route="/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}",method="PUT""#;
    assert_eq!(sample(&text, &format!(r#"hemicycle_http_requests_total{{{send},status="200"}}"#)), Some(3.0), "{text}");
    assert_eq!(sample(&text, &format!("hemicycle_http_request_duration_seconds_count{{{send}}}")), Some(3.0), "{text}");
    let slowest = sample(&text, &format!(r#"hemicycle_http_request_duration_seconds_bucket{{le="+Inf",{send}}}"#));
    assert_eq!(slowest, Some(3.0), "{text}");
    // Unknown paths are one series, whatever they were: the raw path never becomes a label.
    assert_eq!(
        sample(&text, r#"hemicycle_http_requests_total{route="unmatched",method="GET",status="404"}"#),
        Some(1.0)
    );
    assert!(!text.contains("secret-42"));
    // createRoom's state events and the three messages, all ours.
    let local = sample(&text, r#"hemicycle_events_appended_total{origin="local"}"#).unwrap();
    assert!(local >= 8.0, "{local} local events");
    assert_eq!(sample(&text, r#"hemicycle_events_appended_total{origin="remote"}"#), Some(0.0));
    assert!(sample(&text, "hemicycle_stream_position_total").unwrap() > 0.0);
    assert_eq!(sample(&text, "hemicycle_sync_waiting"), Some(0.0));
    assert!(sample(&text, "hemicycle_database_size_bytes").unwrap() > 0.0);
    assert!(sample(&text, "hemicycle_process_resident_memory_bytes").unwrap() > 1_000_000.0);
    assert!(sample(&text, "hemicycle_process_cpu_seconds").is_some());
    assert!(sample(&text, "hemicycle_rocksdb_block_cache_bytes").is_some());
    assert_eq!(sample(&text, "hemicycle_pushers_pending"), Some(0.0));

    // A long-poll in progress shows up while it waits.
    let since = {
        let (_, body) = api(&server, Method::GET, Some(&token), "/_matrix/client/v3/sync", None).await;
        body["next_batch"].as_str().unwrap().to_owned()
    };
    let url = format!("{}/_matrix/client/v3/sync?since={since}&timeout=20000", server.url);
    let waiting = tokio::spawn(reqwest::Client::new().get(url).bearer_auth(token.clone()).send());
    server.wait_for_waiting("syncs", 1).await;
    assert_eq!(sample(&scrape(&server).await, "hemicycle_sync_waiting"), Some(1.0), "the waiting long-poll");
    waiting.abort();
}

#[tokio::test]
async fn metrics_stay_off_the_client_listener() {
    let server = TestServer::start();
    assert!(server.metrics_url.is_none(), "off by default");
    let (status, body) = api(&server, Method::GET, None, "/metrics", None).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
}

/// The Grafana dashboard in docs/ only queries metrics the server exports.
#[tokio::test]
async fn the_dashboard_queries_only_exported_metrics() {
    let server = TestServer::start_with(&[("listen.metrics", "127.0.0.1:0".into())]);
    // Request families have series once a request was answered.
    assert_eq!(api(&server, Method::GET, None, "/_matrix/client/versions", None).await.0, 200);
    let text = scrape(&server).await;
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/grafana-dashboard.json")).expect("the dashboard is JSON");
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (start, _) in expr.match_indices("hemicycle_") {
                let name: String =
                    expr[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let base = ["_bucket", "_total", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(text.contains(&format!("# TYPE {base} ")), "{name} (panel {}) is not exported", panel["title"]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "{checked} metric references");
}
