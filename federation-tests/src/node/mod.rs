//! A node of a test network: a real `hemicycle serve` (or Synapse) process, its folder and
//! its lifecycle (start, kill, stop, restart). Its client-API helpers are in [`client_api`].

mod client_api;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::AtomicUsize,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::{config::*, *};

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
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
