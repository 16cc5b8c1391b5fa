//! Storage generator: plays "a generated ministry" into a real `hemicycle serve` and, with
//! `--synapse`, into a real Synapse on PostgreSQL, then measures the bytes each keeps on disk
//! (issue 44: Hemicycle should need at most a third of Synapse's).
//!
//! ```sh
//! cargo build -p hemicycle --bin hemicycle --example storage_bench
//! target/debug/examples/storage_bench --scale 100 [--synapse] [--server target/debug/hemicycle] [--seed 44]
//!     [--messages-scale N]
//! ```
//!
//! The full ministry is 2,000 users, 500 rooms of 3 to 300 members, 1,000,000 messages, 50,000
//! state changes, read receipts and device-list churn; `--scale N` plays 1/N of each count
//! (at least 10 users and 3 rooms; room sizes are capped by the users there are);
//! `--messages-scale N` plays the messages and receipts at 1/N instead, so the state changes of a
//! larger ministry can be measured without the hours Synapse takes over its messages. Synapse takes
//! about 50 events a second, so the comparison runs at 1/100 (a few minutes); bytes on disk do
//! not depend on the build or the machine's load, only on what was written.
//!
//! Every count comes from one seeded generator, so both servers receive the same requests, in
//! three phases measured apart:
//! 1. set-up: the users register (one device each), the rooms are made (public, history shared)
//!    and their members join;
//! 2. messages: text messages of 3 to 40 words spread over the rooms (rooms of more members talk
//!    more), a read receipt for one message in ten by a member of its room, and device-list
//!    churn (each user signs in on two more devices and signs out of one);
//! 3. state changes: topics, names, power levels (one member's level changed) and membership
//!    churn (a member leaves, then joins again: two changes).
//!
//! After each phase the storage is measured at rest: Hemicycle is stopped, its database
//! compacted (`hemicycle server compact`, which prints every column family's table files) and
//! its folder summed (the search index apart, RocksDB's rotated info logs left out), and it is
//! started again on the same address; Synapse's database is `VACUUM FULL`ed and measured with
//! `pg_database_size`, and the PostgreSQL data folder summed too (it also holds the WAL and the
//! catalogs). Synapse runs on its own PostgreSQL cluster (`support/synapse.rs`, shared with
//! `loadgen --synapse`). The run checks
//! what it played: every room holds its members and each server answers every request with
//! success.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{json, Value};

#[path = "support/synapse.rs"]
mod synapse;
use synapse::Synapse;

/// The full ministry of the issue.
const USERS: usize = 2_000;
const ROOMS: usize = 500;
const MESSAGES: usize = 1_000_000;
const STATE_CHANGES: usize = 50_000;
/// Rooms played at once (each room's requests are sent in order).
const CONCURRENCY: usize = 8;

struct Args {
    scale: usize,
    /// Messages (and their receipts) at 1/N instead of 1/`scale`: the state changes of a large
    /// ministry measured without the hours Synapse takes over its messages.
    messages_scale: Option<usize>,
    server: String,
    synapse: bool,
    seed: u64,
}

