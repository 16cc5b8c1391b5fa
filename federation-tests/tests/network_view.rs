//! The console's network view when one pair of nodes loses each other: three Hemicycle nodes,
//! each finding the others through a DNS server of its own that sends every pair's traffic
//! through a TCP relay (`relay.rs`), and a Synapse (which publishes no status document). The
//! relays between A and B are cut: C's console shows that pair unreachable both ways, with the
//! lag of what waits on A growing, while every other pair stays reachable; a room's name changed
//! on A meanwhile reaches C but not B, and the view shows the room split. Restored, the pair is
//! reachable again and the room one. Then the page in Debian's chromium, cut and split, with the
//! screenshots of docs/console.

use std::time::{Duration, Instant};

use hemicycle_federation_tests::{
    dns::{DnsServer, Srv},
    relay::Relay,
    Node,
};
use serde_json::{json, Value};

/// How long the view may take to show a change: a few rounds of `network.status_interval` (and
/// the federation sender's retry once the pair is back).
const VIEW_WAIT: Duration = Duration::from_secs(90);

/// What the console's network page draws, as its JSON (`/network/data`).
async fn view_data(node: &Node, token: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}/_hemicycle/console/network/data", node.client_url()))
        .header("Cookie", format!("hemicycle_console={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Reads the view's data until `check` holds (the documents come on the nodes' own timers, which
/// nothing here can wake).
async fn wait_data(node: &Node, token: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + VIEW_WAIT;
    loop {
        let data = view_data(node, token).await;
        if check(&data) {
            return data;
        }
        assert!(Instant::now() < deadline, "the network view never showed {what}:\n{data:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The state of the link `from` → `to` in the data (`up`, `down`…).
fn link<'a>(data: &'a Value, from: &str, to: &str) -> &'a Value {
    data["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["from"] == from && l["to"] == to)
        .unwrap_or_else(|| panic!("no link {from} → {to}: {data:#}"))
}

fn state<'a>(data: &'a Value, from: &str, to: &str) -> &'a str {
    link(data, from, to)["state"].as_str().unwrap()
}

fn node<'a>(data: &'a Value, server: &str) -> &'a Value {
    data["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["server"] == server)
        .unwrap_or_else(|| panic!("no node {server}: {data:#}"))
}

/// The minutes of the pair `from` → `to` in the data's history.
fn minutes<'a>(data: &'a Value, from: &str, to: &str) -> &'a [Value] {
    data["history"]["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["from"] == from && p["to"] == to)
        .map_or(&[], |p| p["minutes"].as_array().unwrap().as_slice())
}

/// How many rounds `from` said it could not reach `to`, over the minutes kept.
fn rounds_down(data: &Value, from: &str, to: &str) -> u64 {
    minutes(data, from, to).iter().map(|m| m["down"].as_u64().unwrap()).sum()
}

