//! Multi-node harness for the federation tests: real `hemicycle serve` processes on loopback, each
//! with its own data directory, self-signed certificate and federation port, plus raw-HTTP helpers
//! for the client API and waits that long-poll `/sync` (never fixed sleeps).
//!
//! A node's server name is `127.0.0.1:<federation port>`: an IP literal with an explicit port, so
//! server discovery connects straight to the node's HTTPS federation listener.

pub mod dns;
pub mod scenarios;

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use matrix_sdk::{
    ruma::api::client::{
        account::register,
        uiaa::{AuthData, Dummy},
    },
    Client,
};
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;

/// How long a test waits for something to show up in a sync (or a decryption to succeed).
pub const SYNC_WAIT: Duration = Duration::from_secs(30);

/// The password of every account the harness registers.
pub const PASSWORD: &str = "pw";

/// Start-up readiness: the client line on stdout, then the federation listener answering.
const PRINT_WAIT: Duration = Duration::from_secs(60);
const FEDERATION_READY_WAIT: Duration = Duration::from_secs(30);
/// How long a Synapse may take to start (it migrates its SQLite schema first).
const SYNAPSE_READY_WAIT: Duration = Duration::from_secs(120);

/// Upper bound of one plain (not long-poll) HTTP request; remote joins and media go over
/// federation, so this is generous.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest single `/sync` long-poll inside a wait.
const LONG_POLL: Duration = Duration::from_secs(10);

/// The sync filter of the harness: a timeline large enough that no wait in the scenarios sees a
/// gap (a limited timeline) where it expects every event.
const TIMELINE_FILTER: &str = r#"{"room":{"timeline":{"limit":100}}}"#;

/// The `hemicycle` binary: `$HEMICYCLE_BIN`, or `<target>/<profile>/hemicycle` next to the
/// `deps/` folder the test executable runs from.
pub fn hemicycle_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HEMICYCLE_BIN") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "HEMICYCLE_BIN={} is not a file", path.display());
        return path;
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe.parent().expect("the test executable's folder");
    let in_deps = dir.file_name().is_some_and(|name| name == "deps");
    let profile_dir = if in_deps { dir.parent().unwrap_or(dir) } else { dir };
    let bin = profile_dir.join(format!("hemicycle{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "no hemicycle binary at {} (derived from the test executable {}): build it first \
         (`cargo build -p hemicycle`, which `cargo nextest run --workspace` does) or set HEMICYCLE_BIN",
        bin.display(),
        exe.display()
    );
    bin
}

/// Percent-encodes everything but the unreserved characters: for path segments (room ids,
/// aliases, user ids, server names with their port) and query values.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// A port that was free a moment ago on 127.0.0.1 (the listener is dropped before returning).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe listener");
    listener.local_addr().expect("probe listener address").port()
}

/// A fresh transaction id for `PUT /send` (unique within the test process).
fn next_txn() -> String {
    static TXN: AtomicU64 = AtomicU64::new(0);
    format!("fedtest{}", TXN.fetch_add(1, Ordering::Relaxed))
}

/// Sets a dotted key (`a.b.c`) in a TOML table, creating the intermediate tables.
fn set_key(root: &mut toml::Table, key: &str, value: toml::Value) {
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = root;
    for part in &parts[..parts.len() - 1] {
        table = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("a table");
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
}

/// Writes the node's certificate, key and config into `dir`; returns the config path.
fn write_node_config(
    dir: &Path,
    server_name: &str,
    fed_port: u16,
    allow: &[String],
    extra: &[(&str, toml::Value)],
) -> PathBuf {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("self-signed certificate");
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write certificate");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");

    fn path_value(path: &Path) -> toml::Value {
        toml::Value::from(path.to_string_lossy().into_owned())
    }
    let mut root = toml::Table::new();
    set_key(&mut root, "server_name", server_name.into());
    set_key(&mut root, "database.path", path_value(&dir.join("db")));
    set_key(&mut root, "listen.client", "127.0.0.1:0".into());
    set_key(&mut root, "listen.federation", format!("127.0.0.1:{fed_port}").into());
    set_key(&mut root, "tls.cert", path_value(&cert_path));
    set_key(&mut root, "tls.key", path_value(&key_path));
    set_key(&mut root, "federation.verify_tls", false.into());
    // Every test node, Synapse and hostile peer is on loopback, which federation refuses by default.
    set_key(&mut root, "federation.allow_ranges", toml::Value::Array(vec!["127.0.0.1/32".into()]));
    // The directory tests list a remote server's public rooms; off by default, as in Synapse.
    set_key(&mut root, "federation.public_rooms", true.into());
    let allow: Vec<toml::Value> = allow.iter().map(|name| toml::Value::from(name.as_str())).collect();
    set_key(&mut root, "federation.allow", toml::Value::Array(allow));
    set_key(&mut root, "registration.open", true.into());
    set_key(&mut root, "rate_limits.enabled", false.into());
    // `FEDERATION_TESTS_LOG=debug` (or a tracing filter) makes a failing scenario's nodes talk.
    let level = std::env::var("FEDERATION_TESTS_LOG").unwrap_or_else(|_| "warn".to_owned());
    set_key(&mut root, "log.level", level.into());
    for (key, value) in extra {
        set_key(&mut root, key, value.clone());
    }
    let path = dir.join("homeserver.toml");
    std::fs::write(&path, toml::to_string(&root).expect("serialize config")).expect("write config");
    path
}