fn args() -> Args {
    let mut out = Args { scale: 100, messages_scale: None, server: default_server(), synapse: false, seed: 44 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--synapse" {
            out.synapse = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--scale" => out.scale = value.parse().expect("--scale is a number"),
            "--messages-scale" => out.messages_scale = Some(value.parse().expect("--messages-scale is a number")),
            "--server" => out.server = value,
            "--seed" => out.seed = value.parse().expect("--seed is a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(out.scale >= 1, "--scale is at least 1");
    assert!(out.messages_scale.is_none_or(|n| n >= 1), "--messages-scale is at least 1");
    out
}

/// The `hemicycle` binary next to this example's build output.
fn default_server() -> String {
    let exe = std::env::current_exe().expect("own path");
    let profile_dir = exe.parent().and_then(|p| p.parent()).expect("target/<profile>/examples");
    profile_dir.join("hemicycle").to_string_lossy().into_owned()
}

/// A small deterministic generator (xorshift64*): the same seed gives both servers the same
/// workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const WORDS: &[&str] = &[
    "réunion",
    "budget",
    "ministère",
    "dossier",
    "note",
    "projet",
    "direction",
    "service",
    "agent",
    "arrêté",
    "décret",
    "circulaire",
    "cabinet",
    "préfecture",
    "calendrier",
    "validation",
    "signature",
    "courrier",
    "rapport",
    "synthèse",
    "le",
    "la",
    "les",
    "de",
    "du",
    "des",
    "un",
    "une",
    "pour",
    "avec",
    "sans",
    "sur",
    "dans",
    "demain",
    "ce",
    "matin",
    "soir",
    "semaine",
    "prochaine",
    "merci",
    "bonjour",
    "je",
    "vous",
    "nous",
    "envoie",
    "relis",
    "propose",
    "valide",
    "transmets",
    "attends",
    "retour",
    "version",
    "annexe",
    "tableau",
    "chiffres",
    "compte",
    "rendu",
    "ordre",
    "jour",
    "point",
    "urgent",
    "avant",
    "après",
    "midi",
    "salle",
    "visio",
    "lien",
    "document",
    "partagé",
    "commentaires",
    "corrections",
    "mise",
    "à",
    "et",
    "ou",
    "mais",
    "donc",
    "est",
    "sont",
    "a",
    "ont",
    "été",
    "fait",
    "faire",
    "prévu",
    "reporté",
    "confirmé",
    "annulé",
    "2026",
    "2027",
    "trimestre",
    "crédits",
    "marché",
    "public",
    "appel",
    "offres",
    "lot",
    "titulaire",
    "avenant",
    "paiement",
    "facture",
    "mandat",
];

fn sentence(rng: &mut Rng, min: usize, max: usize) -> String {
    let n = min + rng.below(max - min + 1);
    let mut words: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
    if rng.below(3) == 0 {
        words.push("?");
    }
    words.join(" ")
}

/// One request of the workload, by user and room index.
#[derive(Clone)]
enum Op {
    Message {
        sender: usize,
        body: String,
    },
    /// A read receipt by `user` for the last message sent in its room.
    Receipt {
        user: usize,
    },
    Topic {
        room: usize,
        text: String,
    },
    Name {
        room: usize,
        text: String,
    },
    /// Sets `target`'s power level in `room`.
    Power {
        room: usize,
        target: usize,
        level: u64,
    },
    /// `user` leaves its room, then joins it again.
    Churn {
        user: usize,
    },
}

/// Device-list churn of one user: sign in twice more, sign out of the first of those.
const DEVICE_LOGINS: usize = 2;

struct Workload {
    users: usize,
    /// Members of each room, by user index; the first is the room's creator.
    members: Vec<Vec<usize>>,
    /// Messages and receipts, by room (each room's in order).
    messages: Vec<Vec<Op>>,
    state: Vec<Vec<Op>>,
    counts: Counts,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    messages: usize,
    receipts: usize,
    state_changes: usize,
    memberships: usize,
    device_changes: usize,
}

impl Workload {
    fn generate(scale: usize, messages_scale: usize, seed: u64) -> Self {
        let mut rng = Rng(seed.max(1));
        let users = (USERS / scale).max(10);
        let rooms = (ROOMS / scale).max(3);
        // Room sizes from 3 to 300 (capped by the users there are), most rooms small: a cube of a
        // uniform draw puts half the rooms under 40 members at full scale.
        let largest = 300.min(users);
        let members: Vec<Vec<usize>> = (0..rooms)
            .map(|_| {
                let size = 3 + ((largest - 3) as f64 * rng.unit().powi(3)).round() as usize;
                let mut chosen = Vec::with_capacity(size);
                while chosen.len() < size {
                    let user = rng.below(users);
                    if !chosen.contains(&user) {
                        chosen.push(user);
                    }
                }
                chosen
            })
            .collect();
        let mut counts = Counts { memberships: members.iter().map(Vec::len).sum(), ..Counts::default() };
        // Messages by room, weighted by the room's size.
        let weights: Vec<usize> = members.iter().map(Vec::len).collect();
        let total_weight: usize = weights.iter().sum();
        let pick_room = |rng: &mut Rng| {
            let mut at = rng.below(total_weight);
            weights
                .iter()
                .position(|w| {
                    at < *w || {
                        at -= w;
                        false
                    }
                })
                .expect("a room")
        };
        let mut messages = vec![Vec::new(); rooms];
        for _ in 0..(MESSAGES / messages_scale) {
            let room = pick_room(&mut rng);
            let sender = members[room][rng.below(members[room].len())];
            messages[room].push(Op::Message { sender, body: sentence(&mut rng, 3, 40) });
            counts.messages += 1;
            if rng.below(10) == 0 {
                let user = members[room][rng.below(members[room].len())];
                messages[room].push(Op::Receipt { user });
                counts.receipts += 1;
            }
        }
        let mut state = vec![Vec::new(); rooms];
        while counts.state_changes < STATE_CHANGES / scale {
            let room = rng.below(rooms);
            let member = members[room][1 + rng.below(members[room].len() - 1)];
            let op = match rng.below(10) {
                0..=2 => Op::Topic { room, text: sentence(&mut rng, 4, 20) },
                3..=4 => Op::Name { room, text: sentence(&mut rng, 1, 4) },
                5..=6 => Op::Power { room, target: member, level: [0, 10, 50][rng.below(3)] },
                _ => Op::Churn { user: member },
            };
            counts.state_changes += if matches!(op, Op::Churn { .. }) { 2 } else { 1 };
            state[room].push(op);
        }
        counts.device_changes = users * (DEVICE_LOGINS + 1);
        Self { users, members, messages, state, counts }
    }
}

/// A server under test: its client API and how to measure it at rest.
trait Store {
    fn name(&self) -> &'static str;
    fn base(&self) -> &str;
    /// Bytes at rest after compaction: (the figure compared, details to print).
    fn measure(&self) -> (u64, String);
}

struct Hemicycle {
    /// The running server; replaced at each measure (see [`Store::measure`] below).
    child: std::sync::Mutex<Child>,
    server: String,
    dir: tempfile::TempDir,
    base: String,
}

impl Drop for Hemicycle {
    fn drop(&mut self) {
        let child = self.child.get_mut().expect("server process");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Hemicycle {
    fn start(server: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (child, base) = Self::spawn(server, dir.path(), "127.0.0.1:0");
        Self { child: std::sync::Mutex::new(child), server: server.to_owned(), dir, base }
    }

    /// Starts `hemicycle serve` on the database in `dir`, listening on `listen`; returns the
    /// process and the base URL it printed.
    fn spawn(server: &str, dir: &Path, listen: &str) -> (Child, String) {
        use std::io::BufRead;
        let mut child = Command::new(server)
            .arg("serve")
            .env("HEMICYCLE_DATABASE__PATH", dir.join("db"))
            .env("HEMICYCLE_MEDIA__PATH", dir.join("media"))
            .env("HEMICYCLE_LISTEN__CLIENT", listen)
            .env("HEMICYCLE_REGISTRATION__OPEN", "true")
            .env("HEMICYCLE_RATE_LIMITS__ENABLED", "false")
            .env("HEMICYCLE_LOG__LEVEL", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {server}: {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("server address");
        let base = line.trim().strip_prefix("hemicycle listening on ").expect("address line").to_owned();
        (child, base)
    }
}

/// Bytes of every file under `path`.
fn folder_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => folder_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Store for Hemicycle {
    fn name(&self) -> &'static str {
        "Hemicycle"
    }
    fn base(&self) -> &str {
        &self.base
    }
    /// Compacts with the server stopped, then starts it again on the same address: through a
    /// running server's admin socket the CLI waits two minutes for the answer, less than the
    /// compaction of a full-size database takes (the million-message run lost its database to
    /// that wait).
    fn measure(&self) -> (u64, String) {
        let db = self.dir.path().join("db");
        let mut child = self.child.lock().expect("server process");
        let stopped = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(stopped.success(), "SIGTERM to the server");
        let status = child.wait().expect("the server's exit");
        assert!(status.success(), "the server stopped cleanly: {status:?}");
        let out = Command::new(&self.server)
            .args(["server", "compact"])
            .env("HEMICYCLE_DATABASE__PATH", &db)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.server));
        assert!(out.status.success(), "server compact: {}", String::from_utf8_lossy(&out.stderr));
        let listen = self.base.trim_start_matches("http://");
        *child = Self::spawn(&self.server, self.dir.path(), listen).0;
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let search = folder_bytes(&db.join("search"));
        // RocksDB renames its info log at each open (`LOG.old.<time>`); the restarts of the
        // measure open the database twice more than a server running on would, so the logs
        // they rotate are left out (the current `LOG` counts, as before).
        let rotated: u64 = std::fs::read_dir(&db)
            .expect("the database folder")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("LOG.old."))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        let total = folder_bytes(&db) - rotated;
        let mut details = String::new();
        for line in table.lines().take(16) {
            details.push_str(&format!("    {line}\n"));
        }
        details
            .push_str(&format!("    search index\t\t{search}\n    database folder with the search index\t\t{total}"));
        (total, details)
    }
}

impl Store for Synapse {
    fn name(&self) -> &'static str {
        "Synapse"
    }
    fn base(&self) -> &str {
        &self.base
    }
    fn measure(&self) -> (u64, String) {
        let pending = self.psql("SELECT count(*) FROM background_updates");
        self.psql("CHECKPOINT");
        self.psql("VACUUM FULL");
        let size: u64 = self.psql("SELECT pg_database_size('synapse')").trim().parse().expect("a size");
        let tables = self.psql(
            "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC LIMIT 15",
        );
        let mut details = String::new();
        for line in tables.lines() {
            details.push_str(&format!("    {}\n", line.replace('|', "\t")));
        }
        details.push_str(&format!(
            "    background updates pending\t{}\n    PostgreSQL data folder (WAL and catalogs included)\t{}",
            pending.trim(),
            folder_bytes(self.data())
        ));
        (size, details)
    }
}

