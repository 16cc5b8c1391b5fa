//! Load generator: drives a real `hemicycle serve` process over HTTP on loopback (client and
//! server on the same machine) and measures what each scenario names.
//!
//! ```sh
//! cargo run --release --example loadgen -- [--scenario send|sync|media|keys|messages|initial-sync|unread|push|login-burst|federation|intake]
//!     [--clients 50] [--seconds 10] [--server target/release/hemicycle]
//!     [--events N] [--send-rooms 10,1] [--synapse] [--callgrind] [--receiver <B's binary>]
//!     [--fed-rooms 20] [--fed-senders 20] [--origins 4]
//! cargo run --example loadgen -- --smoke   # every scenario, tiny sizes, debug build: correctness only
//! ```
//!
//! It starts its own server on a temp database (registration open, rate limits off) and runs
//! bounded scenarios that stop by themselves; results go to stdout as tables suitable for
//! `docs/performance.md`. Each scenario checks what it measured (counts exact, no duplicates,
//! every event delivered) after printing its table and fails if a check does not hold; no check
//! is about time. `--smoke` runs every scenario one after the other at tiny sizes (CI runs it
//! with the debug build, see `scripts/test`), so the scenarios cannot rot.
//! - `send`: the write path with everything on. One user per client (every fifth with a keyword
//!   push rule of its own), one appservice registered (served here, every room in its
//!   namespace); clients spread over 10 rooms, then all in 1 room (`--send-rooms 10,1`), each
//!   sending `PUT /send` as fast as answers come back for `--seconds` (or `--events` in all):
//!   events/s and latency. Every message must reach the appservice exactly once. `--synapse`
//!   runs the same on a Synapse on PostgreSQL afterwards (`support/synapse.rs`: `SYNAPSE_VENV`,
//!   `PSYCOPG2_PATH`, Debian's PostgreSQL 15) and prints the ratio; `--callgrind`
//!   drives a server run under callgrind (see `docs/performance.md`).
//! - `sync`: `--clients` users long-polling `/sync` in rooms of `--fanout` (default 10; ready once
//!   the server counts them all waiting), the server's CPU while they wait, then one sender
//!   posting 50 messages per second on a schedule for `--seconds`. The readers behave as clients
//!   with the room open do: a read receipt for the last event of every batch that brought
//!   messages, and typing notices (in each room one reader at a time types: it starts on a
//!   message and stops on the room's next one). Send→sync delivery latency, and every (reader,
//!   message) pair checked: deliveries of the expected total, duplicates, misses, late sends,
//!   failed readers; receipts and typing notices sent and seen; at the end every reader's receipt
//!   is in its room's receipts and nobody is left typing.
//! - `media`: one client uploading (`POST /media/v3/upload`) then downloading
//!   (`GET /client/v1/media/download`) files of 1 MiB and 100 MiB, one at a time: MB/s each way.
//! - `messages`: a room of 1,000 messages (topic changes every 100), walked back from its end to
//!   its creation with `GET /messages?dir=b&limit=100&from=<the previous page's end>` by
//!   `--clients` readers at once for `--seconds` (each walk restarts from the end when it reached
//!   the start; every finished walk must have seen every message exactly once): once by a member
//!   since the room's creation, once by a member who joined at the end of a `joined`-only room
//!   (whose walk goes through the history-visibility window and must see exactly the 100 messages
//!   after the join): walks, requests/s and latency.
//! - `initial-sync`: a user in `--rooms` rooms (default 500) of one member, each with a name, a
//!   topic and `--messages` messages (default 20); then a user in `--large-rooms` rooms (default
//!   50) of `--room-members` members (default 300) with `--room-state` state events besides
//!   membership and the creation's (default 50: a name, a topic, 48 more), the messages sent by
//!   the members; `--samples` (default 7) initial `/sync`s of each user with a timeline limit of
//!   10 (for the large rooms with full state, then with lazy-loaded members as Element asks):
//!   min, median and max seconds; every room, member and state event checked present.
//! - `push`: `--rooms` users in one room, each with an http pusher to a gateway the load
//!   generator serves; one message, five times: time until every pusher's gateway call arrived.
//! - `unread`: a reader with 0, 800 and 5,000 unread messages (no read receipt) in a room; 200
//!   times one new message (one in ten mentions the reader) then one incremental `/sync`: its
//!   latency, and `notification_count` / `highlight_count` checked exact after every sync; then a
//!   read receipt on the last message must take both to 0, and the next message to 1.
//! - `federation`: two nodes (A and B, each its own `hemicycle serve` with an HTTPS federation
//!   listener; certificates made with the `openssl` command). `--fed-rooms` rooms on A (default
//!   20) with `--fed-senders` users of A (default 20) and one user of B in each: messages spread
//!   over every room and sender, B's user long-polling `/sync`; every message counted as it
//!   arrives (duplicates counted, not hidden; every message must arrive exactly once). At 200
//!   messages/s for `--seconds`: cross-node send→sync latency; then steady offered rates of 1,000
//!   to 2,500 messages/s for `--seconds` each (sustained when all arrive and B is less than a
//!   second behind at the end); then `--clients` senders on A as fast as answers come back:
//!   events/s arriving in B's sync. Each phase also reports its slowest 1-second window (the
//!   worst p99 latency of the messages sent in one second, and the fewest arrivals in one second
//!   while sending). Then a room on A with `--rooms` members (default 1,000) and 10,000 events,
//!   joined by a user of B: seconds for the `/join`. With `--callgrind`, B runs `--receiver` (a
//!   script that execs the server under callgrind) and only the intake runs: `--events` messages
//!   (default 2,000) from `--clients` senders on A as fast as answered, B's counters zeroed before
//!   and dumped once all arrived and B is quiet (see `docs/performance.md`).
//! - `intake`: node B alone taking in PDUs (the federation scenario's A builds and signs every
//!   event on the same cores, so there B's intake cannot be told apart from A's sending). B is a
//!   `hemicycle serve` as in `federation` (`--receiver` too); `--origins` remote servers (default
//!   4) are served by the load generator itself, each on HTTPS with its own signing key (its key
//!   document, 200 to B's transactions, 404 to anything else). A reader on B makes `--fed-rooms`
//!   public rooms (default 20); each origin joins `--fed-senders` / `--origins` users (default 5)
//!   to every room through make_join/send_join. Then, before anything is measured, `--events`
//!   `m.room.message` PDUs (default 20,000) are built and signed: message `n` in room
//!   `n % rooms`, each room's chain from one origin (its senders in turn), each PDU naming the
//!   room's previous one, so B never has to fetch an event; and packed in signed transactions of
//!   at most 50. Measured: every origin sends its transactions one at a time (one in flight per
//!   origin, as the spec asks) as fast as B answers, while the reader long-polls `/sync`: seconds
//!   from the first transaction to the last arrival, events/s arriving, duplicates, transaction
//!   round trips and send→sync latency (p50, p99), B's CPU seconds (at the last arrival and once
//!   quiet) and RSS. Every message must arrive exactly once, none be rejected, and B must ask the
//!   origins for no event while it takes them in. With `--callgrind`, B's counters are zeroed
//!   before the first transaction and dumped once all arrived and B is quiet.
//! - `keys`: `--clients` devices with real ed25519 identities, each in turn uploading batches of
//!   10 signed one-time keys, claiming other devices' keys (one-time, then fallback), and querying
//!   10 users' keys, as fast as answers come back: requests/s and latency of each.
//! - `login-burst`: waves of concurrent registrations (50, then 250 more), then all 300 accounts
//!   logging in at once, the server's RSS sampled throughout and after a minute idle.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{json, Value};
use sha2::Digest;

#[path = "support/synapse.rs"]
mod synapse;
use synapse::Synapse;

/// The server's allocator here too: the load generator shares the two cores with the server it
/// measures, and glibc's `malloc` was a tenth of its own CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    scenario: String,
    clients: usize,
    seconds: u64,
    server: String,
    rooms: usize,
    messages: usize,
    samples: usize,
    fanout: usize,
    /// `initial-sync`: rooms of realistic membership, their members and state events.
    large_rooms: usize,
    room_members: usize,
    room_state: usize,
    /// `federation`: rooms on A and senders on A the messages are spread over. `intake`: rooms
    /// on B, and the remote senders (spread over the origins) the PDUs are spread over.
    fed_rooms: usize,
    fed_senders: usize,
    /// `intake`: the synthetic remote servers B takes PDUs from.
    origins: usize,
    /// `send`: events per room layout (0: send for `--seconds` instead), the room layouts, and
    /// whether Synapse runs the same after Hemicycle.
    events: u64,
    send_rooms: Vec<usize>,
    synapse: bool,
    /// `send`: the server runs under `valgrind --tool=callgrind`; its counters are zeroed before
    /// each layout's sending and dumped once the server is quiet after it. `federation`: the
    /// receiving node B does (`--receiver`), and only the intake phase runs. `intake`: B does
    /// (`--receiver`); its counters are zeroed before the first transaction and dumped once B is
    /// quiet after the last arrival.
    callgrind: bool,
    /// `federation` and `intake`: B's binary (default `--server`), e.g. a script that execs it
    /// under callgrind.
    receiver: Option<String>,
    /// `--smoke`: every scenario at the sizes of [`Args::smoke`].
    smoke: bool,
    /// Sizes only the smoke run changes (the documented figures use the defaults).
    sizes: Sizes,
}

/// Sizes with no flag of their own: the measured runs use [`Sizes::default`], the smoke run
/// tiny ones.
struct Sizes {
    /// `sync`: seconds the server's CPU is sampled while every reader waits.
    idle_seconds: f64,
    /// `media`: (file size, files).
    media: Vec<(usize, usize)>,
    /// `messages`: messages in the room, the page size, messages after the late joiner's join.
    history: usize,
    page: usize,
    after_join: usize,
    /// `unread`: the backlogs, and the messages (each followed by a sync) on top of each.
    backlogs: Vec<u64>,
    rounds: u64,
    /// `login-burst`: the two registration waves, and the idle wait before the last reading.
    waves: [usize; 2],
    idle_after: Duration,
    /// `federation`: the latency phase's rate, the steady offered rates, the big room's events.
    fed_rate: f64,
    fed_rates: Vec<f64>,
    big_room_events: u64,
    /// `intake`: the PDUs sent when `--events` is not given.
    intake_events: u64,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            idle_seconds: 5.0,
            media: vec![(1 << 20, 50), (100 << 20, 3)],
            history: 1000,
            page: 100,
            after_join: 100,
            backlogs: vec![0, 800, 5000],
            rounds: 200,
            waves: [50, 250],
            idle_after: Duration::from_secs(60),
            fed_rate: 200.0,
            fed_rates: vec![1000.0, 1500.0, 2000.0, 2500.0],
            big_room_events: 10_000,
            intake_events: 20_000,
        }
    }
}

/// Every scenario `--scenario` knows, in the order `--smoke` runs them. A scenario missing here
/// is refused, so none escapes the smoke run.
const SCENARIOS: &[&str] = &[
    "send",
    "sync",
    "media",
    "keys",
    "messages",
    "initial-sync",
    "unread",
    "push",
    "login-burst",
    "federation",
    "intake",
];

