//! Load generator: measures `PUT /rooms/{id}/send` throughput and latency against a real
//! `hemicycle serve` process on loopback, client and server on the same machine.
//!
//! ```sh
//! cargo run --release --example loadgen -- [--scenario send|sync|media|keys|unread|federation] [--clients 50] [--seconds 10]
//!     [--server target/release/hemicycle]
//! ```
//!
//! It starts its own server on a temp database (registration open, rate limits off) and runs
//! bounded scenarios that stop by themselves; results go to stdout as tables suitable for
//! `docs/performance.md`.
//! - `send`: one user per client; clients spread over 10 rooms, then all in 1 room, each sending
//!   `PUT /send` as fast as answers come back: events/s and latency.
//! - `sync`: `--clients` users long-polling `/sync` in rooms of `--fanout` (default 10; ready once the server counts
//!   them all waiting), the server's CPU while they wait, then one sender posting 50 messages per
//!   second on a schedule for `--seconds`: send→sync delivery latency, and every (reader, message)
//!   pair checked: deliveries of the expected total, duplicates, misses, late sends, failed readers.
//! - `media`: one client uploading (`POST /media/v3/upload`) then downloading
//!   (`GET /client/v1/media/download`) files of 1 MiB and 100 MiB, one at a time: MB/s each way.
//! - `messages`: a room of 1,000 messages (topic changes every 100), read back with
//!   `GET /messages?dir=b&limit=100` by `--clients` readers at once for `--seconds`: once by a
//!   member since the room's creation, once by a member who joined at the end of a `joined`-only
//!   room (whose reads go through the history-visibility window): requests/s and latency.
//! - `initial-sync`: a user in `--rooms` rooms (default 500), each with a name, a topic and
//!   `--messages` messages (default 20); `--samples` (default 7) initial `/sync`s with a timeline
//!   limit of 10, one after the other: min, median and max seconds.
//! - `push`: `--rooms` users in one room, each with an http pusher to a gateway the load
//!   generator serves; one message, five times: time until every pusher's gateway call arrived.
//! - `unread`: a reader with 0, 800 and 5,000 unread messages (no read receipt) in a room; 200
//!   times one new message then one incremental `/sync`: its latency and the notification count.
//! - `federation`: two nodes (A and B, each its own `hemicycle serve` with an HTTPS federation
//!   listener; certificates made with the `openssl` command). A room on A with a user of B in
//!   it: one sender on A at 200 messages/s for `--seconds`, B's user long-polling `/sync`:
//!   cross-node send→sync latency; then steady offered rates of 1,000 to 2,500 events/s for
//!   `--seconds` each (sustained when all arrive and B is less than a second behind at the
//!   end); then `--clients` senders on A as fast as answers come back:
//!   events/s arriving in B's sync; then a room on A with `--rooms` members (default 1,000) and
//!   10,000 events, joined by a user of B: seconds for the `/join`.
//! - `keys`: `--clients` devices with real ed25519 identities, each in turn uploading batches of
//!   10 signed one-time keys, claiming other devices' keys (one-time, then fallback), and querying
//!   10 users' keys, as fast as answers come back: requests/s and latency of each.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{json, Value};
use sha2::Digest;

struct Args {
    scenario: String,
    clients: usize,
    seconds: u64,
    server: String,
    rooms: usize,
    messages: usize,
    samples: usize,
    fanout: usize,
}

fn args() -> Args {
    let mut out = Args {
        scenario: "send".into(),
        clients: 50,
        seconds: 10,
        server: default_server(),
        rooms: 500,
        messages: 20,
        samples: 7,
        fanout: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => out.clients = value.parse().expect("--clients is a number"),
            "--seconds" => out.seconds = value.parse().expect("--seconds is a number"),
            "--server" => out.server = value,
            "--scenario" => out.scenario = value,
            "--rooms" => out.rooms = value.parse().expect("--rooms is a number"),
            "--messages" => out.messages = value.parse().expect("--messages is a number"),
            "--samples" => out.samples = value.parse().expect("--samples is a number"),
            "--fanout" => out.fanout = value.parse().expect("--fanout is a number"),
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
    if args.scenario == "federation" {
        return federation_scenario(&args).await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Command::new(&args.server)
        .arg("serve")
        .env("HEMICYCLE_DATABASE__PATH", dir.path().join("db"))
        .env("HEMICYCLE_LISTEN__CLIENT", "127.0.0.1:0")
        .env("HEMICYCLE_REGISTRATION__OPEN", "true")
        .env("HEMICYCLE_RATE_LIMITS__ENABLED", "false")
        .env("HEMICYCLE_LOG__LEVEL", "warn")
        .env("HEMICYCLE_MEDIA__MAX_UPLOAD_SIZE", (200u64 * 1024 * 1024).to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.server));
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut line).expect("server address");
    let base = line.trim().strip_prefix("hemicycle listening on ").expect("address line").to_owned();

    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build().expect("client");
    match args.scenario.as_str() {
        "send" => send_scenario(&http, &base, &args).await,
        "sync" => sync_scenario(&http, &base, &args, server.id(), &dir.path().join("db")).await,
        "media" => media_scenario(&http, &base).await,
        "keys" => keys_scenario(&http, &base, &args).await,
        "messages" => messages_scenario(&http, &base, &args).await,
        "initial-sync" => initial_sync_scenario(&http, &base, &args).await,
        "unread" => unread_scenario(&http, &base).await,
        "push" => push_scenario(&http, &base, &args).await,
        "login-burst" => login_burst_scenario(&http, &base, server.id()).await,
        other => panic!("unknown scenario {other}"),
    }
    let (rss, peak) = rss_mib(server.id());
    println!("\nserver RSS at the end: {rss:.0} MiB (peak {peak:.0} MiB)");
    let _ = server.kill();
    let _ = server.wait();
}