/// A client of one server: every request must succeed.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        for attempt in 0.. {
            let mut request = self.http.request(method.clone(), &url);
            if !body.is_null() {
                request = request.json(&body);
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            // Synapse answers 429 now and then even with generous limits; wait as told.
            if status.as_u16() == 429 && attempt < 20 {
                let ms = value["retry_after_ms"].as_u64().unwrap_or(100);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                continue;
            }
            assert!(status.is_success(), "{method} {url}: {status} {value}");
            return value;
        }
        unreachable!()
    }

    /// Registers `name` through the dummy stage (first asking for the session, as Synapse wants).
    async fn register(&self, name: &str) -> (String, String) {
        let url = format!("{}/_matrix/client/v3/register", self.base);
        let body = json!({ "username": name, "password": "storage-password" });
        let first: Value = self.http.post(&url).json(&body).send().await.expect("register").json().await.expect("json");
        let mut body = body;
        body["auth"] = json!({ "type": "m.login.dummy", "session": first["session"] });
        let done = self.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, body).await;
        (done["access_token"].as_str().expect("token").to_owned(), done["user_id"].as_str().expect("user").to_owned())
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The ids a server gave: users' tokens and ids, rooms' ids.
struct Ids {
    tokens: Vec<String>,
    user_ids: Vec<String>,
    rooms: Vec<String>,
}