/// Synapse's configuration for a test node (see [`Node::start_synapse`]).
fn write_synapse_config(dir: &Path, server_name: &str, fed_port: u16, client_port: u16, extra: &str) -> PathBuf {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("self-signed certificate");
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write certificate");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
    let level = match std::env::var("FEDERATION_TESTS_LOG").as_deref() {
        Ok("debug" | "trace") => "DEBUG",
        Ok(l) if l.contains("info") => "INFO",
        _ => "WARNING",
    };
    let log_path = dir.join("log.yaml");
    std::fs::write(
        &log_path,
        format!(
            "version: 1\nformatters: {{precise: {{format: '%(asctime)s %(name)s %(levelname)s %(message)s'}}}}\n\
             handlers: {{console: {{class: logging.StreamHandler, formatter: precise}}}}\n\
             root: {{level: {level}, handlers: [console]}}\ndisable_existing_loggers: false\n"
        ),
    )
    .expect("write the log config");
    let d = dir.display();
    let limit = "{per_second: 10000, burst_count: 10000}";
    let config = format!(
        r#"server_name: "{server_name}"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {client_port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    resources: [{{names: [client], compress: false}}]
  - port: {fed_port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: true
    resources: [{{names: [federation], compress: false}}]
tls_certificate_path: "{cert}"
tls_private_key_path: "{key}"
database: {{name: sqlite3, args: {{database: "{d}/homeserver.db"}}}}
log_config: "{log}"
media_store_path: "{d}/media"
signing_key_path: "{d}/signing.key"
trusted_key_servers: []
suppress_key_server_warning: true
federation_verify_certificates: false
ip_range_blacklist: []
report_stats: false
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: "test-only"
macaroon_secret_key: "test-only-macaroon"
form_secret: "test-only-form"
presence: {{enabled: true}}
allow_public_rooms_over_federation: true
room_list_publication_rules: [{{action: allow}}]
rc_message: {limit}
rc_registration: {limit}
rc_login: {{address: {limit}, account: {limit}, failed_attempts: {limit}}}
rc_joins: {{local: {limit}, remote: {limit}}}
rc_invites: {{per_room: {limit}, per_user: {limit}, per_issuer: {limit}}}
rc_federation: {{window_size: 1000, sleep_limit: 10000, sleep_delay: 1, reject_limit: 10000, concurrent: 1000}}
"#,
        cert = cert_path.display(),
        key = key_path.display(),
        log = log_path.display(),
    );
    let path = dir.join("homeserver.yaml");
    std::fs::write(&path, config + extra).expect("write the Synapse config");
    path
}

/// One Hemicycle node: a `hemicycle serve` process, its data directory and its addresses. The
/// federation port (hence the server name) stays the same across restarts; the client port is
/// picked anew by each start, so read [`Node::client_url`] after a restart.
pub struct Node {
    label: String,
    /// Data directory, certificate, config and the matrix-sdk stores of [`Node::client`].
    dir: TempDir,
    config_path: PathBuf,
    server_name: String,
    federation_url: String,
    client_url: String,
    child: Option<Child>,
    /// Accepts the node's self-signed certificate; also used for the plain-HTTP client API.
    http: reqwest::Client,
    sdk_stores: AtomicUsize,
    /// The venv's Python when this node is a Synapse (see [`Node::start_synapse`]).
    synapse: Option<PathBuf>,
    /// The `set_presence` of the harness's syncs on this node (`None`: the spec's default,
    /// `online`); see [`Node::set_sync_presence`].
    sync_presence: std::sync::Mutex<Option<String>>,
}

impl Node {
    /// Starts a node. `name_hint` names its folder and prefixes its output lines. `allow` is its
    /// `federation.allow` list; when it is not empty the node's own server name is added to it
    /// (a node cannot know its name before it exists). Empty means: federate with everyone.
    pub async fn start(name_hint: &str, allow: &[String]) -> Node {
        Node::start_with(name_hint, None, allow, &[]).await
    }

    /// [`Node::start`] with a server name of its own (a host name that other nodes find through
    /// DNS, for instance) instead of `127.0.0.1:<port>`, and extra config settings.
    pub async fn start_with(
        name_hint: &str,
        server_name: Option<&str>,
        allow: &[String],
        extra: &[(&str, toml::Value)],
    ) -> Node {
        let dir = tempfile::Builder::new().prefix(&format!("hemicycle-{name_hint}-")).tempdir().expect("temp dir");
        let fed_port = free_port();
        let server_name = server_name.map_or_else(|| format!("127.0.0.1:{fed_port}"), str::to_owned);
        let mut allow = allow.to_vec();
        if !allow.is_empty() && !allow.contains(&server_name) {
            allow.push(server_name.clone());
        }
        let config_path = write_node_config(dir.path(), &server_name, fed_port, &allow, extra);
        let http = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .expect("HTTP client accepting self-signed certificates");
        let mut node = Node {
            label: format!("{name_hint} {server_name}"),
            dir,
            config_path,
            federation_url: format!("https://127.0.0.1:{fed_port}"),
            server_name,
            client_url: String::new(),
            child: None,
            http,
            sdk_stores: AtomicUsize::new(0),
            synapse: None,
            sync_presence: Default::default(),
        };
        node.spawn().await;
        node
    }

    /// Starts a real Synapse (the `matrix-synapse` of the venv named by `SYNAPSE_VENV`, which
    /// `./scripts/test` installs): SQLite, a plain client listener and a TLS federation
    /// listener on loopback, a self-signed certificate, certificates of others not checked, no
    /// trusted key servers, open registration, rate limits out of the way. Fails, saying why,
    /// when Synapse is not installed: the interop tests never skip.
    pub async fn start_synapse(name_hint: &str) -> Node {
        Node::start_synapse_with(name_hint, "").await
    }

    /// [`Node::start_synapse`] with `extra` appended to its `homeserver.yaml` (YAML lines, such
    /// as `app_service_config_files: [...]`).
    pub async fn start_synapse_with(name_hint: &str, extra: &str) -> Node {
        let venv = std::env::var("SYNAPSE_VENV").unwrap_or_else(|_| {
            panic!("SYNAPSE_VENV is not set: run the tests with ./scripts/test, which installs Synapse into a venv")
        });
        let python = Path::new(&venv).join("bin").join("python");
        assert!(python.exists(), "no Python in SYNAPSE_VENV={venv}: ./scripts/test installs Synapse there");
        let dir = tempfile::Builder::new().prefix(&format!("synapse-{name_hint}-")).tempdir().expect("temp dir");
        let (fed_port, client_port) = (free_port(), free_port());
        let server_name = format!("127.0.0.1:{fed_port}");
        let config_path = write_synapse_config(dir.path(), &server_name, fed_port, client_port, extra);
        let generated = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
            .arg(&config_path)
            .output()
            .unwrap_or_else(|e| panic!("synapse {name_hint}: run {}: {e}", python.display()));
        assert!(
            generated.status.success(),
            "synapse {name_hint}: generating its signing key failed: {}",
            String::from_utf8_lossy(&generated.stderr)
        );
        let http = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .expect("HTTP client accepting self-signed certificates");
        let mut node = Node {
            label: format!("synapse {name_hint} {server_name}"),
            dir,
            config_path,
            federation_url: format!("https://127.0.0.1:{fed_port}"),
            server_name,
            client_url: format!("http://127.0.0.1:{client_port}"),
            child: None,
            http,
            sdk_stores: AtomicUsize::new(0),
            synapse: Some(python),
            sync_presence: Default::default(),
        };
        node.spawn().await;
        node
    }

    /// Whether this node is a Synapse.
    pub fn is_synapse(&self) -> bool {
        self.synapse.is_some()
    }

    async fn spawn_synapse(&mut self, python: PathBuf) {
        let mut child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&self.config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: start {}: {e}", self.label, python.display()));
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let label = self.label.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[{label}] {line}");
                }
            });
        }
        self.child = Some(child);
        let health = format!("{}/health", self.client_url);
        let deadline = Instant::now() + SYNAPSE_READY_WAIT;
        loop {
            let ok =
                self.http.get(&health).timeout(Duration::from_secs(5)).send().await.is_ok_and(|r| r.status() == 200);
            if ok {
                break;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!("{}: Synapse exited ({status}) before {health} answered", self.label);
            }
            assert!(Instant::now() < deadline, "{}: {health} did not answer within {SYNAPSE_READY_WAIT:?}", self.label);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.wait_federation_ready().await;
    }

    /// `127.0.0.1:<federation port>` (or the name given to [`Node::start_with`]): the part
    /// after the colon of this node's user ids.
    pub fn server_name(&self) -> String {
        self.server_name.clone()
    }

    /// `http://127.0.0.1:<client port>` of the running process.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// `https://127.0.0.1:<federation port>`.
    pub fn federation_port(&self) -> u16 {
        self.federation_url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port")
    }

    /// `https://127.0.0.1:<federation port>`.
    pub fn federation_url(&self) -> &str {
        &self.federation_url
    }

    /// The node's config file (the same one across restarts).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temp folder holding the node's data, certificate and config.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `@localpart:<server name>`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// Whether the process is running (started and neither killed nor stopped).
    /// Makes later restarts listen on the client port in use now, for a process configured
    /// with this node's client URL (an appservice) that must find it again.
    pub fn keep_client_port(&self) {
        let port = self.client_url.rsplit(':').next().expect("a port in the client URL").to_owned();
        let text = std::fs::read_to_string(&self.config_path).expect("read the node's config");
        let mut root: toml::Table = toml::from_str(&text).expect("the node's config is TOML");
        set_key(&mut root, "listen.client", format!("127.0.0.1:{port}").into());
        std::fs::write(&self.config_path, toml::to_string(&root).expect("config to TOML")).expect("write the config");
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "{}: already running", self.label);
        if let Some(python) = self.synapse.clone() {
            return self.spawn_synapse(python).await;
        }
        let bin = hemicycle_bin();
        let mut child = Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: start {}: {e}", self.label, bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        // Stored before waiting, so that a panic below still kills the process (Drop).
        self.child = Some(child);

        // Both pipes are drained for the process's whole life (a full pipe would block it);
        // other lines are echoed with the node's label so multi-node output stays readable.
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let label = self.label.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match line.strip_prefix("hemicycle listening on ") {
                    Some(url) if url.starts_with("http://") && tx.is_some() => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(url.trim().to_owned());
                        }
                    }
                    _ => eprintln!("[{label}] {line}"),
                }
            }
        });
        let label = self.label.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{label}] {line}");
            }
        });

        self.client_url = match tokio::time::timeout(PRINT_WAIT, rx).await {
            Ok(Ok(url)) => url,
            Ok(Err(_)) => panic!("{}: hemicycle ended its output before printing its client address", self.label),
            Err(_) => panic!("{}: hemicycle printed no client address within {PRINT_WAIT:?}", self.label),
        };
        self.wait_federation_ready().await;
    }

    /// Start-up readiness (not a test assertion): polls the federation version endpoint until it
    /// answers 200, bounded by [`FEDERATION_READY_WAIT`].
    async fn wait_federation_ready(&mut self) {
        let url = format!("{}/_matrix/federation/v1/version", self.federation_url);
        let deadline = Instant::now() + FEDERATION_READY_WAIT;
        loop {
            let last = match self.http.get(&url).timeout(Duration::from_secs(5)).send().await {
                Ok(response) if response.status() == 200 => return,
                Ok(response) => format!("status {}", response.status()),
                Err(e) => format!("{e}"),
            };
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!("{}: hemicycle exited ({status}) before {url} answered (last: {last})", self.label);
            }
            assert!(
                Instant::now() < deadline,
                "{}: {url} did not answer 200 within {FEDERATION_READY_WAIT:?} (last: {last})",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL (like `kill -9`: no shutdown code runs), then waits for the process to be gone.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().unwrap_or_else(|| panic!("{}: not running", self.label));
        child.kill().unwrap_or_else(|e| panic!("{}: SIGKILL: {e}", self.label));
        tokio::task::spawn_blocking(move || child.wait()).await.expect("wait task").expect("wait for the process");
    }

    /// SIGTERM, waits (30 s at most), and asserts a clean exit (status 0).
    pub async fn stop(&mut self) {
        let mut child = self.child.take().unwrap_or_else(|| panic!("{}: not running", self.label));
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", pid.as_str()]).status().expect("run kill");
        assert!(sent.success(), "{}: kill -TERM {pid} failed", self.label);
        let waiting = tokio::task::spawn_blocking(move || child.wait());
        match tokio::time::timeout(Duration::from_secs(30), waiting).await {
            Ok(status) => {
                let status = status.expect("wait task").expect("wait for the process");
                assert!(status.success(), "{}: graceful shutdown exits 0, got {status}", self.label);
            }
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", pid.as_str()]).status();
                panic!("{}: still running 30 s after SIGTERM (killed)", self.label);
            }
        }
    }

    /// Stops the node gracefully if it runs, then starts it again on the same config, data and
    /// federation port. After [`Node::kill`] it just starts it.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop().await;
        }
        self.spawn().await;
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.client_url)
    }

    // ---- raw client API -------------------------------------------------------------------

    /// One client-API request; answers the status and the JSON body (`Value::String` of the text
    /// when the body is not JSON, `Null` when empty).
    pub async fn call(&self, method: Method, token: Option<&str>, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.http.request(method.clone(), self.url(path)).timeout(REQUEST_TIMEOUT);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{}: {method} {path}: {e}", self.label));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    /// [`Node::call`] that must answer 200; returns the body.
    pub async fn ok(&self, method: Method, token: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, value) = self.call(method.clone(), Some(token), path, body).await;
        assert_eq!(status, 200, "{}: {method} {path} answered {status}: {value}", self.label);
        value
    }

    pub async fn get(&self, token: &str, path: &str) -> Value {
        self.ok(Method::GET, token, path, None).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Value {
        self.ok(Method::POST, token, path, Some(&body)).await
    }

    pub async fn put(&self, token: &str, path: &str, body: Value) -> Value {
        self.ok(Method::PUT, token, path, Some(&body)).await
    }

    /// Registers `localpart` (password [`PASSWORD`]) through the two-step UIA dummy flow over
    /// raw HTTP; returns (user id, access token).
    pub async fn register(&self, localpart: &str) -> (String, String) {
        let path = "/_matrix/client/v3/register";
        let body = json!({ "username": localpart, "password": PASSWORD });
        let (_, first) = self.call(Method::POST, None, path, Some(&body)).await;
        let session =
            first["session"].as_str().unwrap_or_else(|| panic!("{}: no UIA session in {first}", self.label)).to_owned();
        let body = json!({ "username": localpart, "password": PASSWORD,
                           "auth": { "type": "m.login.dummy", "session": session } });
        let (status, done) = self.call(Method::POST, None, path, Some(&body)).await;
        assert_eq!(status, 200, "{}: registration of {localpart}: {done}", self.label);
        let user_id = done["user_id"].as_str().expect("user_id").to_owned();
        assert_eq!(user_id, self.user_id(localpart), "{}: the user id carries the server name", self.label);
        (user_id, done["access_token"].as_str().expect("access_token").to_owned())
    }

    /// A matrix-sdk client (encryption on, sqlite store in the node's temp folder) for a new
    /// account `localpart`, registered through the UIA dummy flow and logged in. Build clients
    /// after any restart of this node: they keep the client URL they were built with.
    pub async fn client(&self, localpart: &str) -> Client {
        let n = self.sdk_stores.fetch_add(1, Ordering::Relaxed);
        let store = self.dir.path().join(format!("sdk-{localpart}-{n}"));
        let client = Client::builder()
            .homeserver_url(&self.client_url)
            .sqlite_store(store, None)
            .build()
            .await
            .unwrap_or_else(|e| panic!("{}: build a matrix-sdk client: {e}", self.label));
        let mut request = register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.password = Some(PASSWORD.to_owned());
        let err = client.matrix_auth().register(request.clone()).await.expect_err("first round asks for auth");
        let info = err.as_uiaa_response().expect("UIA challenge");
        let mut dummy = Dummy::new();
        dummy.session = info.session.clone();
        request.auth = Some(AuthData::Dummy(dummy));
        client
            .matrix_auth()
            .register(request)
            .await
            .unwrap_or_else(|e| panic!("{}: registration of {localpart}: {e}", self.label));
        client
    }

    /// Another matrix-sdk client (a new device, encryption on) for the existing account
    /// `localpart`, logged in with [`PASSWORD`].
    pub async fn login_client(&self, localpart: &str) -> Client {
        let n = self.sdk_stores.fetch_add(1, Ordering::Relaxed);
        let store = self.dir.path().join(format!("sdk-{localpart}-{n}"));
        let client = Client::builder()
            .homeserver_url(&self.client_url)
            .sqlite_store(store, None)
            .build()
            .await
            .unwrap_or_else(|e| panic!("{}: build a matrix-sdk client: {e}", self.label));
        client
            .matrix_auth()
            .login_username(localpart, PASSWORD)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: login of {localpart}: {e}", self.label));
        client
    }

    /// `POST /createRoom`; returns the room id.
    pub async fn create_room(&self, token: &str, body: Value) -> String {
        let created = self.post(token, "/_matrix/client/v3/createRoom", body).await;
        created["room_id"].as_str().expect("room_id").to_owned()
    }

    /// `POST /join/{roomIdOrAlias}?server_name=…`, status and body.
    pub async fn try_join(&self, token: &str, room_or_alias: &str, via: &[String]) -> (u16, Value) {
        self.call(Method::POST, Some(token), &join_path(room_or_alias, via), Some(&json!({}))).await
    }

    /// [`Node::try_join`] that must succeed; returns the joined room's id.
    pub async fn join(&self, token: &str, room_or_alias: &str, via: &[String]) -> String {
        let (status, value) = self.try_join(token, room_or_alias, via).await;
        assert_eq!(status, 200, "{}: join {room_or_alias} via {via:?}: {value}", self.label);
        value["room_id"].as_str().expect("room_id").to_owned()
    }

    /// `POST /rooms/{room}/{action}` (invite, kick, ban, unban, leave, forget), status and body.
    pub async fn room_action(&self, token: &str, room: &str, action: &str, body: Value) -> (u16, Value) {
        let path = format!("/_matrix/client/v3/rooms/{}/{action}", enc(room));
        self.call(Method::POST, Some(token), &path, Some(&body)).await
    }

    async fn room_action_ok(&self, token: &str, room: &str, action: &str, body: Value) {
        let (status, value) = self.room_action(token, room, action, body.clone()).await;
        assert_eq!(status, 200, "{}: {action} {body} in {room}: {value}", self.label);
    }

    pub async fn invite(&self, token: &str, room: &str, user: &str) {
        self.room_action_ok(token, room, "invite", json!({ "user_id": user })).await;
    }

    pub async fn kick(&self, token: &str, room: &str, user: &str, reason: &str) {
        self.room_action_ok(token, room, "kick", json!({ "user_id": user, "reason": reason })).await;
    }

    pub async fn ban(&self, token: &str, room: &str, user: &str, reason: &str) {
        self.room_action_ok(token, room, "ban", json!({ "user_id": user, "reason": reason })).await;
    }

    /// Leaves a room, or rejects an invite.
    pub async fn leave(&self, token: &str, room: &str) {
        self.room_action_ok(token, room, "leave", json!({})).await;
    }

    /// Sends an `m.text` message; returns its event id.
    pub async fn send_text(&self, token: &str, room: &str, text: &str) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room), next_txn());
        let sent = self.put(token, &path, json!({ "msgtype": "m.text", "body": text })).await;
        sent["event_id"].as_str().expect("event_id").to_owned()
    }

    /// `PUT /rooms/{room}/state/{type}/{state_key}`; returns the event id.
    pub async fn put_state(
        &self,
        token: &str,
        room: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{}/{}", enc(room), enc(event_type), enc(state_key));
        let sent = self.put(token, &path, content).await;
        sent["event_id"].as_str().expect("event_id").to_owned()
    }

    /// `GET /rooms/{room}/state/{type}/{state_key}`: the content, which must exist.
    pub async fn state_event(&self, token: &str, room: &str, event_type: &str, state_key: &str) -> Value {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{}/{}", enc(room), enc(event_type), enc(state_key));
        self.get(token, &path).await
    }

    /// `GET /rooms/{room}/state`: every current state event.
    pub async fn get_state(&self, token: &str, room: &str) -> Vec<Value> {
        let state = self.get(token, &format!("/_matrix/client/v3/rooms/{}/state", enc(room))).await;
        state.as_array().unwrap_or_else(|| panic!("{}: /state is not a list: {state}", self.label)).clone()
    }

    /// `GET /rooms/{room}/messages?dir=…&from=…&limit=…`.
    pub async fn messages(&self, token: &str, room: &str, dir: &str, from: Option<&str>, limit: u32) -> Value {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir={dir}&limit={limit}", enc(room));
        if let Some(from) = from {
            let _ = write!(path, "&from={}", enc(from));
        }
        self.get(token, &path).await
    }

    /// The user ids of `GET /rooms/{room}/joined_members`.
    pub async fn joined_members(&self, token: &str, room: &str) -> BTreeSet<String> {
        let members = self.get(token, &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room))).await;
        members["joined"]
            .as_object()
            .unwrap_or_else(|| panic!("{}: no joined map in {members}", self.label))
            .keys()
            .cloned()
            .collect()
    }

    /// `GET /joined_rooms`.
    pub async fn joined_rooms(&self, token: &str) -> Vec<String> {
        let rooms = self.get(token, "/_matrix/client/v3/joined_rooms").await;
        let list =
            rooms["joined_rooms"].as_array().unwrap_or_else(|| panic!("{}: no joined_rooms in {rooms}", self.label));
        list.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect()
    }

    pub async fn set_displayname(&self, token: &str, user: &str, name: &str) {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(user));
        self.put(token, &path, json!({ "displayname": name })).await;
    }

    pub async fn typing(&self, token: &str, room: &str, user: &str, typing: bool) {
        let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(room), enc(user));
        self.put(token, &path, json!({ "typing": typing, "timeout": 30_000 })).await;
    }

    /// A public `m.read` receipt.
    pub async fn read_receipt(&self, token: &str, room: &str, event_id: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(room), enc(event_id));
        self.post(token, &path, json!({})).await;
    }

    /// `POST /_matrix/media/v3/upload`; returns the `mxc://` URI.
    pub async fn upload(&self, token: &str, bytes: Vec<u8>, content_type: &str, filename: &str) -> String {
        let url = self.url(&format!("/_matrix/media/v3/upload?filename={}", enc(filename)));
        let response = self
            .http
            .post(url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(bytes)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: upload: {e}", self.label));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{}: upload answered {status}: {text}", self.label);
        let value: Value = serde_json::from_str(&text).expect("upload answer is JSON");
        value["content_uri"].as_str().expect("content_uri").to_owned()
    }

    /// A GET answering bytes (media): status, content type, body.
    pub async fn get_bytes(&self, token: &str, path: &str) -> (u16, String, Vec<u8>) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.label));
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("<missing>").to_owned();
        let bytes = response.bytes().await.unwrap_or_else(|e| panic!("{}: body of {path}: {e}", self.label));
        (status, content_type, bytes.to_vec())
    }

    // ---- sync and waits ---------------------------------------------------------------------

    /// `GET /sync` with the harness filter (timeline limit 100), long-polling `timeout_ms`.
    pub async fn sync(&self, token: &str, since: Option<&str>, timeout_ms: u64) -> Value {
        self.sync_with_filter(token, since, timeout_ms, TIMELINE_FILTER).await
    }

    /// Makes every later sync of the harness on this node send `set_presence=<presence>`. A sync
    /// that repeats a user's presence (other than `online`, which it refreshes now and then)
    /// writes nothing, so the node tells no other server anything: a node that must not speak
    /// first after a restart.
    pub fn set_sync_presence(&self, presence: Option<&str>) {
        *self.sync_presence.lock().expect("sync presence") = presence.map(str::to_owned);
    }

    /// `GET /sync` with an inline JSON filter.
    pub async fn sync_with_filter(&self, token: &str, since: Option<&str>, timeout_ms: u64, filter: &str) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}", enc(filter));
        if let Some(since) = since {
            let _ = write!(path, "&since={}", enc(since));
        }
        if let Some(presence) = self.sync_presence.lock().expect("sync presence").as_deref() {
            let _ = write!(path, "&set_presence={}", enc(presence));
        }
        let response = self
            .http
            .get(self.url(&path))
            .bearer_auth(token)
            .timeout(Duration::from_millis(timeout_ms) + REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: sync: {e}", self.label));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{}: sync answered {status}: {text}", self.label);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: sync answer is not JSON ({e}): {text}", self.label))
    }

    /// The `next_batch` of an immediate sync: a position to wait from.
    pub async fn sync_token(&self, token: &str) -> String {
        next_batch(&self.sync(token, None, 0).await)
    }

    /// Long-polls `/sync` from `since` until `done` holds for one response, which it returns.
    /// Panics after `timeout`, naming `what` and showing the last response.
    pub async fn wait_sync(
        &self,
        token: &str,
        since: Option<&str>,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut since = since.map(str::to_owned);
        loop {
            let poll = deadline.saturating_duration_since(Instant::now()).min(LONG_POLL);
            let response = self.sync(token, since.as_deref(), poll.as_millis() as u64).await;
            if done(&response) {
                return response;
            }
            if Instant::now() >= deadline {
                let mut last = response.to_string();
                last.truncate(4000);
                panic!("{}: {what}: not seen in sync within {timeout:?}; last response: {last}", self.label);
            }
            since = Some(next_batch(&response));
        }
    }

    /// Long-polls `/sync` from `since` (`None`: an initial sync first), gathering the events of
    /// `room`'s timeline (joined or left section) in the order they come, until `done` holds for
    /// everything gathered so far. Panics after `timeout` with what it saw.
    pub async fn wait_timeline_until(
        &self,
        token: &str,
        room: &str,
        since: Option<&str>,
        timeout: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Timeline {
        let deadline = Instant::now() + timeout;
        let mut since = since.map(str::to_owned);
        let mut events = Vec::new();
        let mut gaps = 0;
        loop {
            let poll = deadline.saturating_duration_since(Instant::now()).min(LONG_POLL);
            let incremental = since.is_some();
            let response = self.sync(token, since.as_deref(), poll.as_millis() as u64).await;
            for section in ["join", "leave"] {
                let timeline = &response["rooms"][section][room]["timeline"];
                if incremental && timeline["limited"] == true {
                    gaps += 1;
                }
                if let Some(list) = timeline["events"].as_array() {
                    events.extend(list.iter().cloned());
                }
            }
            let next = next_batch(&response);
            if done(events.as_slice()) {
                return Timeline { events, next_batch: next };
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: the awaited events did not reach {room}'s timeline within {timeout:?} \
                     ({gaps} limited incremental timelines); saw:\n{}",
                    self.label,
                    describe_all(&events)
                );
            }
            since = Some(next);
        }
    }

    /// Waits until an event matching `predicate` shows up in `room`'s timeline (from `since`).
    pub async fn wait_for_timeline(
        &self,
        token: &str,
        room: &str,
        since: Option<&str>,
        predicate: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Timeline {
        self.wait_timeline_until(token, room, since, timeout, |events| events.iter().any(&predicate)).await
    }

    /// Waits until every one of `expected` is the body of an `m.room.message` in `room`'s
    /// timeline (from `since`); returns everything gathered.
    pub async fn wait_for_bodies(&self, token: &str, room: &str, since: &str, expected: &[String]) -> Timeline {
        self.wait_timeline_until(token, room, Some(since), SYNC_WAIT, |events| {
            let seen: BTreeSet<&str> = events.iter().filter_map(body).collect();
            expected.iter().all(|e| seen.contains(e.as_str()))
        })
        .await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `/join/{roomIdOrAlias}` with one `server_name` parameter per server.
pub fn join_path(room_or_alias: &str, via: &[String]) -> String {
    let mut path = format!("/_matrix/client/v3/join/{}", enc(room_or_alias));
    for (i, server) in via.iter().enumerate() {
        let _ = write!(path, "{}server_name={}", if i == 0 { '?' } else { '&' }, enc(server));
    }
    path
}

/// What [`Node::wait_timeline_until`] gathered.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The room's timeline events, in the order the syncs delivered them.
    pub events: Vec<Value>,
    /// The `next_batch` of the last sync: where to wait from next.
    pub next_batch: String,
}

impl Timeline {
    /// The bodies of the `m.room.message` events, in order.
    pub fn bodies(&self) -> Vec<String> {
        bodies(&self.events)
    }

    /// The event ids, in order.
    pub fn event_ids(&self) -> Vec<String> {
        self.events.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect()
    }
}

/// `next_batch` of a sync response.
pub fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap_or_else(|| panic!("no next_batch in {sync}")).to_owned()
}