impl Args {
    /// The smoke run's sizes for `scenario`: seconds instead of minutes on the debug build.
    fn smoke(scenario: &str, server: &str) -> Args {
        Args {
            scenario: scenario.to_owned(),
            clients: 4,
            // Two seconds give the federation phases a whole second of sending to report.
            seconds: if scenario == "federation" { 2 } else { 1 },
            server: server.to_owned(),
            rooms: 3,
            messages: 3,
            samples: 2,
            fanout: 2,
            large_rooms: 2,
            room_members: 6,
            room_state: 5,
            fed_rooms: 3,
            fed_senders: 3,
            origins: 2,
            events: 0,
            send_rooms: vec![10, 1],
            synapse: false,
            callgrind: false,
            receiver: None,
            smoke: true,
            sizes: Sizes {
                idle_seconds: 0.5,
                media: vec![(1 << 20, 2), (3 << 20, 1)],
                history: 120,
                page: 20,
                after_join: 15,
                backlogs: vec![0, 30],
                rounds: 12,
                waves: [2, 3],
                idle_after: Duration::from_secs(1),
                fed_rate: 50.0,
                fed_rates: vec![100.0],
                big_room_events: 50,
                intake_events: 150,
            },
        }
    }
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
        large_rooms: 50,
        room_members: 300,
        room_state: 50,
        fed_rooms: 20,
        fed_senders: 20,
        origins: 4,
        events: 0,
        send_rooms: vec![10, 1],
        synapse: false,
        callgrind: false,
        receiver: None,
        smoke: false,
        sizes: Sizes::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--smoke" => out.smoke = true,
            "--synapse" => out.synapse = true,
            "--callgrind" => out.callgrind = true,
            _ => {}
        }
        if ["--smoke", "--synapse", "--callgrind"].contains(&flag.as_str()) {
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = |v: &str| -> usize { v.parse().unwrap_or_else(|_| panic!("{flag} is a number")) };
        match flag.as_str() {
            "--clients" => out.clients = number(&value),
            "--seconds" => out.seconds = number(&value) as u64,
            "--server" => out.server = value,
            "--receiver" => out.receiver = Some(value),
            "--scenario" => out.scenario = value,
            "--rooms" => out.rooms = number(&value),
            "--messages" => out.messages = number(&value),
            "--samples" => out.samples = number(&value),
            "--fanout" => out.fanout = number(&value),
            "--large-rooms" => out.large_rooms = number(&value),
            "--room-members" => out.room_members = number(&value),
            "--room-state" => out.room_state = number(&value),
            "--fed-rooms" => out.fed_rooms = number(&value),
            "--fed-senders" => out.fed_senders = number(&value),
            "--origins" => out.origins = number(&value),
            "--events" => out.events = number(&value) as u64,
            "--send-rooms" => out.send_rooms = value.split(',').map(number).collect(),
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
    if args.smoke {
        return smoke(&args.server).await;
    }
    run(&args).await;
}

/// Every scenario at tiny sizes, each on a fresh server: the scenarios' own checks (exact counts,
/// no duplicates, every event delivered) hold or the run fails. No check is about time.
async fn smoke(server: &str) {
    assert!(
        std::path::Path::new(server).is_file(),
        "no server binary at {server}: build it first (`cargo build -p hemicycle --bin hemicycle`) or pass --server"
    );
    let started = Instant::now();
    for scenario in SCENARIOS {
        let t = Instant::now();
        println!("\n### {scenario} (smoke)\n");
        run(&Args::smoke(scenario, server)).await;
        eprintln!("loadgen smoke: {scenario} passed in {:.1} s", t.elapsed().as_secs_f64());
    }
    eprintln!("loadgen smoke: {} scenarios passed in {:.1} s", SCENARIOS.len(), started.elapsed().as_secs_f64());
}

/// The server of a single-node scenario, killed when the scenario ends (or fails).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(args: &Args) {
    assert!(
        SCENARIOS.contains(&args.scenario.as_str()),
        "unknown scenario {} (a new scenario goes into SCENARIOS too, so the smoke run covers it)",
        args.scenario
    );
    match args.scenario.as_str() {
        "federation" => return federation_scenario(args).await,
        "intake" => return intake_scenario(args).await,
        "send" => return send_scenario(args).await,
        _ => {}
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server(
        Command::new(&args.server)
            .arg("serve")
            .env("HEMICYCLE_DATABASE__PATH", dir.path().join("db"))
            .env("HEMICYCLE_LISTEN__CLIENT", "127.0.0.1:0")
            .env("HEMICYCLE_REGISTRATION__OPEN", "true")
            .env("HEMICYCLE_RATE_LIMITS__ENABLED", "false")
            .env("HEMICYCLE_LOG__LEVEL", "warn")
            .env("HEMICYCLE_MEDIA__MAX_UPLOAD_SIZE", (200u64 * 1024 * 1024).to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.server)),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().expect("stdout")).read_line(&mut line).expect("server address");
    let base = line.trim().strip_prefix("hemicycle listening on ").expect("address line").to_owned();
    let pid = server.0.id();

    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build().expect("client");
    match args.scenario.as_str() {
        "sync" => sync_scenario(&http, &base, args, pid, &dir.path().join("db")).await,
        "media" => media_scenario(&http, &base, args).await,
        "keys" => keys_scenario(&http, &base, args).await,
        "messages" => messages_scenario(&http, &base, args).await,
        "initial-sync" => initial_sync_scenario(&http, &base, args).await,
        "unread" => unread_scenario(&http, &base, args).await,
        "push" => push_scenario(&http, &base, args).await,
        "login-burst" => login_burst_scenario(&http, &base, pid, args).await,
        other => panic!("unknown scenario {other}"),
    }
    let (rss, peak) = rss_mib(pid);
    println!("\nserver RSS at the end: {rss:.0} MiB (peak {peak:.0} MiB)");
}

/// The issue's send scenario, on Hemicycle and then (with `--synapse`) on Synapse, both with the
/// same appservice registered, the same users, push rules and rooms: events/s and latency of
/// `PUT /send` for each room layout of `--send-rooms`, and Hemicycle's rate over Synapse's.
async fn send_scenario(args: &Args) {
    let appservice = LoadAppservice::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let registration = dir.path().join("appservice.yaml");
    std::fs::write(&registration, appservice.registration()).expect("write the appservice registration");
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build().expect("client");

    println!("| server | scenario | clients | events | seconds | events/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut server = Server(
        Command::new(&args.server)
            .arg("serve")
            .env("HEMICYCLE_DATABASE__PATH", dir.path().join("db"))
            .env("HEMICYCLE_LISTEN__CLIENT", "127.0.0.1:0")
            .env("HEMICYCLE_REGISTRATION__OPEN", "true")
            .env("HEMICYCLE_RATE_LIMITS__ENABLED", "false")
            .env("HEMICYCLE_LOG__LEVEL", "warn")
            .env("HEMICYCLE_APPSERVICES__REGISTRATIONS", format!("[{:?}]", registration.display().to_string()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.server)),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().expect("stdout")).read_line(&mut line).expect("server address");
    let base = line.trim().strip_prefix("hemicycle listening on ").expect("address line").to_owned();
    let pid = server.0.id();
    let ours = send_phases(&http, &base, "Hemicycle", args, &appservice, pid).await;
    let (rss, peak) = rss_mib(pid);
    drop(server);
    println!("\nHemicycle's RSS at the end: {rss:.0} MiB (peak {peak:.0} MiB)");
    if !args.synapse {
        return;
    }
    let synapse =
        Synapse::start("localhost", &format!("app_service_config_files: [{:?}]", registration.display().to_string()))
            .await;
    println!();
    let theirs = send_phases(&http, &synapse.base, "Synapse", args, &appservice, synapse.pid()).await;
    let (rss, peak) = rss_mib(synapse.pid());
    println!("\nSynapse's RSS at the end: {rss:.0} MiB (peak {peak:.0} MiB)\n");
    println!("| scenario | Hemicycle events/s | Synapse events/s | Hemicycle / Synapse |");
    println!("|---|---|---|---|");
    for ((rooms, ours), (_, theirs)) in ours.iter().zip(&theirs) {
        println!("| {rooms} room(s) | {ours:.0} | {theirs:.0} | {:.0}× |", ours / theirs);
    }
}