async fn setup(client: &Client, w: &Workload) -> Ids {
    let registered: Vec<(String, String)> = futures::stream::iter(0..w.users)
        .map(|i| async move { client.register(&format!("agent{i:04}")).await })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let (tokens, user_ids): (Vec<String>, Vec<String>) = registered.into_iter().unzip();
    let rooms: Vec<String> = futures::stream::iter(w.members.iter().enumerate())
        .map(|(i, members)| {
            let (tokens, client) = (&tokens, client);
            async move {
                let body = json!({
                    "preset": "public_chat",
                    "name": format!("Salle {i}"),
                    "initial_state": [{ "type": "m.room.history_visibility", "state_key": "",
                                        "content": { "history_visibility": "shared" } }],
                });
                let room = client
                    .call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&tokens[members[0]]), body)
                    .await;
                let room = room["room_id"].as_str().expect("room id").to_owned();
                for member in &members[1..] {
                    let path = format!("/_matrix/client/v3/join/{}", enc(&room));
                    client.call(reqwest::Method::POST, &path, Some(&tokens[*member]), json!({})).await;
                }
                room
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    Ids { tokens, user_ids, rooms }
}

/// Plays each room's ops in order, rooms side by side; state changes other than membership are
/// sent by the room's creator (the first of its members).
async fn play(client: &Client, ids: &Ids, members: &[Vec<usize>], ops: &[Vec<Op>], tag: &str) {
    futures::stream::iter(ops.iter().enumerate())
        .for_each_concurrent(CONCURRENCY, |(room, ops)| async move {
            let room_id = &ids.rooms[room];
            let mut last_event: Option<String> = None;
            for (n, op) in ops.iter().enumerate() {
                let state = |kind: &str, key: &str| {
                    format!("/_matrix/client/v3/rooms/{}/state/{kind}/{}", enc(room_id), enc(key))
                };
                match op {
                    Op::Message { sender, body, .. } => {
                        let path =
                            format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{tag}{room}-{n}", enc(room_id));
                        let body = json!({ "msgtype": "m.text", "body": body });
                        let sent = client.call(reqwest::Method::PUT, &path, Some(&ids.tokens[*sender]), body).await;
                        last_event = sent["event_id"].as_str().map(str::to_owned);
                    }
                    Op::Receipt { user, .. } => {
                        let event = last_event.as_deref().expect("a message before its receipt");
                        let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(room_id), enc(event));
                        client.call(reqwest::Method::POST, &path, Some(&ids.tokens[*user]), json!({})).await;
                    }
                    Op::Topic { room, text } | Op::Name { room, text } => {
                        let (kind, content) = match op {
                            Op::Topic { .. } => ("m.room.topic", json!({ "topic": text })),
                            _ => ("m.room.name", json!({ "name": text })),
                        };
                        let creator = &ids.tokens[members[*room][0]];
                        client.call(reqwest::Method::PUT, &state(kind, ""), Some(creator), content).await;
                    }
                    Op::Power { room, target, level } => {
                        let creator = &ids.tokens[members[*room][0]];
                        let path = state("m.room.power_levels", "");
                        let mut levels = client.call(reqwest::Method::GET, &path, Some(creator), Value::Null).await;
                        levels["users"][&ids.user_ids[*target]] = json!(level);
                        client.call(reqwest::Method::PUT, &path, Some(creator), levels).await;
                    }
                    Op::Churn { user, .. } => {
                        let token = Some(ids.tokens[*user].as_str());
                        let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(room_id));
                        client.call(reqwest::Method::POST, &leave, token, json!({})).await;
                        let join = format!("/_matrix/client/v3/join/{}", enc(room_id));
                        client.call(reqwest::Method::POST, &join, token, json!({})).await;
                    }
                }
            }
        })
        .await;
}

