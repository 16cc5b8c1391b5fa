//! Traces: two nodes export their spans over OTLP/HTTP to a receiver run by the test, which
//! decodes the protobuf it gets. One message sent on A is followed through the client's request on
//! A (request → `rooms.append` → `db.commit`, one trace), then through the very transaction that
//! carried it: B's `rooms.append_remote` of that event id sits under B's handling of a transaction
//! (`federation.receive_transaction`, named by its `txn_id`), and A's span sending the transaction
//! of that id to B is in the same trace (its context travelled in `traceparent`).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, routing::post, Router};
use hemicycle_federation_tests::Node;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;
use tokio::sync::Notify;

/// One span as the receiver decoded it.
#[derive(Clone, Debug)]
struct Span {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: Vec<(String, String)>,
}

impl Span {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<Span>>,
    arrived: Notify,
}

async fn export(State(received): State<Arc<Received>>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("the exporter sends an OTLP protobuf request");
    let mut decoded = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref().and_then(|v| v.value.clone()))
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .map(|kv| {
                        let value = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => s,
                            Some(other) => format!("{other:?}"),
                            None => String::new(),
                        };
                        (kv.key.clone(), value)
                    })
                    .collect();
                decoded.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes,
                });
            }
        }
    }
    received.spans.lock().unwrap().extend(decoded);
    received.arrived.notify_waiters();
    ""
}

/// Waits (woken by each export) until `found` picks something out of the spans received so far.
async fn wait_for<T>(received: &Received, what: &str, found: impl Fn(&[Span]) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let arrived = received.arrived.notified();
        if let Some(value) = found(&received.spans.lock().unwrap()) {
            return value;
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            let spans = received.spans.lock().unwrap();
            let names: Vec<String> = spans.iter().map(|s| format!("{} {}", s.service, s.name)).collect();
            panic!("no {what} among the spans received: {names:?}");
        }
    }
}

#[tokio::test]
async fn one_trace_follows_a_message_from_the_client_on_a_to_node_b() {
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/v1/traces", post(export)).with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let settings = |service: &str| {
        vec![
            ("telemetry.otlp_endpoint", toml::Value::from(endpoint.as_str())),
            ("telemetry.service_name", toml::Value::from(service)),
            ("telemetry.batch_delay_ms", toml::Value::from(100)),
        ]
    };
    let (a_settings, b_settings) = (settings("node-a"), settings("node-b"));
    let (a, b) = tokio::join!(
        Node::start_with("trace-a", None, &[], &a_settings),
        Node::start_with("trace-b", None, &[], &b_settings)
    );
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    let room = a.create_room(&alice, json!({ "preset": "public_chat" })).await;
    b.join(&bob, &room, &[a.server_name()]).await;
    let since = b.sync_token(&bob).await;
    let event = a.send_text(&alice, &room, "suivi de bout en bout").await;
    b.wait_for_bodies(&bob, &room, &since, &["suivi de bout en bout".to_owned()]).await;

    // On A: the client's PUT, the append under it, the commit under the append.
    let (request, append, commit) =
        wait_for(&received, "send request → rooms.append → db.commit on node-a", |spans| {
            let request = spans.iter().find(|s| {
                s.service.contains("node-a")
                    && s.name == "PUT /_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}"
            })?;
            let append = spans.iter().find(|s| {
                s.name == "rooms.append"
                    && s.parent_span_id == request.span_id
                    && s.attribute("kind") == Some("m.room.message")
            })?;
            let commit = spans.iter().find(|s| s.name == "db.commit" && s.parent_span_id == append.span_id)?;
            Some((request.clone(), append.clone(), commit.clone()))
        })
        .await;
    assert_eq!(request.attribute("http.route"), Some("/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}"));
    assert_eq!(append.trace_id, request.trace_id);
    assert_eq!(commit.trace_id, request.trace_id);
    assert_eq!(append.attribute("room"), Some(room.as_str()));

    // The transaction that brought this very event to B: B's append of the event id, under B's
    // handling of a transaction (found by walking up B's spans, not by trace id).
    let (appended, handled, b_request) =
        wait_for(&received, "node-b's append of the message under its handling of a transaction", |spans| {
            let appended = spans.iter().find(|s| {
                s.service.contains("node-b")
                    && s.name == "rooms.append_remote"
                    && s.attribute("event_id") == Some(event.as_str())
            })?;
            let parent_of =
                |span: &Span| spans.iter().find(|p| p.service.contains("node-b") && p.span_id == span.parent_span_id);
            let mut handled = parent_of(appended)?;
            while handled.name != "federation.receive_transaction" {
                handled = parent_of(handled)?;
            }
            let b_request = parent_of(handled)?;
            Some((appended.clone(), handled.clone(), b_request.clone()))
        })
        .await;
    assert_eq!(handled.attribute("origin"), Some(a.server_name().as_str()));
    assert_eq!(b_request.name, "PUT /_matrix/federation/v1/send/{transaction_id}");
    let txn_id = handled.attribute("txn_id").expect("the transaction's id on B's span").to_owned();
    // A's span sending that transaction (found by its id, not by trace id) to B.
    let sent = wait_for(&received, &format!("node-a's span sending transaction {txn_id}"), |spans| {
        spans
            .iter()
            .find(|s| {
                s.service.contains("node-a")
                    && s.name == "federation.send_transaction"
                    && s.attribute("txn_id") == Some(txn_id.as_str())
            })
            .cloned()
    })
    .await;
    assert_eq!(sent.attribute("destination"), Some(b.server_name().as_str()));
    // One trace from A's send to B's append of the event: the context travelled in `traceparent`.
    assert_eq!(b_request.trace_id, sent.trace_id, "B's request span continues A's trace");
    assert_eq!(handled.trace_id, sent.trace_id);
    assert_eq!(
        appended.trace_id, sent.trace_id,
        "B's append of {event} is in the trace of the transaction that carried it"
    );
}