fn split_rooms(data: &Value) -> Vec<String> {
    data["problems"]["split_rooms"].as_array().unwrap().iter().map(|s| s["room_id"].as_str().unwrap().into()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_cut_and_a_room_split_then_healed() {
    let synapse = Node::start_synapse("s").await;
    let names = ["a.reseau.test", "b.reseau.test", "c.reseau.test"];
    // One relay for each (sending node, receiving node); each node's DNS sends it to its own.
    let mut relays = Vec::new();
    for _ in 0..names.len() * names.len() {
        relays.push(Relay::start().await);
    }
    let relay = |from: usize, to: usize| &relays[from * names.len() + to];
    let mut dns = Vec::new();
    for from in 0..names.len() {
        let records: Vec<(String, Srv)> = (0..names.len())
            .filter(|to| *to != from)
            .map(|to| {
                let srv =
                    Srv { priority: 0, weight: 0, port: relay(from, to).port, target: "relay.reseau.test".into() };
                (format!("_matrix-fed._tcp.{}", names[to]), srv)
            })
            .collect();
        let records: Vec<(&str, Srv)> = records.iter().map(|(name, srv)| (name.as_str(), srv.clone())).collect();
        dns.push(DnsServer::start(&records, &[("relay.reseau.test", std::net::Ipv4Addr::LOCALHOST)]).await);
    }
    let mut allow: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    allow.push(synapse.server_name());
    let settings = |i: usize| {
        let mut extra = vec![
            ("federation.nameservers", toml::Value::Array(vec![dns[i].addr.to_string().into()])),
            ("network.status_interval", toml::Value::from("1s")),
        ];
        if i == 2 {
            // C publishes its key as valid for two hours only: a key about to expire.
            extra.push(("federation.key_validity", toml::Value::from("2h")));
        }
        extra
    };
    let (sa, sb, sc) = (settings(0), settings(1), settings(2));
    let (a, b, c) = tokio::join!(
        Node::start_with("a", Some(names[0]), &allow, &sa),
        Node::start_with("b", Some(names[1]), &allow, &sb),
        Node::start_with("c", Some(names[2]), &allow, &sc),
    );
    let nodes = [&a, &b, &c];
    for from in 0..names.len() {
        for to in (0..names.len()).filter(|to| *to != from) {
            relay(from, to).set_target(nodes[to].federation_port());
        }
    }
    let (an, bn, cn, sn) = (names[0], names[1], names[2], synapse.server_name());
    let root = c.admin_token().await;

    // A room of A that B and C join; a message from each makes every pair send to each other.
    let (_, alice) = a.register("alice").await;
    let room = a.create_room(&alice, json!({ "preset": "public_chat", "name": "Coordination" })).await;
    let (_, bob) = b.register("bob").await;
    let (_, carol) = c.register("carol").await;
    b.join(&bob, &room, &[an.to_owned()]).await;
    c.join(&carol, &room, &[an.to_owned()]).await;
    let since = b.sync_token(&bob).await;
    c.send_text(&carol, &room, "présente").await;
    b.send_text(&bob, &room, "présent").await;
    a.send_text(&alice, &room, "bienvenue").await;
    b.wait_for_bodies(&bob, &room, &since, &["bienvenue".to_owned(), "présente".to_owned()]).await;

    let pairs: Vec<(&str, &str)> =
        names.iter().flat_map(|from| names.iter().filter(move |to| *to != from).map(move |to| (*from, *to))).collect();
    let data = wait_data(&c, &root, "every pair reachable and the room the same everywhere", |data| {
        pairs.iter().all(|(from, to)| state(data, from, to) == "up")
            && data["shared_rooms_compared"] == 1
            && split_rooms(data).is_empty()
    })
    .await;
    // The Synapse has no status document; its version comes from its version endpoint.
    let version: Value = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!("{}/_matrix/federation/v1/version", synapse.federation_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = node(&data, &sn);
    assert_eq!(s["status"], "no_status", "{s}");
    assert_eq!((&s["software"], &s["version"]), (&version["server"]["name"], &version["server"]["version"]), "{s}");
    // One version of Hemicycle everywhere: the Synapse beside it is another software.
    assert_eq!(data["problems"]["versions"], json!({}), "{data:#}");
    // C's key, published for two hours, is about to expire; the others' are not.
    let expiring: Vec<&str> =
        data["problems"]["expiring_keys"].as_array().unwrap().iter().map(|k| k["server"].as_str().unwrap()).collect();
    assert_eq!(expiring, [cn], "{data:#}");
    // (A node may have failed to reach another while they started; only later rounds count.)
    let before: Vec<u64> = pairs.iter().map(|(from, to)| rounds_down(&data, from, to)).collect();

    // A and B lose each other; A renames the room meanwhile: C gets it, B cannot.
    relay(0, 1).set_cut(true);
    relay(1, 0).set_cut(true);
    a.put_state(&alice, &room, "m.room.name", "", json!({ "name": "Coordination (coupée)" })).await;
    let down = |data: &Value| state(data, an, bn) == "down" && state(data, bn, an) == "down";
    let first = wait_data(&c, &root, "A and B unreachable from each other, with a lag on A", |data| {
        down(data) && link(data, an, bn)["lag_ms"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let lag = link(&first, an, bn)["lag_ms"].as_u64().unwrap();
    let seen = node(&first, an)["document_ts"].as_u64().unwrap();
    let later = wait_data(&c, &root, "a later document of A, still cut, with more lag", |data| {
        node(data, an)["document_ts"].as_u64().unwrap() > seen + 1000 && down(data)
    })
    .await;
    assert!(link(&later, an, bn)["lag_ms"].as_u64().unwrap() > lag, "the lag grows: {lag} then {later:#}");
    for (from, to) in &pairs {
        if ![(an, bn), (bn, an)].contains(&(*from, *to)) {
            assert_eq!(state(&later, from, to), "up", "{from} → {to} stays reachable: {later:#}");
        }
    }
    // The room's state differs between A (and C) and B, which C's console tells.
    let data = wait_data(&c, &root, "the room split", |data| split_rooms(data) == [room.clone()]).await;
    let hashes = &data["problems"]["split_rooms"][0]["hashes"];
    assert_eq!(hashes[an], hashes[cn], "{hashes}");
    assert_ne!(hashes[an], hashes[bn], "{hashes}");
    // The minutes kept say so too: A and B could not reach each other, every other pair could.
    for ((from, to), before) in pairs.iter().zip(&before) {
        let now = rounds_down(&data, from, to);
        if [(an, bn), (bn, an)].contains(&(*from, *to)) {
            assert!(now > *before, "{from} → {to} kept as cut: {data:#}");
        } else {
            assert_eq!(now, *before, "{from} → {to} never cut: {data:#}");
        }
    }

    // The same, in a real browser, with the screenshots of docs/console.
    let shots = std::env::var("CONSOLE_SCREENSHOTS").ok();
    let seen = super::console::console_in_browser(&c, "root", "root-pw", "network_view.mjs", shots).await;
    let cell = |from: &str, to: &str| {
        let head: Vec<&str> = seen["matrix_head"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
        let at = head.iter().position(|h| *h == to).unwrap_or_else(|| panic!("no column {to}: {seen}"));
        let rows = seen["matrix_rows"].as_array().unwrap();
        let row = rows.iter().find(|r| r[0] == from).unwrap_or_else(|| panic!("no row {from}: {seen}"));
        row[at].as_str().unwrap().to_owned()
    };
    assert!(cell(an, bn).starts_with("unreachable") && cell(an, bn).contains("lag"), "{seen}");
    assert!(cell(bn, an).starts_with("unreachable"), "{seen}");
    assert!(cell(an, cn).starts_with("reachable") && cell(cn, bn).starts_with("reachable"), "{seen}");
    assert!(seen["problems"].as_str().unwrap().contains(&format!("Room {room} is split")), "{seen}");
    assert!(seen["problems"].as_str().unwrap().contains("The key ed25519:"), "{seen}");
    assert!(seen["cut_minutes"].as_u64().unwrap() >= 1, "the plot of A → B shows the cut: {seen}");
    assert!(seen["pair_plots"].as_u64().unwrap() >= 6, "{seen}");
    let label = seen["cut_labels"].as_array().unwrap();
    assert!(label.iter().any(|l| l.as_str().unwrap().starts_with(&format!("{an} to {bn}:"))), "{seen}");

    // Back: the pair reaches each other again, what waited on A goes, and the room is one again.
    relay(0, 1).set_cut(false);
    relay(1, 0).set_cut(false);
    let data = wait_data(&c, &root, "the pair back and the room whole", |data| {
        pairs.iter().all(|(from, to)| state(data, from, to) == "up") && split_rooms(data).is_empty()
    })
    .await;
    assert_eq!(data["shared_rooms_compared"], 1, "{data:#}");
    assert_eq!(b.state_event(&bob, &room, "m.room.name", "").await["name"], "Coordination (coupée)");
}