/// Each user signs in on [`DEVICE_LOGINS`] more devices, then signs out of the first.
async fn device_churn(client: &Client, w: &Workload) {
    futures::stream::iter(0..w.users)
        .for_each_concurrent(CONCURRENCY, |i| async move {
            let mut tokens = Vec::new();
            for _ in 0..DEVICE_LOGINS {
                let body = json!({ "type": "m.login.password", "password": "storage-password",
                                   "identifier": { "type": "m.id.user", "user": format!("agent{i:04}") } });
                let session = client.call(reqwest::Method::POST, "/_matrix/client/v3/login", None, body).await;
                tokens.push(session["access_token"].as_str().expect("token").to_owned());
            }
            client.call(reqwest::Method::POST, "/_matrix/client/v3/logout", Some(&tokens[0]), json!({})).await;
        })
        .await;
}

/// Every room holds its members, joined (the churn ends with a join).
async fn check_members(client: &Client, w: &Workload, ids: &Ids) {
    for (room, members) in w.members.iter().enumerate() {
        let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&ids.rooms[room]));
        let joined = client.call(reqwest::Method::GET, &path, Some(&ids.tokens[members[0]]), Value::Null).await;
        let joined = joined["joined"].as_object().map(|o| o.len()).unwrap_or(0);
        assert_eq!(joined, members.len(), "room {room} holds its {} members", members.len());
    }
}