/// The body of an `m.room.message` event.
pub fn body(event: &Value) -> Option<&str> {
    if event["type"] == "m.room.message" {
        event["content"]["body"].as_str()
    } else {
        None
    }
}

/// The bodies of the `m.room.message` events among `events`, in order.
pub fn bodies(events: &[Value]) -> Vec<String> {
    events.iter().filter_map(body).map(str::to_owned).collect()
}

/// Whether `event` is the `m.room.member` event putting `user` in `membership`.
pub fn is_membership(event: &Value, user: &str, membership: &str) -> bool {
    event["type"] == "m.room.member" && event["state_key"] == user && event["content"]["membership"] == membership
}

/// The ephemeral event of `kind` for `room` in a sync response.
pub fn ephemeral<'a>(sync: &'a Value, room: &str, kind: &str) -> Option<&'a Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"].as_array()?.iter().find(|e| e["type"] == kind)
}

/// The users an `m.typing` event in this sync response lists for `room` (`None`: no such event).
pub fn typing_users(sync: &Value, room: &str) -> Option<Vec<String>> {
    let typing = ephemeral(sync, room, "m.typing")?;
    Some(typing["content"]["user_ids"].as_array()?.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
}

/// A one-line summary of an event for failure messages.
pub fn describe(event: &Value) -> String {
    let mut line = format!(
        "{} {} from {}",
        event["event_id"].as_str().unwrap_or("?"),
        event["type"].as_str().unwrap_or("?"),
        event["sender"].as_str().unwrap_or("?")
    );
    if let Some(key) = event["state_key"].as_str() {
        let _ = write!(line, " [{key}]");
    }
    if let Some(membership) = event["content"]["membership"].as_str() {
        let _ = write!(line, " {membership}");
    }
    if let Some(text) = event["content"]["body"].as_str() {
        let _ = write!(line, " {text:?}");
    }
    if let Some(name) = event["content"]["name"].as_str() {
        let _ = write!(line, " name={name:?}");
    }
    line
}

/// [`describe`] for a list, one line each.
pub fn describe_all(events: &[Value]) -> String {
    events.iter().map(|e| format!("  {}\n", describe(e))).collect()
}

/// A public room created on `a` by the owner of `a_token`, joined (by id, via `a`) by `b_user`
/// from `b`; returns once `a`'s user has seen the join in its sync.
pub async fn shared_room(a: &Node, a_token: &str, b: &Node, b_token: &str, b_user: &str) -> String {
    let room = a.create_room(a_token, json!({ "preset": "public_chat" })).await;
    let since = a.sync_token(a_token).await;
    let joined = b.join(b_token, &room, &[a.server_name()]).await;
    assert_eq!(joined, room, "the join answers the room joined");
    a.wait_for_timeline(a_token, &room, Some(&since), |e| is_membership(e, b_user, "join"), SYNC_WAIT).await;
    room
}

// ---- a tiny PNG encoder, for media tests without an image crate --------------------------------

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in bytes {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// A valid `width`×`height` RGB PNG (a gradient), zlib-stored without compression.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    assert!(width > 0 && height > 0, "a PNG has at least one pixel");
    let mut raw = Vec::with_capacity(((width * 3 + 1) * height) as usize);
    for y in 0..height {
        raw.push(0); // filter type: none
        for x in 0..width {
            raw.extend_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, 0x80]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len())); // BFINAL, BTYPE 00 (stored)
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, no filter, no interlace

    let mut out = PNG_SIGNATURE.to_vec();
    let chunks: [(&[u8; 4], &[u8]); 3] =
        [(b"IHDR", ihdr.as_slice()), (b"IDAT", zlib.as_slice()), (b"IEND", b"".as_slice())];
    for (kind, data) in chunks {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    out
}

/// The (width, height) in a PNG's header; `None` when `bytes` is not a PNG.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if !bytes.starts_with(PNG_SIGNATURE) || bytes.get(12..16) != Some(b"IHDR".as_slice()) {
        return None;
    }
    let width = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
    let height = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
    Some((width, height))
}