async fn send_scenario(http: &reqwest::Client, base: &str, args: &Args) {
    let mut tokens = Vec::new();
    for i in 0..args.clients {
        let body =
            json!({ "username": format!("load{i}"), "password": "load-password", "auth": { "type": "m.login.dummy" } });
        let v = post(http, &format!("{base}/_matrix/client/v3/register"), None, body).await;
        tokens.push(v["access_token"].as_str().expect("token").to_owned());
    }

    println!("| scenario | clients | events | seconds | events/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    for rooms in [10usize, 1] {
        let mut room_ids = Vec::new();
        for _ in 0..rooms {
            let v = post(
                http,
                &format!("{base}/_matrix/client/v3/createRoom"),
                Some(&tokens[0]),
                json!({ "preset": "public_chat" }),
            )
            .await;
            room_ids.push(v["room_id"].as_str().expect("room id").to_owned());
        }
        for (i, token) in tokens.iter().enumerate() {
            let room = &room_ids[i % rooms];
            post(http, &format!("{base}/_matrix/client/v3/rooms/{room}/join"), Some(token), json!({})).await;
        }
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let room_ids = Arc::new(room_ids);
        let mut workers = Vec::new();
        for (i, token) in tokens.iter().cloned().enumerate() {
            let http = http.clone();
            let base = base.to_owned();
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
}

/// User + system CPU seconds a process has used (Linux `/proc/<pid>/stat`, clock ticks of 10 ms).
/// CPU seconds (user + system) the process has used. A failed read is an error, never 0 %.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/stat: {e}"));
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| -> f64 {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("/proc/{pid}/stat field {i} unreadable: {stat}"))
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The server's resident memory and its peak (`VmRSS`, `VmHWM`), in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Samples the server's RSS every 20 ms until told to stop; returns the highest seen.
fn sample_rss(pid: u32) -> (Arc<tokio::sync::Notify>, tokio::task::JoinHandle<f64>) {
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut highest = 0f64;
        let stopped = stopped.notified();
        tokio::pin!(stopped);
        loop {
            highest = highest.max(rss_mib(pid).0);
            tokio::select! {
                _ = &mut stopped => return highest.max(rss_mib(pid).0),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    });
    (stop, task)
}

/// The Monday 9:00 burst: waves of concurrent registrations (50, then 250 more), then all 300
/// accounts logging in at once, with the server's RSS sampled throughout and after a minute idle.
async fn login_burst_scenario(http: &reqwest::Client, base: &str, pid: u32) {
    println!("| step | concurrent requests | p50 ms | p99 ms | RSS peak MiB | RSS after MiB |");
    println!("|---|---|---|---|---|---|");
    println!("| idle after start | 0 | | | | {:.0} |", rss_mib(pid).0);
    let mut registered = 0usize;
    for (step, wave) in [("registrations", 50usize), ("registrations", 250), ("logins", 300)] {
        let (stop, sampler) = sample_rss(pid);
        let names: Vec<usize> =
            if step == "logins" { (0..registered).collect() } else { (registered..registered + wave).collect() };
        let mut latencies: Vec<Duration> = futures::future::join_all(names.iter().map(|i| async move {
            let t = Instant::now();
            if step == "logins" {
                let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": format!("burst{i}") }, "password": "load-password" });
                post(http, &format!("{base}/_matrix/client/v3/login"), None, body).await;
            } else {
                register(http, base, &format!("burst{i}")).await;
            }
            t.elapsed()
        }))
        .await;
        stop.notify_one();
        let peak = sampler.await.expect("sampler");
        if step != "logins" {
            registered += wave;
        }
        latencies.sort();
        println!(
            "| {step} | {} | {:.0} | {:.0} | {peak:.0} | {:.0} |",
            names.len(),
            percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            rss_mib(pid).0
        );
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    println!("| a minute idle | 0 | | | | {:.0} |", rss_mib(pid).0);
}

async fn register(http: &reqwest::Client, base: &str, name: &str) -> String {
    let body = json!({ "username": name, "password": "load-password", "auth": { "type": "m.login.dummy" } });
    let v = post(http, &format!("{base}/_matrix/client/v3/register"), None, body).await;
    v["access_token"].as_str().expect("token").to_owned()
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let response = http.get(url).bearer_auth(token).send().await.expect("request sent");
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.json().await.expect("json")
}

/// How many sync long-polls the server reports waiting (`hemicycle server waiting`, through the
/// admin socket of its database).
fn syncs_waiting(server: &str, db: &std::path::Path) -> usize {
    let out = Command::new(server)
        .args(["server", "waiting"])
        .env("HEMICYCLE_DATABASE__PATH", db)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {server}: {e}"));
    assert!(out.status.success(), "server waiting: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("syncs: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sync count in {text:?}"))
}

/// What one reader saw: how many times each probe message reached it.
type Seen = std::collections::HashMap<u64, u32>;

async fn sync_scenario(http: &reqwest::Client, base: &str, args: &Args, server_pid: u32, db: &std::path::Path) {
    const RATE: f64 = 50.0;
    let sender = register(http, base, "sender").await;
    let rooms_needed = args.clients.div_ceil(args.fanout);
    let mut rooms = Vec::new();
    for _ in 0..rooms_needed {
        let v = post(
            http,
            &format!("{base}/_matrix/client/v3/createRoom"),
            Some(&sender),
            json!({ "preset": "public_chat" }),
        )
        .await;
        rooms.push(v["room_id"].as_str().expect("room id").to_owned());
    }
    // Register and join in parallel (argon2 hashing dominates registration).
    let syncers: Vec<(usize, String)> = futures::stream::iter(0..args.clients)
        .map(|i| {
            let room = rooms[i % rooms.len()].clone();
            async move {
                let token = register(http, base, &format!("reader{i}")).await;
                post(http, &format!("{base}/_matrix/client/v3/rooms/{room}/join"), Some(&token), json!({})).await;
                (i, token)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let sent_at: Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>> = Arc::default();
    let delivered: Arc<std::sync::Mutex<Vec<Duration>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut readers = Vec::new();
    for (i, token) in syncers {
        let (http, base) = (http.clone(), base.to_owned());
        let (sent_at, delivered, stop) = (sent_at.clone(), delivered.clone(), stop.clone());
        readers.push((
            i % rooms.len(),
            tokio::spawn(async move {
                let mut seen = Seen::new();
                let first =
                    get(&http, &format!("{base}/_matrix/client/v3/sync?timeout=0&set_presence=offline"), &token).await;
                let mut since = first["next_batch"].as_str().expect("next_batch").to_owned();
                let stopped = stop.notified();
                tokio::pin!(stopped);
                stopped.as_mut().enable();
                loop {
                    let url = format!("{base}/_matrix/client/v3/sync?since={since}&timeout=30000&set_presence=offline");
                    let v = tokio::select! {
                        v = get(&http, &url, &token) => v,
                        _ = &mut stopped => return seen,
                    };
                    let now = Instant::now();
                    for room in v["rooms"]["join"].as_object().into_iter().flat_map(|m| m.values()) {
                        for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                            let Some(n) = event["content"]["body"]
                                .as_str()
                                .and_then(|b| b.strip_prefix("probe-"))
                                .and_then(|n| n.parse::<u64>().ok())
                            else {
                                continue;
                            };
                            let count = seen.entry(n).or_default();
                            *count += 1;
                            if *count == 1 {
                                let sent = sent_at.lock().expect("map").get(&n).copied();
                                if let Some(t) = sent {
                                    delivered.lock().expect("latencies").push(now.duration_since(t));
                                }
                            }
                        }
                    }
                    since = v["next_batch"].as_str().expect("next_batch").to_owned();
                }
            }),
        ));
    }
    // Every reader must sit in its long-poll, as the server itself counts them, before the idle
    // CPU is measured and the sender starts.
    let waiting_since = Instant::now();
    while syncs_waiting(&args.server, db) < args.clients {
        assert!(waiting_since.elapsed() < Duration::from_secs(600), "readers never all waited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle_seconds = 5.0;
    let before = cpu_seconds(server_pid);
    tokio::time::sleep(Duration::from_secs_f64(idle_seconds)).await;
    let idle_cpu = (cpu_seconds(server_pid) - before) / idle_seconds * 100.0;

    // A steady RATE: message n starts at n / RATE seconds; one that starts late is counted.
    let interval = Duration::from_secs_f64(1.0 / RATE);
    let start = tokio::time::Instant::now();
    let total = (args.seconds as f64 * RATE) as u64;
    let mut late = 0u64;
    let mut sends = Vec::new();
    let cpu_before_sending = cpu_seconds(server_pid);
    let sending_since = Instant::now();
    for n in 0..total {
        let due = start + interval * n as u32;
        tokio::time::sleep_until(due).await;
        if tokio::time::Instant::now() > due + interval {
            late += 1;
        }
        // Each send starts on time, whether or not the previous one has been answered.
        let url =
            format!("{base}/_matrix/client/v3/rooms/{}/send/m.room.message/p{n}", rooms[n as usize % rooms.len()]);
        let (http, sender, sent_at) = (http.clone(), sender.clone(), sent_at.clone());
        sends.push(tokio::spawn(async move {
            let t = Instant::now();
            sent_at.lock().expect("map").insert(n, t);
            put(&http, &url, &sender, json!({ "msgtype": "m.text", "body": format!("probe-{n}") })).await;
            t.elapsed()
        }));
    }
    let mut put_latencies = Vec::new();
    for send in sends {
        put_latencies.push(send.await.expect("a send failed"));
    }
    let busy_cpu = (cpu_seconds(server_pid) - cpu_before_sending) / sending_since.elapsed().as_secs_f64() * 100.0;
    put_latencies.sort();
    let readers_in = |room: usize| readers.iter().filter(|(r, _)| *r == room).count() as u64;
    let expected: u64 = (0..total).map(|n| readers_in(n as usize % rooms.len())).sum();
    // Give the last deliveries time to arrive (bounded), then stop every reader and collect.
    let drain = Instant::now();
    while (delivered.lock().expect("latencies").len() as u64) < expected && drain.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.notify_waiters();
    let (mut duplicates, mut received, mut failures) = (0u64, 0u64, 0u64);
    for (_, reader) in readers {
        match reader.await {
            Ok(seen) => {
                received += seen.len() as u64;
                duplicates += seen.values().map(|c| u64::from(c - 1)).sum::<u64>();
            }
            Err(e) => {
                failures += 1;
                eprintln!("a reader failed: {e}");
            }
        }
    }
    let misses = expected.saturating_sub(received);
    let mut all = std::mem::take(&mut *delivered.lock().expect("latencies"));
    all.sort();
    println!(
        "| scenario | syncing clients | server CPU while all wait | server CPU while sending | messages (late) | deliveries of expected | duplicates | misses | failed readers | PUT p50 / p99 ms | delivery p50 ms | delivery p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| send→sync latency | {} | {idle_cpu:.1} % | {busy_cpu:.1} % | {total} ({late}) | {received} of {expected} | {duplicates} | {misses} | {failures} | {:.1} / {:.1} | {:.1} | {:.1} |",
        args.clients,
        percentile(&put_latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&put_latencies, 0.99).as_secs_f64() * 1000.0,
        percentile(&all, 0.50).as_secs_f64() * 1000.0,
        percentile(&all, 0.99).as_secs_f64() * 1000.0
    );
}

/// Sequential uploads then downloads of distinct files (so deduplication never skips a write).
async fn media_scenario(http: &reqwest::Client, base: &str) {
    let token = register(http, base, "media").await;
    println!("| file size | files | upload MB/s | download MB/s | upload p50 ms | download p50 ms |");
    println!("|---|---|---|---|---|---|");
    for (size, files) in [(1usize << 20, 50usize), (100 << 20, 3)] {
        let mut template = vec![0u8; size];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for word in template.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            word.copy_from_slice(&seed.to_le_bytes()[..word.len()]);
        }
        let mut uris = Vec::new();
        let mut up = Vec::new();
        let mut hashes = Vec::new();
        for i in 0..files {
            template[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let body = bytes::Bytes::copy_from_slice(&template);
            hashes.push(sha2::Sha256::digest(&body));
            let t = Instant::now();
            let response = http
                .post(format!("{base}/_matrix/media/v3/upload"))
                .bearer_auth(&token)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await
                .expect("upload");
            assert!(response.status().is_success(), "upload failed: {}", response.status());
            let value: Value = response.json().await.expect("json");
            up.push(t.elapsed());
            let uri = value["content_uri"].as_str().expect("content_uri").trim_start_matches("mxc://").to_owned();
            uris.push(uri);
        }
        let mut down = Vec::new();
        for (uri, expected) in uris.iter().zip(&hashes) {
            let t = Instant::now();
            let response = http
                .get(format!("{base}/_matrix/client/v1/media/download/{uri}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("download");
            assert!(response.status().is_success(), "download failed: {}", response.status());
            let mut stream = response.bytes_stream();
            let mut received = 0usize;
            let mut hasher = sha2::Sha256::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.expect("body");
                received += chunk.len();
                hasher.update(&chunk);
            }
            down.push(t.elapsed());
            assert_eq!(received, size);
            assert_eq!(hasher.finalize(), *expected, "downloaded bytes are the uploaded ones");
        }
        let rate = |times: &[Duration]| {
            (size * times.len()) as f64 / 1e6 / times.iter().map(Duration::as_secs_f64).sum::<f64>()
        };
        let (up_rate, down_rate) = (rate(&up), rate(&down));
        up.sort();
        down.sort();
        println!(
            "| {} MiB | {files} | {up_rate:.0} | {down_rate:.0} | {:.1} | {:.1} |",
            size >> 20,
            percentile(&up, 0.5).as_secs_f64() * 1000.0,
            percentile(&down, 0.5).as_secs_f64() * 1000.0,
        );
    }
}

/// A device identity that signs its keys like a real client.
struct LoadDevice {
    user: String,
    device: String,
    token: String,
    pair: ruma::signatures::Ed25519KeyPair,
}

impl LoadDevice {
    fn sign(&self, value: Value) -> Value {
        let ruma::CanonicalJsonValue::Object(mut object) = ruma::CanonicalJsonValue::try_from(value).expect("json")
        else {
            panic!("an object")
        };
        ruma::signatures::sign_json(&self.user, &self.pair, &mut object).expect("sign");
        serde_json::to_value(object).expect("json")
    }

    fn one_time_keys(&self, round: usize, count: usize) -> Value {
        let mut keys = serde_json::Map::new();
        for i in 0..count {
            let key = format!("{:0>43}", format!("{round}x{i}"));
            keys.insert(format!("signed_curve25519:r{round}k{i}"), self.sign(json!({ "key": key })));
        }
        Value::Object(keys)
    }
}

/// Runs `request` from every device for `seconds`; returns the latencies of all calls and the
/// time actually measured (until the last call in flight at the deadline came back).
async fn hammer<F, Fut>(devices: &Arc<Vec<LoadDevice>>, seconds: u64, request: F) -> (Vec<Duration>, Duration)
where
    F: Fn(Arc<Vec<LoadDevice>>, usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for i in 0..devices.len() {
        let (devices, request) = (devices.clone(), request.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut round = 0;
            while Instant::now() < deadline {
                round += 1;
                let t = Instant::now();
                request(devices.clone(), i, round).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let measured = started.elapsed();
    all.sort();
    (all, measured)
}

async fn keys_scenario(http: &reqwest::Client, base: &str, args: &Args) {
    assert!(args.clients >= 2, "claims are of another device: at least 2 clients");
    let devices: Vec<LoadDevice> = futures::stream::iter(0..args.clients)
        .map(|i| async move {
            let body = json!({ "username": format!("keys{i}"), "password": "load-password",
                "auth": { "type": "m.login.dummy" } });
            let v = post(http, &format!("{base}/_matrix/client/v3/register"), None, body).await;
            let device = v["device_id"].as_str().expect("device").to_owned();
            let der = ruma::signatures::Ed25519KeyPair::generate();
            let pair = ruma::signatures::Ed25519KeyPair::from_der(&der, device.clone()).expect("key pair");
            LoadDevice {
                user: v["user_id"].as_str().expect("user").to_owned(),
                device,
                token: v["access_token"].as_str().expect("token").to_owned(),
                pair,
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for d in &devices {
        let public = base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, d.pair.public_key());
        let keys = d.sign(json!({
            "user_id": d.user, "device_id": d.device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": { format!("curve25519:{}", d.device): format!("{:0>43}", d.device),
                      format!("ed25519:{}", d.device): public },
        }));
        let fallback = json!({ "signed_curve25519:fallback": d.sign(json!({ "key": format!("{:0>43}", "fb"), "fallback": true })) });
        let body = json!({ "device_keys": keys, "fallback_keys": fallback });
        post(http, &format!("{base}/_matrix/client/v3/keys/upload"), Some(&d.token), body).await;
    }
    let devices = Arc::new(devices);
    println!("| operation | clients | requests | requests/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    let report = |name: &str, (all, measured): &(Vec<Duration>, Duration)| {
        println!(
            "| {name} | {} | {} | {:.0} | {:.1} | {:.1} |",
            args.clients,
            all.len(),
            all.len() as f64 / measured.as_secs_f64(),
            percentile(all, 0.50).as_secs_f64() * 1000.0,
            percentile(all, 0.99).as_secs_f64() * 1000.0,
        );
    };

    let (h, b) = (http.clone(), base.to_owned());
    let uploads = hammer(&devices, args.seconds, move |devices, i, round| {
        let (http, base) = (h.clone(), b.clone());
        async move {
            let d = &devices[i];
            let body = json!({ "one_time_keys": d.one_time_keys(round, 10) });
            post(&http, &format!("{base}/_matrix/client/v3/keys/upload"), Some(&d.token), body).await;
        }
    })
    .await;
    report("upload 10 signed one-time keys", &uploads);

    let (h, b) = (http.clone(), base.to_owned());
    let claims = hammer(&devices, args.seconds, move |devices, i, round| {
        let (http, base) = (h.clone(), b.clone());
        async move {
            // Always another device than the claimer's own.
            let target = &devices[(i + 1 + round % (devices.len() - 1)) % devices.len()];
            let body = json!({ "one_time_keys": { &target.user: { &target.device: "signed_curve25519" } } });
            let v = post(&http, &format!("{base}/_matrix/client/v3/keys/claim"), Some(&devices[i].token), body).await;
            assert!(v["one_time_keys"][&target.user][&target.device].is_object(), "a key for every claim");
        }
    })
    .await;
    report("claim 1 key", &claims);

    let (h, b) = (http.clone(), base.to_owned());
    let queries = hammer(&devices, args.seconds, move |devices, i, round| {
        let (http, base) = (h.clone(), b.clone());
        async move {
            let users: serde_json::Map<String, Value> =
                (0..10).map(|k| (devices[(i + round + k) % devices.len()].user.clone(), json!([]))).collect();
            let body = json!({ "device_keys": users });
            post(&http, &format!("{base}/_matrix/client/v3/keys/query"), Some(&devices[i].token), body).await;
        }
    })
    .await;
    report("query 10 users' keys", &queries);
}

async fn put(http: &reqwest::Client, url: &str, token: &str, body: Value) -> Value {
    let response = http.put(url).bearer_auth(token).json(&body).send().await.expect("request sent");
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {value}");
    value
}

/// Sends `count` messages (and a topic change every 100) into a room, 20 at a time.
async fn fill_room(http: &reqwest::Client, base: &str, token: &str, room: &str, count: usize, prefix: &str) {
    futures::stream::iter(0..count)
        .for_each_concurrent(20, |n| async move {
            let url = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{prefix}{n}");
            put(http, &url, token, json!({ "msgtype": "m.text", "body": format!("message {n}") })).await;
            if n % 100 == 99 {
                let url = format!("{base}/_matrix/client/v3/rooms/{room}/state/m.room.topic/");
                put(http, &url, token, json!({ "topic": format!("topic {n}") })).await;
            }
        })
        .await;
}

/// `--clients` readers paging back 100 events at a time from the end of the room, for
/// `--seconds`: (requests per second, sorted latencies).
async fn read_pages(http: &reqwest::Client, base: &str, room: &str, token: &str, args: &Args) -> (f64, Vec<Duration>) {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let readers = (0..args.clients).map(|_| async move {
        let mut latencies = Vec::new();
        let url = format!("{base}/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100");
        while Instant::now() < deadline {
            let t = Instant::now();
            let page = get(http, &url, token).await;
            latencies.push(t.elapsed());
            assert!(!page["chunk"].as_array().expect("chunk").is_empty(), "a page of events");
        }
        latencies
    });
    let mut all: Vec<Duration> = futures::future::join_all(readers).await.into_iter().flatten().collect();
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / elapsed, all)
}

async fn messages_scenario(http: &reqwest::Client, base: &str, args: &Args) {
    let owner = register(http, base, "owner").await;
    let late = register(http, base, "late").await;
    let create = format!("{base}/_matrix/client/v3/createRoom");
    let shared = post(http, &create, Some(&owner), json!({ "preset": "public_chat" })).await;
    let shared = shared["room_id"].as_str().expect("room").to_owned();
    let hidden = post(
        http,
        &create,
        Some(&owner),
        json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.history_visibility", "state_key": "",
            "content": { "history_visibility": "joined" } }] }),
    )
    .await;
    let hidden = hidden["room_id"].as_str().expect("room").to_owned();
    fill_room(http, base, &owner, &shared, 1000, "s").await;
    fill_room(http, base, &owner, &hidden, 1000, "h").await;
    post(http, &format!("{base}/_matrix/client/v3/join/{hidden}"), Some(&late), json!({})).await;
    fill_room(http, base, &owner, &hidden, 100, "after").await;

    println!("| reader | clients | seconds | requests/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for (label, room, token) in [
        ("member since creation, 1,000 messages", &shared, &owner),
        ("joined late, `joined` visibility", &hidden, &late),
    ] {
        let (rate, latencies) = read_pages(http, base, room, token, args).await;
        println!(
            "| {label} | {} | {} | {rate:.0} | {:.1} | {:.1} |",
            args.clients,
            args.seconds,
            percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0
        );
    }
}

async fn initial_sync_scenario(http: &reqwest::Client, base: &str, args: &Args) {
    let user = register(http, base, "member").await;
    let create = format!("{base}/_matrix/client/v3/createRoom");
    // Rooms one after the other (each creation is several durable writes), then their messages
    // concurrently.
    let mut rooms = Vec::with_capacity(args.rooms);
    for n in 0..args.rooms {
        let room = post(http, &create, Some(&user), json!({ "name": format!("room {n}"), "topic": "a topic" })).await;
        rooms.push(room["room_id"].as_str().expect("room").to_owned());
    }
    futures::stream::iter(rooms.iter().flat_map(|room| (0..args.messages).map(move |m| (room, m))))
        .for_each_concurrent(20, |(room, m)| {
            let user = &user;
            async move {
                let url = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/m{m}");
                put(http, &url, user, json!({ "msgtype": "m.text", "body": format!("message {m}") })).await;
            }
        })
        .await;
    // Timed to the response's last byte (the server's work and the transfer); the client's own
    // parse of the body is timed apart, since it is not the server's and shares the cores.
    let (mut samples, mut parsed, mut bytes) = (Vec::new(), Vec::new(), 0);
    let filter = urlencode(r#"{"room":{"timeline":{"limit":10}}}"#);
    for _ in 0..args.samples {
        let t = Instant::now();
        let url = format!("{base}/_matrix/client/v3/sync?filter={filter}");
        let response = http.get(&url).bearer_auth(&user).send().await.expect("request sent");
        assert!(response.status().is_success(), "{url}: {}", response.status());
        let body = response.bytes().await.expect("body");
        samples.push(t.elapsed());
        let sync: Value = serde_json::from_slice(&body).expect("json");
        parsed.push(t.elapsed());
        bytes = body.len();
        let joined = sync["rooms"]["join"].as_object().map_or(0, |rooms| rooms.len());
        assert_eq!(joined, args.rooms, "every room in the initial sync");
    }
    samples.sort();
    parsed.sort();
    println!(
        "| initial sync | rooms | samples | body bytes | min s | median s | max s | median s with the client's parse |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| user in {} rooms (name, topic, {} messages each), timeline limit 10 | {} | {} | {bytes} | {:.3} | {:.3} | {:.3} | {:.3} |",
        args.rooms,
        args.messages,
        args.rooms,
        samples.len(),
        samples[0].as_secs_f64(),
        samples[samples.len() / 2].as_secs_f64(),
        samples[samples.len() - 1].as_secs_f64(),
        parsed[parsed.len() / 2].as_secs_f64()
    );
}

/// A node of the federation scenario: a `hemicycle serve` with both listeners.
struct FedNode {
    child: std::process::Child,
    base: String,
    name: String,
    _dir: tempfile::TempDir,
}

impl Drop for FedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_node(server: &str, label: &str) -> FedNode {
    let dir = tempfile::Builder::new().prefix(&format!("loadgen-{label}-")).tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("the openssl command makes the test certificates");
    assert!(made.success(), "openssl could not make a certificate");
    let name = format!("127.0.0.1:{port}");
    let mut child = Command::new(server)
        .arg("serve")
        .env("HEMICYCLE_SERVER_NAME", &name)
        .env("HEMICYCLE_DATABASE__PATH", dir.path().join("db"))
        .env("HEMICYCLE_LISTEN__CLIENT", "127.0.0.1:0")
        .env("HEMICYCLE_LISTEN__FEDERATION", &name)
        .env("HEMICYCLE_TLS__CERT", &cert)
        .env("HEMICYCLE_TLS__KEY", &key)
        .env("HEMICYCLE_FEDERATION__VERIFY_TLS", "false")
        .env("HEMICYCLE_FEDERATION__ALLOW_RANGES", r#"["127.0.0.1/32"]"#)
        .env("HEMICYCLE_REGISTRATION__OPEN", "true")
        .env("HEMICYCLE_RATE_LIMITS__ENABLED", "false")
        .env("HEMICYCLE_LOG__LEVEL", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {server}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let base = loop {
        let line = lines.next().expect("the server prints its addresses").expect("a line");
        if let Some(url) = line.strip_prefix("hemicycle listening on ") {
            break url.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let probe = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().expect("client");
    let version = format!("https://{name}/_matrix/federation/v1/version");
    while !probe.get(&version).send().await.is_ok_and(|r| r.status().is_success()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    FedNode { child, base, name, _dir: dir }
}

/// Incremental `/sync` of a reader with an unread backlog (no read receipt): for 0, 800 and 5,000
/// unread messages, 200 times one new message then one sync from the previous token; the sync's
/// time and the notification count it reports.
async fn unread_scenario(http: &reqwest::Client, base: &str) {
    println!("| unread messages before | syncs | p50 ms | p99 ms | notification_count after the run (expected) |");
    println!("|---|---|---|---|---|");
    for (i, backlog) in [0u64, 800, 5000].into_iter().enumerate() {
        let sender = register(http, base, &format!("writer{i}")).await;
        let reader = register(http, base, &format!("reader{i}")).await;
        let room = create_public_room(http, base, &sender).await;
        post(http, &format!("{base}/_matrix/client/v3/join/{}", urlencode(&room)), Some(&reader), json!({})).await;
        futures::stream::iter(0..backlog)
            .map(|n| {
                let (sender, room) = (&sender, &room);
                async move { send_probe(http, base, sender, room, n).await }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
        let filter = "filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A10%7D%7D%7D";
        let first = get(http, &format!("{base}/_matrix/client/v3/sync?timeout=0&{filter}"), &reader).await;
        let mut since = first["next_batch"].as_str().expect("next_batch").to_owned();
        let mut times = Vec::new();
        let mut count = Value::Null;
        const ROUNDS: u64 = 200;
        for n in 0..ROUNDS {
            send_probe(http, base, &sender, &room, 1_000_000 + n).await;
            let started = Instant::now();
            let v = get(http, &format!("{base}/_matrix/client/v3/sync?since={since}&timeout=10000&{filter}"), &reader)
                .await;
            times.push(started.elapsed());
            since = v["next_batch"].as_str().expect("next_batch").to_owned();
            count = v["rooms"]["join"][&room]["unread_notifications"]["notification_count"].clone();
        }
        times.sort();
        println!(
            "| {backlog} | {ROUNDS} | {:.2} | {:.2} | {count} ({}) |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            backlog + ROUNDS,
        );
    }
}

/// `--rooms` users (default 500; use 1000) in one room, each with an http pusher to a push
/// gateway the load generator serves on loopback; one message, five times: the time until the
/// gateway has been notified for every member.
async fn push_scenario(http: &reqwest::Client, base: &str, args: &Args) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let received = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(tokio::sync::Notify::new());
    let (count, notify) = (received.clone(), arrived.clone());
    let app = axum::Router::new().route(
        "/_matrix/push/v1/notify",
        axum::routing::post(move || {
            let (count, notify) = (count.clone(), notify.clone());
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                notify.notify_one();
                axum::Json(json!({ "rejected": [] }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("gateway port");
    let gateway = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("gateway") });

    let sender = register(http, base, "announcer").await;
    let room = create_public_room(http, base, &sender).await;
    let members = args.rooms;
    let started = Instant::now();
    futures::stream::iter(0..members)
        .map(|i| {
            let (gateway, room) = (&gateway, &room);
            async move {
                let token = register(http, base, &format!("agent{i}")).await;
                let pusher = json!({
                    "app_id": "fr.gouv.loadgen", "pushkey": format!("key-{i}"), "kind": "http",
                    "app_display_name": "loadgen", "device_display_name": "loadgen", "lang": "fr",
                    "data": { "url": gateway },
                });
                post(http, &format!("{base}/_matrix/client/v3/pushers/set"), Some(&token), pusher).await;
                post(http, &format!("{base}/_matrix/client/v3/join/{}", urlencode(room)), Some(&token), json!({}))
                    .await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    eprintln!("{members} members with pushers in {:.0} s", started.elapsed().as_secs_f64());
    println!("| pushers in the room | message | all notified after (ms) |");
    println!("|---|---|---|");
    for n in 0..5u64 {
        let before = received.load(Ordering::SeqCst);
        let target = before + members;
        let sent = Instant::now();
        send_probe(http, base, &sender, &room, n).await;
        while received.load(Ordering::SeqCst) < target {
            let waiting = arrived.notified();
            if received.load(Ordering::SeqCst) >= target {
                break;
            }
            if tokio::time::timeout(Duration::from_secs(60), waiting).await.is_err() {
                break;
            }
        }
        let got = received.load(Ordering::SeqCst) - before;
        println!("| {members} | {} | {:.0} ({got} of {members} notified) |", n + 1, sent.elapsed().as_secs_f64() * 1e3);
    }
}

async fn create_public_room(http: &reqwest::Client, base: &str, token: &str) -> String {
    let v =
        post(http, &format!("{base}/_matrix/client/v3/createRoom"), Some(token), json!({ "preset": "public_chat" }))
            .await;
    v["room_id"].as_str().expect("room id").to_owned()
}

async fn join_via(http: &reqwest::Client, base: &str, token: &str, room: &str, via: &str) {
    let url = format!("{base}/_matrix/client/v3/join/{}?server_name={via}", urlencode(room));
    post(http, &url, Some(token), json!({})).await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Long-polls `/sync` on B, timing every `probe-<n>` message against when A's sender sent it;
/// returns the delivery latencies and how many distinct probes arrived, once `stop` fires.
fn spawn_probe_reader(
    http: reqwest::Client,
    base: String,
    token: String,
    sent_at: Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>>,
    stop: Arc<tokio::sync::Notify>,
    arrived: Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<(Vec<Duration>, Vec<Instant>)> {
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut arrivals = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let first = get(&http, &format!("{base}/_matrix/client/v3/sync?timeout=0&set_presence=offline"), &token).await;
        let mut since = first["next_batch"].as_str().expect("next_batch").to_owned();
        let stopped = stop.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        loop {
            // A timeline limit above any burst, so no gap hides events from the count.
            let url = format!(
                "{base}/_matrix/client/v3/sync?since={since}&timeout=30000&set_presence=offline\
                 &filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A5000%7D%7D%7D"
            );
            let v = tokio::select! {
                v = get(&http, &url, &token) => v,
                _ = &mut stopped => return (latencies, arrivals),
            };
            let now = Instant::now();
            for room in v["rooms"]["join"].as_object().into_iter().flat_map(|m| m.values()) {
                for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                    let Some(n) = event["content"]["body"]
                        .as_str()
                        .and_then(|b| b.strip_prefix("probe-"))
                        .and_then(|n| n.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    if seen.insert(n) {
                        arrived.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        arrivals.push(now);
                        if let Some(t) = sent_at.lock().expect("sent times").get(&n).copied() {
                            latencies.push(now.duration_since(t));
                        }
                    }
                }
            }
            since = v["next_batch"].as_str().expect("next_batch").to_owned();
        }
    })
}

async fn send_probe(http: &reqwest::Client, base: &str, token: &str, room: &str, n: u64) {
    let url = format!("{base}/_matrix/client/v3/rooms/{}/send/m.room.message/p{n}", urlencode(room));
    put(http, &url, token, json!({ "msgtype": "m.text", "body": format!("probe-{n}") })).await;
}

/// What one paced run measured.
struct Paced {
    sent: u64,
    /// Seconds from the first send to the last send's answer.
    send_span: f64,
    last_sent: Option<Instant>,
    latencies: Vec<Duration>,
    arrivals: Vec<Instant>,
}

/// Sends `rate` probes a second for `seconds` from `sender` on A (each at its due time, however
/// many are in flight) and waits (up to a minute) until B's reader has seen them all.
#[allow(clippy::too_many_arguments)]
async fn paced(
    http: &reqwest::Client,
    a: &str,
    b: &str,
    sender: &str,
    reader_token: &str,
    room: &str,
    rate: f64,
    seconds: u64,
    offset: u64,
) -> Paced {
    let sent_at: Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = spawn_probe_reader(
        http.clone(),
        b.to_owned(),
        reader_token.to_owned(),
        sent_at.clone(),
        stop.clone(),
        arrived.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let total = (rate * seconds as f64) as u64;
    let mut sends = futures::stream::FuturesUnordered::new();
    for n in 0..total {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        sent_at.lock().expect("sent times").insert(offset + n, Instant::now());
        let (http, base, token, room) = (http.clone(), a.to_owned(), sender.to_owned(), room.to_owned());
        sends.push(tokio::spawn(async move { send_probe(&http, &base, &token, &room, offset + n).await }));
        while let std::task::Poll::Ready(Some(_)) = futures::poll!(sends.next()) {}
    }
    while sends.next().await.is_some() {}
    let last_sent = Instant::now();
    let patience = Instant::now() + Duration::from_secs(60);
    while arrived.load(std::sync::atomic::Ordering::Relaxed) < total && Instant::now() < patience {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.notify_one();
    let (latencies, arrivals) = reader.await.expect("reader");
    Paced {
        sent: total,
        send_span: last_sent.duration_since(start).as_secs_f64(),
        last_sent: Some(last_sent),
        latencies,
        arrivals,
    }
}

async fn federation_scenario(args: &Args) {
    let (a, b) = tokio::join!(start_node(&args.server, "a"), start_node(&args.server, "b"));
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build().expect("client");
    let alice = register(&http, &a.base, "alice").await;
    let bob = register(&http, &b.base, "bob").await;
    let room = create_public_room(&http, &a.base, &alice).await;
    join_via(&http, &b.base, &bob, &room, &a.name).await;

    // 1. Latency at a steady 200 events/s.
    const RATE: f64 = 200.0;
    let run = paced(&http, &a.base, &b.base, &alice, &bob, &room, RATE, args.seconds, 0).await;
    let mut latencies = run.latencies.clone();
    latencies.sort();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| send→sync across nodes at {RATE} events/s, {} s | {} of {} delivered; p50 {:.1} ms, p99 {:.1} ms |",
        args.seconds,
        latencies.len(),
        run.sent,
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );

    // 1b. Sustained throughput: steady offered rates; a rate is sustained when every event
    // arrives on B and B keeps up (the last arrives within a second of the last send).
    for (i, rate) in [1000.0, 1500.0, 2000.0, 2500.0].into_iter().enumerate() {
        let offset = 10_000_000 * (i as u64 + 1);
        let run = paced(&http, &a.base, &b.base, &alice, &bob, &room, rate, args.seconds, offset).await;
        let mut latencies = run.latencies.clone();
        latencies.sort();
        let lag = match (run.arrivals.last(), run.last_sent) {
            (Some(last), Some(sent)) if *last > sent => last.duration_since(sent).as_secs_f64(),
            _ => 0.0,
        };
        let sustained = run.arrivals.len() as u64 == run.sent && lag < 1.0;
        println!(
            "| steady {rate} events/s offered for {} s | {} sent ({:.0}/s achieved on A); {} arrived on B; lag after the last send {:.2} s; p50 {:.1} ms, p99 {:.1} ms; {} |",
            args.seconds,
            run.sent,
            run.sent as f64 / run.send_span.max(1e-9),
            run.arrivals.len(),
            lag,
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            if sustained { "sustained" } else { "NOT sustained" },
        );
    }

    // 2. Throughput: `--clients` senders on A as fast as they are answered.
    let sent_at: Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = spawn_probe_reader(http.clone(), b.base.clone(), bob.clone(), sent_at, stop.clone(), arrived.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(1_000_000));
    let mut senders = Vec::new();
    for _ in 0..args.clients {
        let (http, base, token, room, counter) =
            (http.clone(), a.base.clone(), alice.clone(), room.clone(), counter.clone());
        senders.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                send_probe(&http, &base, &token, &room, n).await;
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    let sent = counter.load(std::sync::atomic::Ordering::Relaxed) - 1_000_000;
    // B gets what is still in flight: wait for every event (a minute at most).
    let patience = Instant::now() + Duration::from_secs(60);
    while arrived.load(std::sync::atomic::Ordering::Relaxed) < sent && Instant::now() < patience {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.notify_one();
    let (_, arrivals) = reader.await.expect("reader");
    let span = match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) if last > first => last.duration_since(*first).as_secs_f64(),
        _ => f64::NAN,
    };
    println!(
        "| sustained across nodes, {} senders on A, {} s | {sent} sent ({:.0}/s on A); {} arrived in B's sync, {:.0} events/s |",
        args.clients,
        args.seconds,
        sent as f64 / args.seconds as f64,
        arrivals.len(),
        arrivals.len() as f64 / span,
    );

    // 3. Joining a big room: `--rooms` members and 10,000 events on A, then B's user joins.
    let big = create_public_room(&http, &a.base, &alice).await;
    let members = args.rooms.min(5000);
    let started = Instant::now();
    futures::stream::iter(0..members)
        .map(|i| {
            let (http, base, big) = (&http, &a.base, &big);
            async move {
                let token = register(http, base, &format!("member{i}")).await;
                post(http, &format!("{base}/_matrix/client/v3/rooms/{}/join", urlencode(big)), Some(&token), json!({}))
                    .await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let filled = Instant::now();
    futures::stream::iter(0..10_000u64)
        .map(|n| {
            let (http, base, token, big) = (&http, &a.base, &alice, &big);
            async move { send_probe(http, base, token, big, 5_000_000 + n).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    eprintln!(
        "big room ready: {members} members in {:.0} s, 10,000 events in {:.0} s",
        filled.duration_since(started).as_secs_f64(),
        filled.elapsed().as_secs_f64()
    );
    let carol = register(&http, &b.base, "carol").await;
    let joining = Instant::now();
    join_via(&http, &b.base, &carol, &big, &a.name).await;
    println!(
        "| join from B of a room on A with {} members and 10,000 events | {:.2} s |",
        members + 1,
        joining.elapsed().as_secs_f64()
    );
}