struct Measured {
    name: &'static str,
    after_setup: u64,
    after_messages: u64,
    after_state: u64,
    seconds: f64,
}

async fn run(store: &dyn Store, w: &Workload) -> Measured {
    // A new connection pool after each measure: Hemicycle's measure restarts the server.
    let client = || Client { http: reqwest::Client::new(), base: store.base().to_owned() };
    let started = Instant::now();
    let phase = |label: &str| {
        let (bytes, details) = store.measure();
        println!("\n{} after {label}: {bytes} bytes\n{details}", store.name());
        bytes
    };
    let ids = setup(&client(), w).await;
    let after_setup = phase("set-up");
    let messages = client();
    tokio::join!(play(&messages, &ids, &w.members, &w.messages, "m"), device_churn(&messages, w));
    let after_messages = phase("messages");
    let client = client();
    play(&client, &ids, &w.members, &w.state, "s").await;
    check_members(&client, w, &ids).await;
    let after_state = phase("state changes");
    Measured { name: store.name(), after_setup, after_messages, after_state, seconds: started.elapsed().as_secs_f64() }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = args();
    let w = Workload::generate(args.scale, args.messages_scale.unwrap_or(args.scale), args.seed);
    let c = w.counts;
    println!(
        "storage_bench 1/{}: {} users, {} rooms (members {}–{}, {} memberships), {} messages, {} receipts, {} state changes, {} device changes (seed {})",
        args.scale,
        w.users,
        w.members.len(),
        w.members.iter().map(Vec::len).min().unwrap_or(0),
        w.members.iter().map(Vec::len).max().unwrap_or(0),
        c.memberships,
        c.messages,
        c.receipts,
        c.state_changes,
        c.device_changes,
        args.seed
    );
    let mut results = Vec::new();
    {
        let hemicycle = Hemicycle::start(&args.server);
        results.push(run(&hemicycle, &w).await);
    }
    if args.synapse {
        let synapse = Synapse::start("synapse.storage", "").await;
        results.push(run(&synapse, &w).await);
    }
    println!("\n| server | after set-up | per message (+ receipts, device churn) | per state change | total at the end | time |");
    println!("|---|---|---|---|---|---|");
    for m in &results {
        let per_message = (m.after_messages.saturating_sub(m.after_setup)) as f64 / c.messages as f64;
        let per_state = (m.after_state.saturating_sub(m.after_messages)) as f64 / c.state_changes as f64;
        println!(
            "| {} | {} B | {per_message:.0} B | {per_state:.0} B | {} B | {:.0} s |",
            m.name, m.after_setup, m.after_state, m.seconds
        );
    }
    if let [h, s] = results.as_slice() {
        println!("\nHemicycle / Synapse at the end: {:.2}", h.after_state as f64 / s.after_state as f64);
    }
}