/// `send` on one server: `--clients` users registered (every fifth with a keyword push rule of
/// its own, on its name, so not every member shares the default rules), then for each room
/// layout of `--send-rooms` the users spread over that many new rooms, each sending `PUT /send`
/// as fast as answered for `--seconds` (or until `--events` are sent). The messages name a
/// member, so the keyword rules fire. Every message must reach the appservice exactly once.
/// Returns (rooms, events/s) per layout.
async fn send_phases(
    http: &reqwest::Client,
    base: &str,
    label: &str,
    args: &Args,
    appservice: &LoadAppservice,
    pid: u32,
) -> Vec<(usize, f64)> {
    let mut tokens = Vec::new();
    for i in 0..args.clients {
        let token = register_uia(http, base, &format!("load{i}")).await;
        if i % 5 == 0 {
            let rule = json!({ "pattern": format!("load{i}"), "actions": ["notify", { "set_tweak": "highlight" }] });
            put(http, &format!("{base}/_matrix/client/v3/pushrules/global/content/name-{i}"), &token, rule).await;
        }
        tokens.push(token);
    }
    let mut rates = Vec::new();
    for &rooms in &args.send_rooms {
        let mut room_ids = Vec::new();
        for _ in 0..rooms {
            room_ids.push(create_public_room(http, base, &tokens[0]).await);
        }
        for (i, token) in tokens.iter().enumerate() {
            let room = urlencode(&room_ids[i % rooms]);
            post(http, &format!("{base}/_matrix/client/v3/rooms/{room}/join"), Some(token), json!({})).await;
        }
        let before = appservice.messages();
        if args.callgrind {
            callgrind_control(&["--zero"], pid);
        }
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let quota = args.events;
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let started = Instant::now();
        let room_ids = Arc::new(room_ids);
        let mut workers = Vec::new();
        for (i, token) in tokens.iter().cloned().enumerate() {
            let (http, base, room_ids, counter) = (http.clone(), base.to_owned(), room_ids.clone(), counter.clone());
            let clients = args.clients;
            workers.push(tokio::spawn(async move {
                let room = urlencode(&room_ids[i % room_ids.len()]);
                let mut latencies = Vec::new();
                loop {
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let more = if quota > 0 { n < quota } else { Instant::now() < deadline };
                    if !more {
                        break;
                    }
                    let url = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/r{rooms}-{n}");
                    let body = format!("load message {n} for load{}", (n as usize * 7 + i) % clients);
                    let t = Instant::now();
                    let response = http
                        .put(&url)
                        .bearer_auth(&token)
                        .json(&json!({ "msgtype": "m.text", "body": body }))
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
        let rate = all.len() as f64 / elapsed;
        println!(
            "| {label} | {rooms} room{} | {} | {} | {elapsed:.1} | {rate:.0} | {:.1} | {:.1} |",
            if rooms == 1 { "" } else { "s" },
            args.clients,
            all.len(),
            percentile(&all, 0.50).as_secs_f64() * 1000.0,
            percentile(&all, 0.99).as_secs_f64() * 1000.0,
        );
        let expected = before + all.len();
        appservice.wait_for(expected).await;
        let (messages, duplicates) = (appservice.messages(), appservice.duplicates());
        assert_eq!((messages, duplicates), (expected, 0), "{label}: every message reaches the appservice exactly once");
        if args.callgrind {
            wait_quiet(pid).await;
            callgrind_control(&["--dump"], pid);
            eprintln!("callgrind: {label}, {rooms} room(s): {} events in the dump just written", all.len());
        }
        rates.push((rooms, rate));
    }
    rates
}

/// Runs `callgrind_control` on the server (a `valgrind --tool=callgrind` process: pass a script
/// that `exec`s it as `--server`), so a dump holds the sending and what it caused only.
fn callgrind_control(what: &[&str], pid: u32) {
    let status = Command::new("callgrind_control")
        .args(what)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .status()
        .expect("callgrind_control (valgrind) is installed");
    assert!(status.success(), "callgrind_control {what:?} {pid} failed");
}

/// Waits until the server has used less than 2 % of a core for a whole second: the stream's
/// consumers (push rules, search index, appservice, federation) are done with what was sent.
async fn wait_quiet(pid: u32) {
    loop {
        let before = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if cpu_seconds(pid) - before < 0.02 {
            return;
        }
    }
}

/// What the send scenario's appservice reads of a transaction: each event's id and body only,
/// borrowed from the request where no escape forces a copy (it runs on the cores it measures).
#[derive(serde::Deserialize)]
struct AppserviceTxn<'a> {
    #[serde(borrow)]
    events: Vec<AppserviceEvent<'a>>,
}

#[derive(serde::Deserialize)]
struct AppserviceEvent<'a> {
    #[serde(borrow)]
    event_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    content: AppserviceContent<'a>,
}

#[derive(serde::Deserialize, Default)]
struct AppserviceContent<'a> {
    #[serde(borrow)]
    body: Option<std::borrow::Cow<'a, str>>,
}

/// The appservice of the send scenario, served by the load generator: every room is in its
/// namespace, so every message goes out to it in a transaction. It counts the load messages it
/// is sent (by event id) and every second copy of one.
struct LoadAppservice {
    url: String,
    seen: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
    count: tokio::sync::watch::Receiver<usize>,
}

impl LoadAppservice {
    async fn start() -> Self {
        let seen: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>> = Arc::default();
        let (counted, count) = tokio::sync::watch::channel(0usize);
        let counted = Arc::new(counted);
        let tally = seen.clone();
        let app = axum::Router::new().route(
            "/_matrix/app/v1/transactions/{txn}",
            axum::routing::put(move |body: axum::body::Bytes| {
                let (tally, counted) = (tally.clone(), counted.clone());
                async move {
                    let body: AppserviceTxn = serde_json::from_slice(&body).expect("a transaction of events");
                    let mut seen = tally.lock().expect("appservice tally");
                    for event in body.events {
                        let load = event.content.body.as_deref().is_some_and(|b| b.starts_with("load message "));
                        if let (true, Some(id)) = (load, event.event_id) {
                            *seen.entry(id.into_owned()).or_default() += 1;
                        }
                    }
                    counted.send_replace(seen.len());
                    axum::Json(json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("appservice port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("appservice") });
        Self { url, seen, count }
    }

    /// A registration in Synapse's format, which both servers read.
    fn registration(&self) -> String {
        format!(
            "id: loadgen\nurl: \"{}\"\nas_token: loadgen-as-token\nhs_token: loadgen-hs-token\n\
             sender_localpart: loadbridge\nrate_limited: false\nnamespaces:\n  users:\n    - exclusive: true\n      \
             regex: \"@bridge_.*\"\n  aliases: []\n  rooms:\n    - exclusive: false\n      regex: \".*\"\n",
            self.url
        )
    }

    /// Distinct load messages received so far.
    fn messages(&self) -> usize {
        *self.count.borrow()
    }

    /// Copies received beyond the first of each message.
    fn duplicates(&self) -> u32 {
        self.seen.lock().expect("appservice tally").values().map(|c| c - 1).sum()
    }

    /// Waits until `total` distinct messages arrived (ten minutes at most: a server that stops
    /// delivering fails the count check after it).
    async fn wait_for(&self, total: usize) {
        let mut count = self.count.clone();
        let _ = tokio::time::timeout(Duration::from_secs(600), count.wait_for(|n| *n >= total)).await;
    }
}

/// Registers `name` through the dummy flow in two steps (a session first), as Synapse asks;
/// Hemicycle takes the same. Returns the access token.
async fn register_uia(http: &reqwest::Client, base: &str, name: &str) -> String {
    let url = format!("{base}/_matrix/client/v3/register");
    let first: Value = http
        .post(&url)
        .json(&json!({ "username": name, "password": "load-password" }))
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .unwrap_or(Value::Null);
    let mut auth = json!({ "type": "m.login.dummy" });
    if let Some(session) = first["session"].as_str() {
        auth["session"] = json!(session);
    }
    let body = json!({ "username": name, "password": "load-password", "auth": auth });
    let v = post(http, &url, None, body).await;
    v["access_token"].as_str().expect("token").to_owned()
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
async fn login_burst_scenario(http: &reqwest::Client, base: &str, pid: u32, args: &Args) {
    println!("| step | concurrent requests | p50 ms | p99 ms | RSS peak MiB | RSS after MiB |");
    println!("|---|---|---|---|---|---|");
    println!("| idle after start | 0 | | | | {:.0} |", rss_mib(pid).0);
    let mut registered = 0usize;
    let [first, second] = args.sizes.waves;
    for (step, wave) in [("registrations", first), ("registrations", second), ("logins", first + second)] {
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
    tokio::time::sleep(args.sizes.idle_after).await;
    println!("| {} s idle | 0 | | | | {:.0} |", args.sizes.idle_after.as_secs(), rss_mib(pid).0);
}

async fn register(http: &reqwest::Client, base: &str, name: &str) -> String {
    register_user(http, base, name).await.0
}

/// A new account: (access token, user id).
async fn register_user(http: &reqwest::Client, base: &str, name: &str) -> (String, String) {
    let body = json!({ "username": name, "password": "load-password", "auth": { "type": "m.login.dummy" } });
    let v = post(http, &format!("{base}/_matrix/client/v3/register"), None, body).await;
    (v["access_token"].as_str().expect("token").to_owned(), v["user_id"].as_str().expect("user id").to_owned())
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

/// What one reader of the `sync` scenario saw and sent.
#[derive(Default)]
struct ReaderLog {
    seen: Seen,
    receipts_sent: u64,
    typing_sent: u64,
    /// Other members' receipts in its syncs, as (user, event).
    receipts_seen: std::collections::HashSet<(String, String)>,
    /// Receipts that came again in a later sync (not an error for a client, but work done twice).
    receipts_repeated: u64,
    /// `m.typing` updates in its syncs.
    typing_seen: u64,
}

/// The probe number of a `probe-<n>` message.
fn probe_number(event: &Value) -> Option<u64> {
    event["content"]["body"].as_str().and_then(|b| b.strip_prefix("probe-")).and_then(|n| n.parse().ok())
}

/// Sends the newest read receipt it is given, one request at a time, as a client does (a newer
/// receipt replaces one not yet sent); returns how many it sent once its sender is dropped.
fn spawn_receipt_sender(
    http: reqwest::Client,
    base: String,
    token: String,
    room: String,
) -> (tokio::sync::watch::Sender<String>, tokio::task::JoinHandle<u64>) {
    let (latest, mut next) = tokio::sync::watch::channel(String::new());
    let task = tokio::spawn(async move {
        let mut sent = 0;
        while next.changed().await.is_ok() {
            let event = next.borrow_and_update().clone();
            let url =
                format!("{base}/_matrix/client/v3/rooms/{}/receipt/m.read/{}", urlencode(&room), urlencode(&event));
            post(&http, &url, Some(&token), json!({})).await;
            sent += 1;
        }
        sent
    });
    (latest, task)
}

async fn sync_scenario(http: &reqwest::Client, base: &str, args: &Args, server_pid: u32, db: &std::path::Path) {
    const RATE: f64 = 50.0;
    let sender = register(http, base, "sender").await;
    let rooms_needed = args.clients.div_ceil(args.fanout);
    let mut rooms = Vec::new();
    for _ in 0..rooms_needed {
        rooms.push(create_public_room(http, base, &sender).await);
    }
    let rooms = Arc::new(rooms);
    // Reader i is in room i % rooms and is the `i / rooms`-th reader there.
    let readers_in = |room: usize| (room..args.clients).step_by(rooms.len()).count() as u64;
    // Register and join in parallel (argon2 hashing dominates registration).
    let syncers: Vec<(usize, String, String)> = futures::stream::iter(0..args.clients)
        .map(|i| {
            let room = rooms[i % rooms.len()].clone();
            async move {
                let (token, user) = register_user(http, base, &format!("reader{i}")).await;
                post(http, &format!("{base}/_matrix/client/v3/rooms/{room}/join"), Some(&token), json!({})).await;
                (i, token, user)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let sent_at: Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>> = Arc::default();
    let delivered: Arc<std::sync::Mutex<Vec<Duration>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut readers = Vec::new();
    let mut users = Vec::new();
    for (i, token, user) in syncers {
        let (http, base) = (http.clone(), base.to_owned());
        let (sent_at, delivered, stop, rooms) = (sent_at.clone(), delivered.clone(), stop.clone(), rooms.clone());
        let (room_index, slot, in_room) = (i % rooms.len(), (i / rooms.len()) as u64, readers_in(i % rooms.len()));
        users.push((room_index, user.clone()));
        readers.push((
            room_index,
            tokio::spawn(async move {
                let room = rooms[room_index].clone();
                let mut log = ReaderLog::default();
                let (receipt, receipts) = spawn_receipt_sender(http.clone(), base.clone(), token.clone(), room.clone());
                let typing_url =
                    format!("{base}/_matrix/client/v3/rooms/{}/typing/{}", urlencode(&room), urlencode(&user));
                let mut typing = false;
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
                        _ = &mut stopped => break,
                    };
                    let now = Instant::now();
                    let data = &v["rooms"]["join"][&room];
                    let timeline = data["timeline"]["events"].as_array().map(Vec::as_slice).unwrap_or_default();
                    let mut newest = None;
                    for n in timeline.iter().filter_map(probe_number) {
                        newest = newest.max(Some(n));
                        let count = log.seen.entry(n).or_default();
                        *count += 1;
                        if *count == 1 {
                            let sent = sent_at.lock().expect("map").get(&n).copied();
                            if let Some(t) = sent {
                                delivered.lock().expect("latencies").push(now.duration_since(t));
                            }
                        }
                    }
                    for event in data["ephemeral"]["events"].as_array().into_iter().flatten() {
                        match event["type"].as_str() {
                            Some("m.typing") => log.typing_seen += 1,
                            Some("m.receipt") => {
                                for (id, by_type) in event["content"].as_object().into_iter().flatten() {
                                    let readers = by_type["m.read"].as_object().into_iter().flat_map(|m| m.keys());
                                    for reader in readers.filter(|r| **r != user) {
                                        if !log.receipts_seen.insert((reader.clone(), id.clone())) {
                                            log.receipts_repeated += 1;
                                        }
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    if let Some(n) = newest {
                        // The room is open: what arrived is read at once.
                        let last = timeline.last().and_then(|e| e["event_id"].as_str()).expect("an event id");
                        receipt.send_replace(last.to_owned());
                        // One reader of the room types at a time: the one whose turn the room's
                        // latest message is; the previous typist stops.
                        let typist = (n / rooms.len() as u64) % in_room == slot;
                        if typist != typing {
                            let body = if typist {
                                json!({ "typing": true, "timeout": 30000 })
                            } else {
                                json!({ "typing": false })
                            };
                            put(&http, &typing_url, &token, body).await;
                            log.typing_sent += 1;
                            typing = typist;
                        }
                    }
                    since = v["next_batch"].as_str().expect("next_batch").to_owned();
                }
                if typing {
                    put(&http, &typing_url, &token, json!({ "typing": false })).await;
                    log.typing_sent += 1;
                }
                drop(receipt);
                log.receipts_sent = receipts.await.expect("receipts sent");
                log
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
    let idle_seconds = args.sizes.idle_seconds;
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
    let expected: u64 = (0..total).map(|n| readers_in(n as usize % rooms.len())).sum();
    // Give the last deliveries time to arrive (bounded), then stop every reader and collect.
    let drain = Instant::now();
    while (delivered.lock().expect("latencies").len() as u64) < expected && drain.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.notify_waiters();
    let (mut duplicates, mut received, mut failures) = (0u64, 0u64, 0u64);
    let (mut receipts_sent, mut receipts_seen, mut receipts_repeated) = (0u64, 0u64, 0u64);
    let (mut typing_sent, mut typing_seen) = (0u64, 0u64);
    for (_, reader) in readers {
        match reader.await {
            Ok(log) => {
                received += log.seen.len() as u64;
                duplicates += log.seen.values().map(|c| u64::from(c - 1)).sum::<u64>();
                receipts_sent += log.receipts_sent;
                receipts_seen += log.receipts_seen.len() as u64;
                receipts_repeated += log.receipts_repeated;
                typing_sent += log.typing_sent;
                typing_seen += log.typing_seen;
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
        "| scenario | syncing clients | server CPU while all wait | server CPU while sending | messages (late) | deliveries of expected | duplicates | misses | failed readers | read receipts sent / others' seen (again) | typing notices sent / seen | PUT p50 / p99 ms | delivery p50 ms | delivery p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| send→sync latency | {} | {idle_cpu:.1} % | {busy_cpu:.1} % | {total} ({late}) | {received} of {expected} | {duplicates} | {misses} | {failures} | {receipts_sent} / {receipts_seen} ({receipts_repeated}) | {typing_sent} / {typing_seen} | {:.1} / {:.1} | {:.1} | {:.1} |",
        args.clients,
        percentile(&put_latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&put_latencies, 0.99).as_secs_f64() * 1000.0,
        percentile(&all, 0.50).as_secs_f64() * 1000.0,
        percentile(&all, 0.99).as_secs_f64() * 1000.0
    );
    assert_eq!(failures, 0, "every reader ran to the end");
    assert_eq!((received, duplicates), (expected, 0), "every message reached every reader of its room once");
    assert!(receipts_sent >= args.clients as u64 && typing_sent > 0, "the readers sent receipts and typing notices");

    // At the end every reader's receipt is on its room's last message, and nobody types.
    let filter = urlencode(r#"{"room":{"timeline":{"limit":1}}}"#);
    for (index, room) in rooms.iter().enumerate() {
        let url = format!("{base}/_matrix/client/v3/sync?filter={filter}&set_presence=offline");
        let v = get(http, &url, &sender).await;
        let data = &v["rooms"]["join"][room];
        let last = data["timeline"]["events"][0]["event_id"].as_str().expect("the room's last event");
        let ephemeral = data["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        let read_last: std::collections::BTreeSet<&str> = ephemeral
            .iter()
            .filter(|e| e["type"] == "m.receipt")
            .flat_map(|e| e["content"][last]["m.read"].as_object().into_iter().flat_map(|m| m.keys()))
            .map(String::as_str)
            .collect();
        for (_, user) in users.iter().filter(|(r, _)| *r == index) {
            assert!(read_last.contains(user.as_str()), "{user}'s receipt is on {last}, the last message of {room}");
        }
        let typing = ephemeral.iter().find(|e| e["type"] == "m.typing").map(|e| e["content"]["user_ids"].clone());
        assert!(
            typing.as_ref().is_none_or(|ids| ids.as_array().is_some_and(Vec::is_empty)),
            "nobody left typing in {room}: {typing:?}"
        );
    }
}

/// Sequential uploads then downloads of distinct files (so deduplication never skips a write).
async fn media_scenario(http: &reqwest::Client, base: &str, args: &Args) {
    let token = register(http, base, "media").await;
    println!("| file size | files | upload MB/s | download MB/s | upload p50 ms | download p50 ms |");
    println!("|---|---|---|---|---|---|");
    for &(size, files) in &args.sizes.media {
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

/// Sends `count` messages (and a topic change every 100) into a room, 20 at a time; message `n`
/// reads `<prefix><n>`.
async fn fill_room(http: &reqwest::Client, base: &str, token: &str, room: &str, count: usize, prefix: &str) {
    futures::stream::iter(0..count)
        .for_each_concurrent(20, |n| async move {
            let url = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{prefix}{n}");
            put(http, &url, token, json!({ "msgtype": "m.text", "body": format!("{prefix}{n}") })).await;
            if n % 100 == 99 {
                let url = format!("{base}/_matrix/client/v3/rooms/{room}/state/m.room.topic/");
                put(http, &url, token, json!({ "topic": format!("topic {n}") })).await;
            }
        })
        .await;
}

/// What the readers of one room did.
struct Walks {
    requests_per_second: f64,
    latencies: Vec<Duration>,
    /// Whole walks from the end to the start of the room, and the pages they took.
    walks: usize,
    pages: usize,
}

/// `--clients` readers walking the room back from its end to its start, a page at a time, each
/// page from the previous one's `end` token, for `--seconds` (and at least one whole walk each);
/// every whole walk must have seen the messages of `expected` exactly once, and no other message.
async fn walk_history(
    http: &reqwest::Client,
    base: &str,
    room: &str,
    token: &str,
    args: &Args,
    expected: &std::collections::BTreeSet<String>,
) -> Walks {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let page = args.sizes.page;
    let readers = (0..args.clients).map(|_| async move {
        let (mut latencies, mut walks, mut pages) = (Vec::new(), 0, 0);
        while walks == 0 || Instant::now() < deadline {
            let (mut from, mut bodies, mut walk_pages) = (None::<String>, Vec::new(), 0);
            loop {
                let mut url = format!("{base}/_matrix/client/v3/rooms/{room}/messages?dir=b&limit={page}");
                if let Some(from) = &from {
                    url.push_str(&format!("&from={}", urlencode(from)));
                }
                let t = Instant::now();
                let v = get(http, &url, token).await;
                latencies.push(t.elapsed());
                walk_pages += 1;
                for event in v["chunk"].as_array().expect("chunk") {
                    if event["type"] == "m.room.message" {
                        bodies.push(event["content"]["body"].as_str().expect("body").to_owned());
                    }
                }
                match v["end"].as_str() {
                    Some(end) => from = Some(end.to_owned()),
                    None => break,
                }
                if walks > 0 && Instant::now() >= deadline {
                    return (latencies, walks, pages);
                }
            }
            let distinct: std::collections::BTreeSet<String> = bodies.iter().cloned().collect();
            assert_eq!(bodies.len(), distinct.len(), "a walk back through the room sees each message once");
            assert!(
                &distinct == expected,
                "a walk back sees exactly the room's messages the reader may see: {} seen, {} of the {} expected",
                distinct.len(),
                distinct.intersection(expected).count(),
                expected.len()
            );
            walks += 1;
            pages += walk_pages;
        }
        (latencies, walks, pages)
    });
    let (mut latencies, mut walks, mut pages) = (Vec::new(), 0, 0);
    for (l, w, p) in futures::future::join_all(readers).await {
        latencies.extend(l);
        walks += w;
        pages += p;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Walks { requests_per_second: latencies.len() as f64 / elapsed, latencies, walks, pages }
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
    let (history, after_join) = (args.sizes.history, args.sizes.after_join);
    fill_room(http, base, &owner, &shared, history, "s").await;
    fill_room(http, base, &owner, &hidden, history, "h").await;
    post(http, &format!("{base}/_matrix/client/v3/join/{hidden}"), Some(&late), json!({})).await;
    fill_room(http, base, &owner, &hidden, after_join, "after").await;
    let bodies = |prefix: &str, count: usize| (0..count).map(|n| format!("{prefix}{n}")).collect();

    println!("| reader | clients | seconds | whole walks (pages each) | requests/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    for (label, room, token, expected) in [
        (format!("member since creation, {history} messages"), &shared, &owner, bodies("s", history)),
        (
            format!("joined late, `joined` visibility, {after_join} messages after the join"),
            &hidden,
            &late,
            bodies("after", after_join),
        ),
    ] {
        let walks = walk_history(http, base, room, token, args, &expected).await;
        println!(
            "| {label} | {} | {} | {} ({}) | {:.0} | {:.1} | {:.1} |",
            args.clients,
            args.seconds,
            walks.walks,
            walks.pages / walks.walks.max(1),
            walks.requests_per_second,
            percentile(&walks.latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&walks.latencies, 0.99).as_secs_f64() * 1000.0
        );
    }
}

/// `samples` initial `/sync`s of `token` with `filter`, one after the other, each answer checked
/// by `check`; prints the table row. Timed to the response's last byte (the server's work and
/// the transfer); the client's own parse of the body is timed apart, since it is not the
/// server's and shares the cores.
async fn time_initial_syncs(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    filter: &str,
    args: &Args,
    label: &str,
    check: impl Fn(&Value),
) {
    let (mut samples, mut parsed, mut bytes) = (Vec::new(), Vec::new(), 0);
    let url = format!("{base}/_matrix/client/v3/sync?filter={}", urlencode(filter));
    for _ in 0..args.samples {
        let t = Instant::now();
        let response = http.get(&url).bearer_auth(token).send().await.expect("request sent");
        assert!(response.status().is_success(), "{url}: {}", response.status());
        let body = response.bytes().await.expect("body");
        samples.push(t.elapsed());
        let sync: Value = serde_json::from_slice(&body).expect("json");
        parsed.push(t.elapsed());
        bytes = body.len();
        check(&sync);
    }
    samples.sort();
    parsed.sort();
    println!(
        "| {label} | {} | {bytes} | {:.3} | {:.3} | {:.3} | {:.3} |",
        samples.len(),
        samples[0].as_secs_f64(),
        samples[samples.len() / 2].as_secs_f64(),
        samples[samples.len() - 1].as_secs_f64(),
        parsed[parsed.len() / 2].as_secs_f64()
    );
}

/// The joined rooms of a sync answer.
fn joined_rooms(sync: &Value) -> &serde_json::Map<String, Value> {
    sync["rooms"]["join"].as_object().expect("joined rooms")
}

/// The state a client knows of a room after an initial sync: its state section and its timeline's
/// state events, as (type, state key) → event.
fn known_state(room: &Value) -> std::collections::HashMap<(String, String), &Value> {
    let events = room["state"]["events"].as_array().into_iter().flatten();
    let timeline = room["timeline"]["events"].as_array().into_iter().flatten();
    events
        .chain(timeline)
        .filter_map(|e| Some(((e["type"].as_str()?.to_owned(), e["state_key"].as_str()?.to_owned()), e)))
        .collect()
}

async fn initial_sync_scenario(http: &reqwest::Client, base: &str, args: &Args) {
    println!("| initial sync | samples | body bytes | min s | median s | max s | median s with the client's parse |");
    println!("|---|---|---|---|---|---|---|");
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
    let label = format!(
        "user in {} rooms of 1 member (name, topic, {} messages each), timeline limit 10",
        args.rooms, args.messages
    );
    time_initial_syncs(http, base, &user, r#"{"room":{"timeline":{"limit":10}}}"#, args, &label, |sync| {
        assert_eq!(joined_rooms(sync).len(), args.rooms, "every room in the initial sync");
    })
    .await;

    // Rooms as a ministry's are: `--room-members` members (the owner, the measured user and
    // others), a name, a topic and more state events up to `--room-state`, messages from the
    // members.
    let members = args.room_members.max(2);
    let custom_state = args.room_state.saturating_sub(2);
    let owner = register(http, base, "owner").await;
    let reader = register(http, base, "reader").await;
    let others: Vec<String> = futures::stream::iter(0..members - 2)
        .map(|i| async move { register(http, base, &format!("colleague{i}")).await })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut large = Vec::with_capacity(args.large_rooms);
    for n in 0..args.large_rooms {
        let body = json!({ "preset": "public_chat", "name": format!("service {n}"), "topic": "the service's room" });
        large.push(post(http, &create, Some(&owner), body).await["room_id"].as_str().expect("room").to_owned());
    }
    futures::stream::iter(large.iter().flat_map(|room| (0..custom_state).map(move |k| (room, k))))
        .for_each_concurrent(20, |(room, k)| {
            let owner = &owner;
            async move {
                let url = format!("{base}/_matrix/client/v3/rooms/{room}/state/fr.gouv.loadgen.setting/s{k}");
                let content = json!({ "setting": k, "description": format!("a setting of the room, number {k}") });
                put(http, &url, owner, content).await;
            }
        })
        .await;
    let joiners: Vec<&String> = std::iter::once(&reader).chain(&others).collect();
    futures::stream::iter(large.iter().flat_map(|room| joiners.iter().map(move |token| (room, *token))))
        .for_each_concurrent(32, |(room, token)| async move {
            post(http, &format!("{base}/_matrix/client/v3/rooms/{room}/join"), Some(token), json!({})).await;
        })
        .await;
    let speakers: Vec<&String> = std::iter::once(&owner).chain(joiners).collect();
    futures::stream::iter(large.iter().flat_map(|room| (0..args.messages).map(move |m| (room, m))))
        .for_each_concurrent(20, |(room, m)| {
            let speaker = speakers[m % speakers.len()];
            async move {
                let url = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/m{m}");
                put(http, &url, speaker, json!({ "msgtype": "m.text", "body": format!("message {m}") })).await;
            }
        })
        .await;
    let described = format!(
        "user in {} rooms of {members} members (name, topic and {custom_state} more state events, {} messages from the members each), timeline limit 10",
        args.large_rooms, args.messages
    );
    let settings = |state: &std::collections::HashMap<(String, String), &Value>| {
        state.keys().filter(|(t, _)| t == "fr.gouv.loadgen.setting").count()
    };
    let full = r#"{"room":{"timeline":{"limit":10}}}"#;
    time_initial_syncs(http, base, &reader, full, args, &format!("{described}, full state"), |sync| {
        let rooms = joined_rooms(sync);
        assert_eq!(rooms.len(), args.large_rooms, "every room in the initial sync");
        for (id, room) in rooms {
            let state = known_state(room);
            let joined =
                state.iter().filter(|((t, _), e)| t == "m.room.member" && e["content"]["membership"] == "join").count();
            assert_eq!(joined, members, "every member of {id} in its full state");
            assert_eq!(settings(&state), custom_state, "every state event of {id}");
        }
    })
    .await;
    let lazy = r#"{"room":{"timeline":{"limit":10},"state":{"lazy_load_members":true}}}"#;
    time_initial_syncs(http, base, &reader, lazy, args, &format!("{described}, lazy-loaded members"), |sync| {
        let rooms = joined_rooms(sync);
        assert_eq!(rooms.len(), args.large_rooms, "every room in the initial sync");
        for (id, room) in rooms {
            let state = known_state(room);
            for event in room["timeline"]["events"].as_array().expect("timeline") {
                let sender = event["sender"].as_str().expect("sender").to_owned();
                assert!(
                    state.contains_key(&("m.room.member".to_owned(), sender.clone())),
                    "{sender}'s membership comes with their messages in {id}"
                );
            }
            assert_eq!(settings(&state), custom_state, "every state event of {id}");
        }
    })
    .await;
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
/// unread messages, 200 times one new message (one in ten mentioning the reader) then one sync
/// from the previous token; the sync's time. The counts are checked after every sync
/// (`notification_count` = backlog + messages so far, `highlight_count` = mentions so far), then
/// a read receipt on the last message must take both to 0 and one more message to 1.
async fn unread_scenario(http: &reqwest::Client, base: &str, args: &Args) {
    println!(
        "| unread messages before | syncs | p50 ms | p99 ms | notification_count after the run (expected) | highlight_count (expected) | after a read receipt | after one more message |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let counts = |v: &Value, room: &str| {
        let unread = &v["rooms"]["join"][room]["unread_notifications"];
        (unread["notification_count"].as_u64(), unread["highlight_count"].as_u64())
    };
    for (i, &backlog) in args.sizes.backlogs.iter().enumerate() {
        let sender = register(http, base, &format!("writer{i}")).await;
        let (reader, reader_id) = register_user(http, base, &format!("reader{i}")).await;
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
        assert_eq!(counts(&first, &room), (Some(backlog), Some(0)), "the backlog's counts in the initial sync");
        let mut since = first["next_batch"].as_str().expect("next_batch").to_owned();
        let mut times = Vec::new();
        let (mut highlights, mut last_event) = (0u64, String::new());
        let rounds = args.sizes.rounds;
        for n in 0..rounds {
            let mut content = json!({ "msgtype": "m.text", "body": format!("probe-{}", 1_000_000 + n) });
            if n % 10 == 9 {
                content["m.mentions"] = json!({ "user_ids": [reader_id] });
                highlights += 1;
            }
            let url = format!("{base}/_matrix/client/v3/rooms/{}/send/m.room.message/r{n}", urlencode(&room));
            last_event = put(http, &url, &sender, content).await["event_id"].as_str().expect("event id").to_owned();
            let started = Instant::now();
            let v = get(http, &format!("{base}/_matrix/client/v3/sync?since={since}&timeout=10000&{filter}"), &reader)
                .await;
            times.push(started.elapsed());
            since = v["next_batch"].as_str().expect("next_batch").to_owned();
            assert_eq!(
                counts(&v, &room),
                (Some(backlog + n + 1), Some(highlights)),
                "exact counts after {} unread messages of which {highlights} mention the reader",
                backlog + n + 1
            );
        }
        // Reading the last message clears both counts; the next message counts from there.
        let url =
            format!("{base}/_matrix/client/v3/rooms/{}/receipt/m.read/{}", urlencode(&room), urlencode(&last_event));
        post(http, &url, Some(&reader), json!({})).await;
        let v =
            get(http, &format!("{base}/_matrix/client/v3/sync?since={since}&timeout=10000&{filter}"), &reader).await;
        since = v["next_batch"].as_str().expect("next_batch").to_owned();
        let read = counts(&v, &room);
        assert_eq!(read, (Some(0), Some(0)), "a read receipt on the last message clears the counts");
        send_probe(http, base, &sender, &room, 2_000_000).await;
        let v =
            get(http, &format!("{base}/_matrix/client/v3/sync?since={since}&timeout=10000&{filter}"), &reader).await;
        let again = counts(&v, &room);
        assert_eq!(again, (Some(1), Some(0)), "counting starts again after the receipt");
        times.sort();
        println!(
            "| {backlog} | {rounds} | {:.2} | {:.2} | {} ({}) | {highlights} ({highlights}) | {} / {} | {} / {} |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            backlog + rounds,
            backlog + rounds,
            read.0.unwrap_or_default(),
            read.1.unwrap_or_default(),
            again.0.unwrap_or_default(),
            again.1.unwrap_or_default(),
        );
    }
}

/// `--rooms` users (default 500; use 1000) in one room, each with an http pusher to a push
/// gateway the load generator serves on loopback; one message, five times: the time until the
/// gateway has been notified for every member. Every (message, pusher) pair must be notified
/// exactly once.
async fn push_scenario(http: &reqwest::Client, base: &str, args: &Args) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    type Pairs = std::collections::HashMap<(String, String), u32>;
    let received = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(tokio::sync::Notify::new());
    let pairs: Arc<std::sync::Mutex<Pairs>> = Arc::default();
    let (count, notify, seen) = (received.clone(), arrived.clone(), pairs.clone());
    let app = axum::Router::new().route(
        "/_matrix/push/v1/notify",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (count, notify, seen) = (count.clone(), notify.clone(), seen.clone());
            async move {
                let event = body["notification"]["event_id"].as_str().unwrap_or_default().to_owned();
                for device in body["notification"]["devices"].as_array().into_iter().flatten() {
                    let key = device["pushkey"].as_str().unwrap_or_default().to_owned();
                    *seen.lock().expect("pairs").entry((event.clone(), key)).or_default() += 1;
                }
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
        assert_eq!(got, members, "every pusher notified of message {}", n + 1);
    }
    // A late duplicate would show here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pairs = pairs.lock().expect("pairs");
    let duplicates: u32 = pairs.values().map(|c| c - 1).sum();
    println!("\n(message, pusher) pairs notified: {} of {}; duplicates: {duplicates}", pairs.len(), 5 * members);
    assert_eq!((pairs.len(), duplicates), (5 * members, 0), "each message notified to each pusher exactly once");
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

/// When each probe first arrived in B's sync, and how many times one arrived again.
#[derive(Default)]
struct Arrivals {
    first: std::collections::HashMap<u64, Instant>,
    duplicates: u64,
}

/// Long-polls `/sync` on B, noting when each `probe-<n>` message first arrives and counting every
/// further arrival of it as a duplicate, until `stop` fires.
fn spawn_probe_reader(
    http: reqwest::Client,
    base: String,
    token: String,
    stop: Arc<tokio::sync::Notify>,
    arrived: Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<Arrivals> {
    tokio::spawn(async move {
        let mut log = Arrivals::default();
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
                _ = &mut stopped => return log,
            };
            let now = Instant::now();
            for room in v["rooms"]["join"].as_object().into_iter().flat_map(|m| m.values()) {
                for n in room["timeline"]["events"].as_array().into_iter().flatten().filter_map(probe_number) {
                    match log.first.entry(n) {
                        std::collections::hash_map::Entry::Occupied(_) => log.duplicates += 1,
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(now);
                            arrived.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

/// The federation scenario's parties: senders and rooms on A, the reader on B.
#[derive(Clone)]
struct Cluster {
    http: reqwest::Client,
    a: String,
    b: String,
    senders: Arc<Vec<String>>,
    rooms: Arc<Vec<String>>,
    reader: String,
}

impl Cluster {
    /// Message `n` goes into room `n % rooms` from sender `n / rooms % senders`: every room
    /// hears every sender.
    async fn send(&self, n: u64) {
        let room = &self.rooms[n as usize % self.rooms.len()];
        let sender = &self.senders[n as usize / self.rooms.len() % self.senders.len()];
        send_probe(&self.http, &self.a, sender, room, n).await;
    }
}

type SentAt = Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>>;

/// What one phase measured.
struct Phase {
    sent: u64,
    /// Distinct messages that arrived on B, and further arrivals of one.
    delivered: u64,
    duplicates: u64,
    /// Seconds from the first send to the last send's answer.
    send_span: f64,
    /// Seconds from the last send's answer to the last arrival (0 if none came later).
    lag: f64,
    /// Send→sync latencies, sorted.
    latencies: Vec<Duration>,
    /// Arrivals per second, first to last arrival.
    arrival_rate: f64,
    /// The slowest 1-second window by send time: (second, messages, p99, max).
    slowest: Option<(u64, usize, Duration, Duration)>,
    /// The whole second of the sending with the fewest arrivals: (second, arrivals).
    fewest: Option<(u64, usize)>,
}

impl Phase {
    fn measure(start: Instant, last_sent: Instant, sent_at: &SentAt, arrivals: &Arrivals) -> Phase {
        let sent_at = sent_at.lock().expect("sent times");
        let mut windows: std::collections::BTreeMap<u64, Vec<Duration>> = Default::default();
        let mut latencies = Vec::new();
        for (n, sent) in sent_at.iter() {
            if let Some(arrived) = arrivals.first.get(n) {
                let latency = arrived.saturating_duration_since(*sent);
                latencies.push(latency);
                windows.entry(sent.duration_since(start).as_secs()).or_default().push(latency);
            }
        }
        latencies.sort();
        let slowest = windows
            .into_iter()
            .map(|(second, mut l)| {
                l.sort();
                (second, l.len(), percentile(&l, 0.99), *l.last().expect("a latency"))
            })
            .max_by_key(|w| w.2);
        let send_span = last_sent.duration_since(start).as_secs_f64();
        let mut per_second = vec![0usize; send_span as usize];
        for arrived in arrivals.first.values() {
            if let Some(count) = per_second.get_mut(arrived.saturating_duration_since(start).as_secs() as usize) {
                *count += 1;
            }
        }
        let fewest = per_second.iter().copied().enumerate().min_by_key(|(_, c)| *c).map(|(s, c)| (s as u64, c));
        let (first, last) = (arrivals.first.values().min(), arrivals.first.values().max());
        let lag = last.map_or(0.0, |l| l.saturating_duration_since(last_sent).as_secs_f64());
        let arrival_rate = match (first, last) {
            (Some(first), Some(last)) if last > first => arrivals.first.len() as f64 / (*last - *first).as_secs_f64(),
            _ => f64::NAN,
        };
        Phase {
            sent: sent_at.len() as u64,
            delivered: arrivals.first.keys().filter(|n| sent_at.contains_key(n)).count() as u64,
            duplicates: arrivals.duplicates,
            send_span,
            lag,
            latencies,
            arrival_rate,
            slowest,
            fewest,
        }
    }

    fn p(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).as_secs_f64() * 1e3
    }

    /// The slowest windows, as a table cell's end.
    fn windows(&self) -> String {
        let slowest = self.slowest.map_or("—".to_owned(), |(s, n, p99, max)| {
            format!(
                "p99 {:.1} ms, max {:.1} ms (second {s}, {n} messages)",
                p99.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            )
        });
        let fewest = self.fewest.map_or("—".to_owned(), |(s, c)| format!("{c} (second {s})"));
        format!("slowest 1-s window {slowest}; fewest arrivals in a whole second of sending {fewest}")
    }

    /// Every message arrived on B, each once.
    fn check(&self, what: &str) {
        assert_eq!(
            (self.delivered, self.duplicates),
            (self.sent, 0),
            "{what}: every message arrives on B exactly once"
        );
    }
}

/// Waits until B's reader has seen `total` messages (or a minute has passed with none arriving),
/// then a moment for any duplicate, and stops it.
async fn collect(
    arrived: &std::sync::atomic::AtomicU64,
    total: u64,
    stop: &tokio::sync::Notify,
    reader: tokio::task::JoinHandle<Arrivals>,
) -> Arrivals {
    let mut patience = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    loop {
        let now = arrived.load(std::sync::atomic::Ordering::Relaxed);
        if now >= total || Instant::now() >= patience {
            break;
        }
        if now > seen {
            seen = now;
            patience = Instant::now() + Duration::from_secs(60);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.notify_one();
    reader.await.expect("reader")
}

/// Sends `rate` messages a second for `seconds` (each at its due time, however many are in
/// flight), numbered from `offset`, and waits until B's reader has seen them all.
async fn paced(c: &Cluster, rate: f64, seconds: u64, offset: u64) -> Phase {
    let sent_at = SentAt::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = spawn_probe_reader(c.http.clone(), c.b.clone(), c.reader.clone(), stop.clone(), arrived.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let total = (rate * seconds as f64) as u64;
    let mut sends = futures::stream::FuturesUnordered::new();
    for n in offset..offset + total {
        let due = start + Duration::from_secs_f64((n - offset) as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        sent_at.lock().expect("sent times").insert(n, Instant::now());
        let c = c.clone();
        sends.push(tokio::spawn(async move { c.send(n).await }));
        while let std::task::Poll::Ready(Some(_)) = futures::poll!(sends.next()) {}
    }
    while let Some(sent) = sends.next().await {
        sent.expect("a send failed");
    }
    let last_sent = Instant::now();
    let arrivals = collect(&arrived, total, &stop, reader).await;
    Phase::measure(start, last_sent, &sent_at, &arrivals)
}

/// `clients` senders on A as fast as answers come back, for `seconds` (or, when `quota` is not 0,
/// until `quota` messages are sent), then waits until B's reader has seen them all. `started`
/// runs once B's reader is in place, just before the first send.
async fn flat_out(c: &Cluster, clients: usize, seconds: u64, quota: u64, started: impl FnOnce()) -> Phase {
    const FIRST: u64 = 1_000_000;
    let sent_at = SentAt::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = spawn_probe_reader(c.http.clone(), c.b.clone(), c.reader.clone(), stop.clone(), arrived.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    started();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(FIRST));
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (c, counter, sent_at) = (c.clone(), counter.clone(), sent_at.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let more = if quota > 0 { n < FIRST + quota } else { Instant::now() < deadline };
                if !more {
                    break;
                }
                sent_at.lock().expect("sent times").insert(n, Instant::now());
                c.send(n).await;
            }
        }));
    }
    for worker in workers {
        worker.await.expect("sender");
    }
    let last_sent = Instant::now();
    let sent = sent_at.lock().expect("sent times").len() as u64;
    let arrivals = collect(&arrived, sent, &stop, reader).await;
    Phase::measure(start, last_sent, &sent_at, &arrivals)
}

async fn federation_scenario(args: &Args) {
    let receiver = args.receiver.as_deref().unwrap_or(&args.server);
    let (a, b) = tokio::join!(start_node(&args.server, "a"), start_node(receiver, "b"));
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build().expect("client");
    let senders: Vec<String> = futures::stream::iter(0..args.fed_senders.max(1))
        .map(|i| {
            let (http, a) = (&http, &a.base);
            async move { register(http, a, &format!("sender{i}")).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let reader = register(&http, &b.base, "bob").await;
    let mut rooms = Vec::new();
    for r in 0..args.fed_rooms.max(1) {
        rooms.push(create_public_room(&http, &a.base, &senders[r % senders.len()]).await);
    }
    futures::stream::iter(rooms.iter().flat_map(|room| senders.iter().map(move |s| (room, s))))
        .for_each_concurrent(16, |(room, sender)| {
            let (http, a) = (&http, &a.base);
            async move {
                post(http, &format!("{a}/_matrix/client/v3/join/{}", urlencode(room)), Some(sender), json!({})).await;
            }
        })
        .await;
    futures::stream::iter(&rooms).for_each_concurrent(4, |room| join_via(&http, &b.base, &reader, room, &a.name)).await;
    let c = Cluster {
        http: http.clone(),
        a: a.base.clone(),
        b: b.base.clone(),
        senders: Arc::new(senders),
        rooms: Arc::new(rooms),
        reader,
    };
    let spread = format!("{} rooms on A, {} senders on A", c.rooms.len(), c.senders.len());

    // Under callgrind, B's instructions for taking in `--events` messages (2,000 by default) sent
    // by `--clients` senders on A as fast as answered: counters zeroed once B's reader waits,
    // dumped once every message arrived and B is quiet. Nothing else runs.
    if args.callgrind {
        let quota = if args.events > 0 { args.events } else { 2000 };
        let pid = b.child.id();
        let run = flat_out(&c, args.clients, args.seconds, quota, || callgrind_control(&["--zero"], pid)).await;
        wait_quiet(pid).await;
        callgrind_control(&["--dump"], pid);
        eprintln!("callgrind: B took in {} events ({spread}) in the dump just written", run.delivered);
        println!(
            "| intake under callgrind, {} senders on A, {spread} | {} sent; {} arrived in B's sync, {} duplicates, {:.0} events/s |",
            args.clients, run.sent, run.delivered, run.duplicates, run.arrival_rate
        );
        run.check("intake under callgrind");
        return;
    }

    // 1. Latency at a steady rate (200 messages/s).
    let rate = args.sizes.fed_rate;
    let run = paced(&c, rate, args.seconds, 0).await;
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| send→sync across nodes at {rate} events/s, {} s, {spread} | {} of {} delivered, {} duplicates; p50 {:.1} ms, p99 {:.1} ms; {} |",
        args.seconds,
        run.delivered,
        run.sent,
        run.duplicates,
        run.p(0.5),
        run.p(0.99),
        run.windows(),
    );
    run.check("latency phase");

    // 1b. Sustained throughput: steady offered rates; a rate is sustained when every event
    // arrives on B and B keeps up (the last arrives within a second of the last send).
    for (i, &rate) in args.sizes.fed_rates.iter().enumerate() {
        let offset = 10_000_000 * (i as u64 + 1);
        let run = paced(&c, rate, args.seconds, offset).await;
        let sustained = run.delivered == run.sent && run.lag < 1.0;
        println!(
            "| steady {rate} events/s offered for {} s, {spread} | {} sent ({:.0}/s achieved on A); {} arrived on B, {} duplicates; lag after the last send {:.2} s; p50 {:.1} ms, p99 {:.1} ms; {}; {} |",
            args.seconds,
            run.sent,
            run.sent as f64 / run.send_span.max(1e-9),
            run.delivered,
            run.duplicates,
            run.lag,
            run.p(0.5),
            run.p(0.99),
            run.windows(),
            if sustained { "sustained" } else { "NOT sustained" },
        );
        run.check(&format!("steady {rate} events/s"));
    }

    // 2. Throughput: `--clients` senders on A as fast as they are answered.
    let run = flat_out(&c, args.clients, args.seconds, 0, || {}).await;
    println!(
        "| sustained across nodes, {} senders on A as fast as answered, {} s, {spread} | {} sent ({:.0}/s on A); {} arrived in B's sync, {} duplicates, {:.0} events/s; p50 {:.1} ms, p99 {:.1} ms; {} |",
        args.clients,
        args.seconds,
        run.sent,
        run.sent as f64 / run.send_span.max(1e-9),
        run.delivered,
        run.duplicates,
        run.arrival_rate,
        run.p(0.5),
        run.p(0.99),
        run.windows(),
    );
    run.check("as fast as answered");

    // 3. Joining a big room: `--rooms` members and 10,000 events on A, then B's user joins.
    let alice = &c.senders[0];
    let big = create_public_room(&http, &a.base, alice).await;
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
    let events = args.sizes.big_room_events;
    futures::stream::iter(0..events)
        .map(|n| {
            let (http, base, big) = (&http, &a.base, &big);
            async move { send_probe(http, base, alice, big, 5_000_000 + n).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    eprintln!(
        "big room ready: {members} members in {:.0} s, {events} events in {:.0} s",
        filled.duration_since(started).as_secs_f64(),
        filled.elapsed().as_secs_f64()
    );
    let carol = register(&http, &b.base, "carol").await;
    let joining = Instant::now();
    join_via(&http, &b.base, &carol, &big, &a.name).await;
    println!(
        "| join from B of a room on A with {} members and {events} events | {:.2} s |",
        members + 1,
        joining.elapsed().as_secs_f64()
    );
}

/// Milliseconds since the Unix epoch, for `origin_server_ts`.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as u64
}

/// A synthetic remote server of the `intake` scenario, served by the load generator on loopback
/// (HTTPS, server name `127.0.0.1:<port>`, its own Ed25519 key): it publishes its signed key
/// document, accepts B's transactions, answers 404 to anything else and counts what B asked.
struct Origin {
    name: String,
    key: ruma::signatures::Ed25519KeyPair,
    /// Its own connections to B.
    http: reqwest::Client,
    /// B's requests other than for the key document, by method and endpoint.
    asked: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A room of B as the `intake` scenario's PDUs need it: the ids their `auth_events` name and the
/// room's newest event, which the first PDU's `prev_events` names.
struct IntakeRoom {
    id: String,
    version: ruma::RoomVersionId,
    /// `None` from room version 12 on: the create event is no auth event any more.
    create: Option<String>,
    power_levels: String,
    /// Each remote sender's join.
    joins: std::collections::HashMap<String, String>,
    /// The newest event (id, depth).
    head: (String, u64),
}

/// One pre-built transaction: its URI, its body and its `Authorization` header, and the probe
/// numbers of its PDUs.
struct Transaction {
    uri: String,
    body: bytes::Bytes,
    authorization: String,
    numbers: Vec<u64>,
}

impl Origin {
    async fn start() -> Origin {
        let dir = tempfile::Builder::new().prefix("loadgen-origin-").tempdir().expect("temp dir");
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("self-signed certificate");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, certified.cert.pem()).expect("write certificate");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        let acceptor = hemicycle::server::tls_acceptor(&cert, &key).expect("TLS");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let name = format!("127.0.0.1:{}", listener.local_addr().expect("address").port());
        let pair = ruma::signatures::Ed25519KeyPair::generate();
        let key = ruma::signatures::Ed25519KeyPair::from_der(&pair, "intake".to_owned()).expect("a key pair");
        let document = Arc::new(Self::key_document(&name, &key));
        let asked: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>> = Arc::default();
        let counted = asked.clone();
        let app = axum::Router::new().fallback(move |method: axum::http::Method, uri: axum::http::Uri| {
            let (document, asked) = (document.clone(), counted.clone());
            async move {
                use axum::{http::StatusCode, response::IntoResponse};
                let path = uri.path();
                if path.starts_with("/_matrix/key/v2/server") {
                    return axum::Json((*document).clone()).into_response();
                }
                // The endpoint without its parameters: `/_matrix/federation/v1/send`.
                let endpoint: Vec<&str> = path.split('/').take(5).collect();
                *asked.lock().expect("asked").entry(format!("{method} {}", endpoint.join("/"))).or_default() += 1;
                if method == axum::http::Method::PUT && path.starts_with("/_matrix/federation/v1/send/") {
                    return axum::Json(json!({ "pdus": {} })).into_response();
                }
                let refused = json!({ "errcode": "M_NOT_FOUND", "error": "a load generator's origin" });
                (StatusCode::NOT_FOUND, axum::Json(refused)).into_response()
            }
        });
        let server = hemicycle::server::serve_https(listener, acceptor, app);
        let http = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().expect("client");
        Origin { name, key, http, asked, server, _dir: dir }
    }

    fn key_id(&self) -> String {
        format!("ed25519:{}", self.key.version())
    }

    /// The signed `/_matrix/key/v2/server` answer, valid for a day (longer than any run).
    fn key_document(name: &str, key: &ruma::signatures::Ed25519KeyPair) -> Value {
        let public = ruma::serde::Base64::<ruma::serde::base64::Standard>::new(key.public_key().to_vec()).encode();
        let document = json!({
            "server_name": name,
            "valid_until_ts": now_ms() + 86_400_000,
            "verify_keys": { format!("ed25519:{}", key.version()): { "key": public } },
            "old_verify_keys": {},
        });
        let mut object: ruma::CanonicalJsonObject = serde_json::from_value(document).expect("canonical JSON");
        ruma::signatures::sign_json(name, key, &mut object).expect("sign the key document");
        serde_json::to_value(&object).expect("JSON")
    }

    /// The X-Matrix `Authorization` header of a request to `destination`.
    fn authorization(&self, destination: &str, method: &str, uri: &str, content: Option<&Value>) -> String {
        let mut object = json!({ "method": method, "uri": uri, "origin": self.name, "destination": destination });
        if let Some(content) = content {
            object["content"] = content.clone();
        }
        let mut object: ruma::CanonicalJsonObject = serde_json::from_value(object).expect("canonical JSON");
        ruma::signatures::sign_json(&self.name, &self.key, &mut object).expect("sign the request");
        let signatures = serde_json::to_value(&object["signatures"]).expect("signatures");
        let sig = signatures[&self.name][self.key_id()].as_str().expect("signature");
        format!(
            "X-Matrix origin=\"{}\",destination=\"{destination}\",key=\"{}\",sig=\"{sig}\"",
            self.name,
            self.key_id()
        )
    }

    /// A signed request to B's federation listener: (status, answer).
    async fn request(&self, b: &FedNode, method: reqwest::Method, uri: &str, body: Option<Value>) -> (u16, Value) {
        let authorization = self.authorization(&b.name, method.as_str(), uri, body.as_ref());
        let mut request =
            self.http.request(method, format!("https://{}{uri}", b.name)).header("Authorization", authorization);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("B answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Hashes and signs an event; returns its id (room versions 4 and later) and the PDU.
    fn event(&self, version: &ruma::RoomVersionId, event: Value) -> (String, Value) {
        let mut object: ruma::CanonicalJsonObject = serde_json::from_value(event).expect("canonical JSON");
        let rules = version.rules().expect("a known room version");
        ruma::signatures::hash_and_sign_event(&self.name, &self.key, &mut object, &rules.redaction)
            .expect("sign the event");
        let id = format!("${}", ruma::signatures::reference_hash(&object, &rules).expect("reference hash"));
        (id, serde_json::to_value(&object).expect("JSON"))
    }

    /// Joins `user` to B's `room` (make_join, then send_join): (the join's id, its depth, the
    /// room version, send_join's answer).
    async fn join(&self, b: &FedNode, room: &str, user: &str) -> (String, u64, ruma::RoomVersionId, Value) {
        let uri =
            format!("/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11&ver=12", urlencode(room), urlencode(user));
        let (status, made) = self.request(b, reqwest::Method::GET, &uri, None).await;
        assert_eq!(status, 200, "make_join: {made}");
        let version =
            ruma::RoomVersionId::try_from(made["room_version"].as_str().expect("room version")).expect("version");
        let mut template = made["event"].clone();
        template["origin"] = json!(self.name);
        template["origin_server_ts"] = json!(now_ms());
        let depth = template["depth"].as_u64().expect("depth");
        let (id, event) = self.event(&version, template);
        let uri = format!("/_matrix/federation/v2/send_join/{}/{}", urlencode(room), urlencode(&id));
        let (status, joined) = self.request(b, reqwest::Method::PUT, &uri, Some(event)).await;
        assert_eq!(status, 200, "send_join: {joined}");
        (id, depth, version, joined)
    }

    /// What B asked of this origin so far, by method and endpoint.
    fn asked(&self) -> std::collections::BTreeMap<String, u64> {
        self.asked.lock().expect("asked").clone()
    }
}

/// Joins every origin's senders to `room` one after the other (each join's template names the
/// one before as its previous event, so the last join is the room's newest event), and reads
/// from the first answer's state the ids the room's PDUs name as auth events.
async fn join_intake_room(b: &FedNode, origins: &[Origin], senders: &[Vec<String>], room: String) -> IntakeRoom {
    let mut joins = std::collections::HashMap::new();
    let mut read: Option<(ruma::RoomVersionId, Option<String>, String)> = None;
    let mut head = None;
    for (origin, users) in origins.iter().zip(senders) {
        for user in users {
            let (id, depth, version, answer) = origin.join(b, &room, user).await;
            if read.is_none() {
                let rules = version.rules().expect("a known room version");
                let state_id = |kind: &str| {
                    let event = answer["state"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|e| e["type"] == kind && e["state_key"] == "")
                        .unwrap_or_else(|| panic!("no {kind} in send_join's state: {answer}"));
                    let object: ruma::CanonicalJsonObject = serde_json::from_value(event.clone()).expect("a PDU");
                    format!("${}", ruma::signatures::reference_hash(&object, &rules).expect("reference hash"))
                };
                let create = rules.event_format.allow_room_create_in_auth_events.then(|| state_id("m.room.create"));
                read = Some((version, create, state_id("m.room.power_levels")));
            }
            joins.insert(user.clone(), id.clone());
            head = Some((id, depth));
        }
    }
    let (version, create, power_levels) = read.expect("every room has a remote sender");
    IntakeRoom { id: room, version, create, power_levels, joins, head: head.expect("a join") }
}

/// Builds and signs origin `o`'s PDUs (of `origins`) and packs them in transactions of at most 50,
/// before anything is measured. Probe `n` goes into room `n % rooms`, whose chain is origin
/// `room % origins`'s alone, from its senders in turn; each PDU follows the room's previous one
/// (`prev_events`, `depth`), so B never misses an event it must fetch. Its auth events are the
/// create event (before room version 12), the power levels and the sender's own join.
fn intake_transactions(
    origin: &Origin,
    destination: &str,
    users: &[String],
    rooms: &mut [IntakeRoom],
    (o, origins, total_rooms): (usize, usize, usize),
    events: u64,
) -> Vec<Transaction> {
    let mut pdus = Vec::new();
    for n in 0..events {
        let r = (n % total_rooms as u64) as usize;
        if r % origins != o {
            continue;
        }
        let room = &mut rooms[r / origins];
        let sender = &users[(n / total_rooms as u64) as usize % users.len()];
        let mut auth: Vec<&str> = room.create.iter().map(String::as_str).collect();
        auth.extend([room.power_levels.as_str(), room.joins[sender].as_str()]);
        let depth = room.head.1 + 1;
        let (id, pdu) = origin.event(
            &room.version,
            json!({
                "type": "m.room.message", "room_id": room.id, "sender": sender, "origin": origin.name,
                "origin_server_ts": now_ms(), "depth": depth, "prev_events": [room.head.0], "auth_events": auth,
                "content": { "msgtype": "m.text", "body": format!("probe-{n}") },
            }),
        );
        room.head = (id, depth);
        pdus.push((n, pdu));
    }
    pdus.chunks(50)
        .enumerate()
        .map(|(i, chunk)| {
            let uri = format!("/_matrix/federation/v1/send/intake-{i}");
            let pdus: Vec<&Value> = chunk.iter().map(|(_, pdu)| pdu).collect();
            let body = json!({ "origin": origin.name, "origin_server_ts": now_ms(), "pdus": pdus });
            Transaction {
                authorization: origin.authorization(destination, "PUT", &uri, Some(&body)),
                body: bytes::Bytes::from(serde_json::to_vec(&body).expect("JSON")),
                numbers: chunk.iter().map(|(n, _)| *n).collect(),
                uri,
            }
        })
        .collect()
}

/// What one origin's sending gave: when each probe's transaction went out, each transaction's
/// round trip, and the PDUs B answered with an error.
#[derive(Default)]
struct Sent {
    at: Vec<(u64, Instant)>,
    round_trips: Vec<Duration>,
    rejected: Vec<String>,
}

/// Sends an origin's transactions one at a time, each as soon as B answered the one before (as
/// the spec asks of a sending server).
async fn send_transactions(origin: &Origin, destination: &str, transactions: &[Transaction]) -> Sent {
    let mut sent = Sent::default();
    for t in transactions {
        let started = Instant::now();
        let response = origin
            .http
            .put(format!("https://{destination}{}", t.uri))
            .header("Authorization", &t.authorization)
            .header("Content-Type", "application/json")
            .body(t.body.clone())
            .send()
            .await
            .expect("B answers");
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        sent.round_trips.push(started.elapsed());
        assert!(status.is_success(), "{} from {}: {status} {answer}", t.uri, origin.name);
        for (id, result) in answer["pdus"].as_object().into_iter().flatten() {
            if result.get("error").is_some() {
                sent.rejected.push(format!("{id}: {result}"));
            }
        }
        sent.at.extend(t.numbers.iter().map(|n| (*n, started)));
    }
    sent
}

/// Endpoints B would fetch events through: it never should during the intake, every PDU's
/// previous event being sent before it.
const FETCHES: &[&str] = &["get_missing_events", "event", "event_auth", "state", "state_ids", "backfill"];

/// B alone taking in PDUs from `--origins` synthetic remote servers (see the top comment).
async fn intake_scenario(args: &Args) {
    let receiver = args.receiver.as_deref().unwrap_or(&args.server);
    let origin_count = args.origins.max(1);
    let (b, origins) =
        tokio::join!(start_node(receiver, "b"), futures::future::join_all((0..origin_count).map(|_| Origin::start())));
    let http = reqwest::Client::builder().build().expect("client");
    let reader = register(&http, &b.base, "reader").await;
    let per_origin = args.fed_senders.div_ceil(origin_count).max(1);
    let senders: Vec<Vec<String>> =
        origins.iter().map(|o| (0..per_origin).map(|i| format!("@sender{i}:{}", o.name)).collect()).collect();
    let mut room_ids = Vec::new();
    for _ in 0..args.fed_rooms.max(1) {
        room_ids.push(create_public_room(&http, &b.base, &reader).await);
    }
    let total_rooms = room_ids.len();
    let prepared = Instant::now();
    let rooms: Vec<IntakeRoom> = futures::stream::iter(room_ids)
        .map(|room| join_intake_room(&b, &origins, &senders, room))
        .buffered(4)
        .collect()
        .await;
    let joined = prepared.elapsed();
    let version = rooms[0].version.clone();

    let events = if args.events > 0 { args.events } else { args.sizes.intake_events };
    let mut by_origin: Vec<Vec<IntakeRoom>> = (0..origin_count).map(|_| Vec::new()).collect();
    for (r, room) in rooms.into_iter().enumerate() {
        by_origin[r % origin_count].push(room);
    }
    let building = Instant::now();
    let transactions: Vec<Vec<Transaction>> = std::thread::scope(|scope| {
        let builders: Vec<_> = origins
            .iter()
            .zip(&senders)
            .zip(by_origin.iter_mut())
            .enumerate()
            .map(|(o, ((origin, users), rooms))| {
                let destination = &b.name;
                scope.spawn(move || {
                    intake_transactions(origin, destination, users, rooms, (o, origin_count, total_rooms), events)
                })
            })
            .collect();
        builders.into_iter().map(|b| b.join().expect("a PDU builder")).collect()
    });
    let total: u64 = transactions.iter().flatten().map(|t| t.numbers.len() as u64).sum();
    eprintln!(
        "intake set-up: {total_rooms} rooms (version {version}) joined by {} remote senders in {:.1} s, {total} PDUs in {} transactions signed in {:.1} s",
        per_origin * origin_count,
        joined.as_secs_f64(),
        transactions.iter().map(Vec::len).sum::<usize>(),
        building.elapsed().as_secs_f64()
    );

    let pid = b.child.id();
    let stop = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reading = spawn_probe_reader(http.clone(), b.base.clone(), reader.clone(), stop.clone(), arrived.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked_before: Vec<_> = origins.iter().map(Origin::asked).collect();
    let mut during_set_up = std::collections::BTreeMap::<&String, u64>::new();
    for (endpoint, count) in asked_before.iter().flatten() {
        *during_set_up.entry(endpoint).or_default() += count;
    }
    eprintln!("B's requests to the origins during the set-up: {during_set_up:?}");
    if args.callgrind {
        callgrind_control(&["--zero"], pid);
    }
    let (rss_stop, rss_peak) = sample_rss(pid);
    let cpu_before = cpu_seconds(pid);
    let start = Instant::now();
    let sent = futures::future::join_all(
        origins
            .iter()
            .zip(&transactions)
            .map(|(origin, transactions)| send_transactions(origin, &b.name, transactions)),
    )
    .await;
    let last_sent = Instant::now();
    let arrivals = collect(&arrived, total, &stop, reading).await;
    let cpu_arrived = cpu_seconds(pid) - cpu_before;
    rss_stop.notify_one();
    let peak = rss_peak.await.expect("RSS sampler");
    let rss_end = rss_mib(pid).0;
    wait_quiet(pid).await;
    let cpu_quiet = cpu_seconds(pid) - cpu_before;
    if args.callgrind {
        callgrind_control(&["--dump"], pid);
        eprintln!("callgrind: B took in {} events in the dump just written", arrivals.first.len());
    }

    let sent_at: SentAt = Arc::new(std::sync::Mutex::new(sent.iter().flat_map(|s| s.at.iter().copied()).collect()));
    let run = Phase::measure(start, last_sent, &sent_at, &arrivals);
    let mut round_trips: Vec<Duration> = sent.iter().flat_map(|s| s.round_trips.iter().copied()).collect();
    round_trips.sort();
    let rejected: Vec<&String> = sent.iter().flat_map(|s| &s.rejected).collect();
    let seconds = arrivals.first.values().max().map_or(f64::NAN, |last| last.duration_since(start).as_secs_f64());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| origins | rooms | remote senders | events | s, first transaction → last arrival | events/s arriving | duplicates | arrived | transaction round trip p50 / p99 ms | send→sync p50 / p99 ms | B CPU s by the last arrival (once quiet) | B RSS MiB at the end (peak) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {origin_count} | {total_rooms} | {} | {} | {seconds:.2} | {:.0} | {} | {} of {} | {:.1} / {:.1} | {:.1} / {:.1} | {cpu_arrived:.2} ({cpu_quiet:.2}) | {rss_end:.0} ({peak:.0}) |",
        per_origin * origin_count,
        run.sent,
        run.delivered as f64 / seconds,
        run.duplicates,
        run.delivered,
        run.sent,
        ms(percentile(&round_trips, 0.5)),
        ms(percentile(&round_trips, 0.99)),
        run.p(0.5),
        run.p(0.99),
    );
    // What B asked of the origins while it took the PDUs in.
    let mut asked = std::collections::BTreeMap::<String, u64>::new();
    for (origin, before) in origins.iter().zip(&asked_before) {
        for (endpoint, count) in origin.asked() {
            let new = count - before.get(&endpoint).copied().unwrap_or(0);
            if new > 0 {
                *asked.entry(endpoint).or_default() += new;
            }
        }
    }
    println!("\nB's requests to the origins during the run: {asked:?}; PDUs B rejected: {}", rejected.len());
    assert!(rejected.is_empty(), "B rejected PDUs: {rejected:?}");
    let fetches: Vec<&String> =
        asked.keys().filter(|e| e.rsplit('/').next().is_some_and(|name| FETCHES.contains(&name))).collect();
    assert!(fetches.is_empty(), "B fetched events during the intake (every previous event was sent first): {asked:?}");
    assert_eq!(run.sent, events, "every PDU was sent");
    run.check("intake");
}