/// A small seeded generator (xorshift64*) for randomized tests: a failure prints its seed and
/// the same seed replays the same choices.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reserved_characters() {
        assert_eq!(enc("!room:127.0.0.1:8448"), "%21room%3A127.0.0.1%3A8448");
        assert_eq!(enc("#pub:127.0.0.1:1"), "%23pub%3A127.0.0.1%3A1");
        assert_eq!(enc("$ev/+="), "%24ev%2F%2B%3D");
        assert_eq!(enc("a-b_c.d~e"), "a-b_c.d~e");
    }

    #[test]
    fn join_path_lists_every_server() {
        let via = ["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()];
        assert_eq!(
            join_path("!r:127.0.0.1:1", &via),
            "/_matrix/client/v3/join/%21r%3A127.0.0.1%3A1?server_name=127.0.0.1%3A1&server_name=127.0.0.1%3A2"
        );
        assert_eq!(join_path("#a:b", &[]), "/_matrix/client/v3/join/%23a%3Ab");
    }

    #[test]
    fn checksums_match_known_values() {
        // Reference values: crc32("123456789") and adler32("Wikipedia").
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        // The IEND chunk's CRC every PNG ends with.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn png_header_reads_back() {
        let image = png(64, 32);
        assert_eq!(png_size(&image), Some((64, 32)));
        assert!(image.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]));
        assert_eq!(png_size(b"not a png at all, not at all"), None);
    }
}
