//! Load generator: measures `PUT /rooms/{id}/send` throughput and latency against a real
//! `hemicycle serve` process on loopback, client and server on the same machine.
//!
//! ```sh
//! cargo run --release --example loadgen -- [--clients 50] [--seconds 10] [--server target/release/hemicycle]
//! ```
//!
//! It starts its own server on a temp database (registration open, rate limits off), registers
//! one user per client, and runs two scenarios: clients spread over 10 rooms, and all in 1 room.
//! Each scenario runs for a bounded time and stops by itself. Results go to stdout as a table
//! suitable for `docs/performance.md`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

struct Args {
    clients: usize,
    seconds: u64,
    server: String,
}

fn args() -> Args {
    let mut out = Args { clients: 50, seconds: 10, server: default_server() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => out.clients = value.parse().expect("--clients is a number"),
            "--seconds" => out.seconds = value.parse().expect("--seconds is a number"),
            "--server" => out.server = value,
            other => panic!("unknown flag {other}"),
        }
    }
    out
}

/// The `hemicycle` binary next to this example's build output.
fn default_server() -> String {
    let exe = std::env::current_exe().expect("own path");
    let profile_dir = exe.parent().and_then(|p| p.parent()).expect("target/<profile>/examples");
    profile_dir.join("hemicycle").to_string_lossy().into_owned()
}

async fn post(http: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {value}");
    value
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Command::new(&args.server)
        .arg("serve")
        .env("HEMICYCLE_DATABASE__PATH", dir.path().join("db"))
        .env("HEMICYCLE_LISTEN__CLIENT", "127.0.0.1:0")
        .env("HEMICYCLE_REGISTRATION__OPEN", "true")
        .env("HEMICYCLE_RATE_LIMITS__ENABLED", "false")
        .env("HEMICYCLE_LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.server));
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut line).expect("server address");
    let base = line.trim().strip_prefix("hemicycle listening on ").expect("address line").to_owned();

    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build().expect("client");
    let mut tokens = Vec::new();
    for i in 0..args.clients {
        let body =
            json!({ "username": format!("load{i}"), "password": "load-password", "auth": { "type": "m.login.dummy" } });
        let v = post(&http, &format!("{base}/_matrix/client/v3/register"), None, body).await;
        tokens.push(v["access_token"].as_str().expect("token").to_owned());
    }

    println!("| scenario | clients | events | seconds | events/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    for rooms in [10usize, 1] {
        let mut room_ids = Vec::new();
        for _ in 0..rooms {
            let v = post(
                &http,
                &format!("{base}/_matrix/client/v3/createRoom"),
                Some(&tokens[0]),
                json!({ "preset": "public_chat" }),
            )
            .await;
            room_ids.push(v["room_id"].as_str().expect("room id").to_owned());
        }
        for (i, token) in tokens.iter().enumerate() {
            let room = &room_ids[i % rooms];
            post(&http, &format!("{base}/_matrix/client/v3/rooms/{room}/join"), Some(token), json!({})).await;
        }
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let room_ids = Arc::new(room_ids);
        let mut workers = Vec::new();
        for (i, token) in tokens.iter().cloned().enumerate() {
            let http = http.clone();
            let base = base.clone();
            let room_ids = room_ids.clone();
            workers.push(tokio::spawn(async move {
                let room = &room_ids[i % room_ids.len()];
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let url = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/r{rooms}-{n}");
                    let t = Instant::now();
                    let response = http
                        .put(&url)
                        .bearer_auth(&token)
                        .json(&json!({ "msgtype": "m.text", "body": format!("message {n}") }))
                        .send()
                        .await
                        .expect("send");
                    assert!(response.status().is_success(), "send failed: {}", response.status());
                    latencies.push(t.elapsed());
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.expect("worker"));
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort();
        println!(
            "| {rooms} room{} | {} | {} | {elapsed:.1} | {:.0} | {:.1} | {:.1} |",
            if rooms == 1 { "" } else { "s" },
            args.clients,
            all.len(),
            all.len() as f64 / elapsed,
            percentile(&all, 0.50).as_secs_f64() * 1000.0,
            percentile(&all, 0.99).as_secs_f64() * 1000.0,
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}
