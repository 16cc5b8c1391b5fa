//! Starting and stopping real server processes for tests.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc},
    time::Duration,
};

use matrix_sdk::{
    ruma::api::client::{
        account::register,
        uiaa::{AuthData, Dummy},
    },
    Client,
};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_hemicycle");

/// A `hemicycle serve` process with its own data directory.
pub struct TestServer {
    /// Keeps the data directory alive as long as the server.
    _dir: Arc<TempDir>,
    pub config_path: PathBuf,
    child: Option<Child>,
    pub url: String,
    /// The Prometheus endpoint, when the config sets `listen.metrics`.
    pub metrics_url: Option<String>,
    /// Extra environment variables for the server process (e.g. a fault-injection hook).
    env: Vec<(String, String)>,
}

/// Writes a config: random port on 127.0.0.1, temp database, open registration, no rate limits,
/// then the given `key = value` overrides (dotted keys).
pub fn write_config(dir: &Path, overrides: &[(&str, toml::Value)]) -> PathBuf {
    let mut root = toml::Table::new();
    let mut set = |key: &str, value: toml::Value| {
        let parts: Vec<&str> = key.split('.').collect();
        let mut table = &mut root;
        for part in &parts[..parts.len() - 1] {
            table = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        table.insert(parts[parts.len() - 1].to_string(), value);
    };
    set("server_name", "localhost".into());
    set("database.path", dir.join("db").to_string_lossy().into_owned().into());
    set("listen.client", "127.0.0.1:0".into());
    set("registration.open", true.into());
    set("rate_limits.enabled", false.into());
    // Peers of these tests (dead or alive) are on loopback, which federation refuses by default.
    set("federation.allow_ranges", toml::Value::Array(vec!["127.0.0.1/32".into()]));
    set("log.level", "warn".into());
    for (key, value) in overrides {
        set(key, value.clone());
    }
    let path = dir.join("homeserver.toml");
    std::fs::write(&path, toml::to_string(&root).unwrap()).unwrap();
    path
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(overrides: &[(&str, toml::Value)]) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config_path = write_config(dir.path(), overrides);
        let mut server =
            Self { _dir: dir, config_path, child: None, url: String::new(), metrics_url: None, env: Vec::new() };
        server.spawn();
        server
    }

    /// Starts with extra environment variables for the server process.
    pub fn start_with_env(overrides: &[(&str, toml::Value)], env: &[(&str, &str)]) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config_path = write_config(dir.path(), overrides);
        let mut server =
            Self { _dir: dir, config_path, child: None, url: String::new(), metrics_url: None, env: Vec::new() };
        server.set_env(env);
        server.spawn();
        server
    }

    /// The environment variables the next start (or restart) uses.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// Waits for the server process to end by itself and returns how it ended.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.take().expect("server running").wait().unwrap()
    }

    /// Starts on an existing config file, e.g. one the test also hands to CLI commands.
    pub fn start_on_config(config: &Path) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut server = Self {
            _dir: dir,
            config_path: config.to_owned(),
            child: None,
            url: String::new(),
            metrics_url: None,
            env: Vec::new(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hemicycle");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("hemicycle listening on ") {
                    let _ = tx.send((false, url.to_owned()));
                } else if let Some(url) = line.strip_prefix("hemicycle metrics on ") {
                    let _ = tx.send((true, url.to_owned()));
                }
            }
        });
        // The metrics listener, when configured, is announced before the client API.
        loop {
            let (metrics, url) = rx.recv_timeout(Duration::from_secs(60)).expect("server printed its address");
            if !metrics {
                self.url = url;
                break;
            }
            self.metrics_url = Some(url);
        }
        self.child = Some(child);
    }

    /// The server process's id, e.g. to read its memory use from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        child.wait().unwrap()
    }

    /// Sends SIGTERM without waiting (a stop the test watches unfold).
    pub fn signal_term(&self) {
        let pid = self.pid().to_string();
        assert!(Command::new("kill").arg("-TERM").arg(&pid).status().unwrap().success());
    }

    /// Waits for the process to end, at most `limit`; `None` if it is still running then (it is
    /// killed, so a failing test leaves nothing behind).
    pub fn wait_exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = Arc::new(std::sync::Mutex::new(self.child.take().expect("server running")));
        let pid = child.lock().unwrap().id();
        let (tx, rx) = mpsc::channel();
        let waiting = child.clone();
        std::thread::spawn(move || {
            let status = waiting.lock().unwrap().wait();
            let _ = tx.send(status);
        });
        match rx.recv_timeout(limit) {
            Ok(status) => Some(status.unwrap()),
            Err(_) => {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
                None
            }
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("server running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn restart(&mut self) {
        if self.child.is_some() {
            assert!(self.stop().success(), "graceful shutdown exits 0");
        }
        self.spawn();
    }

    /// Runs `hemicycle --config <this server's config> ARGS…`.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN).arg("--config").arg(&self.config_path).args(args).output().unwrap()
    }

    /// Waits until the server reports at least `count` requests of `kind` (`syncs`, `media
    /// downloads`) waiting, as `hemicycle server waiting` prints them: an observable condition
    /// instead of a sleep that hopes the request got there.
    pub async fn wait_for_waiting(&self, kind: &str, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.cli(&["server", "waiting"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let now: usize = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{kind}: ")))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {kind} count in {text:?}"));
            if now >= count {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{count} {kind} never waited (now {now})");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn client(&self) -> Client {
        Client::builder().homeserver_url(&self.url).build().await.unwrap()
    }

    /// Registers through the UIA dummy flow and returns a logged-in client.
    pub async fn register(&self, name: &str, password: &str) -> Client {
        let client = self.client().await;
        let mut request = register::v3::Request::new();
        request.username = Some(name.to_owned());
        request.password = Some(password.to_owned());
        let err = client.matrix_auth().register(request.clone()).await.expect_err("first round asks for auth");
        let info = err.as_uiaa_response().expect("UIA challenge");
        let mut dummy = Dummy::new();
        dummy.session = info.session.clone();
        request.auth = Some(AuthData::Dummy(dummy));
        client.matrix_auth().register(request).await.expect("registration completes");
        client
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The clock a server measures access-token lifetimes on, moved by the test (the server's
/// `FAULT_HEMICYCLE_TOKEN_CLOCK_OFFSET_FILE` hook): a token expires when the test says so, not
/// after a wait that a loaded machine may stretch past a lifetime.
pub struct TokenClock {
    dir: TempDir,
}

impl TokenClock {
    /// A clock reading the system time, until [`TokenClock::advance`].
    pub fn system() -> Self {
        let clock = TokenClock { dir: tempfile::tempdir().unwrap() };
        std::fs::write(clock.path(), "0").unwrap();
        clock
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("token-clock-offset-ms")
    }

    /// The environment variable handing the clock to a server (see [`TestServer::start_with_env`]).
    pub fn env(&self) -> (&'static str, String) {
        ("FAULT_HEMICYCLE_TOKEN_CLOCK_OFFSET_FILE", self.path().to_string_lossy().into_owned())
    }

    /// Moves the server's token clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let now: u64 = std::fs::read_to_string(self.path()).unwrap().trim().parse().unwrap();
        std::fs::write(self.path(), (now + by.as_millis() as u64).to_string()).unwrap();
    }
}

/// Percent-encodes a query parameter value (e.g. an inline JSON filter).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The status and errcode of a matrix-sdk request that failed with a Matrix error body. Panics
/// when it failed otherwise (a transport error, a dead server): such a failure must not pass for
/// the refusal a test expects.
pub fn matrix_error(err: &matrix_sdk::HttpError) -> (u16, String) {
    let api = err.as_client_api_error().unwrap_or_else(|| panic!("not a Matrix error answer: {err}"));
    let code = api.error_kind().map(|k| k.errcode().to_string()).unwrap_or_default();
    (api.status_code.as_u16(), code)
}

/// [`matrix_error`] for the client-level errors of matrix-sdk (login, account calls).
pub fn sdk_error(err: &matrix_sdk::Error) -> (u16, String) {
    let api = err.as_client_api_error().unwrap_or_else(|| panic!("not a Matrix error answer: {err}"));
    let code = api.error_kind().map(|k| k.errcode().to_string()).unwrap_or_default();
    (api.status_code.as_u16(), code)
}

/// What a dead access token gets.
pub fn unknown_token() -> (u16, String) {
    (401, "M_UNKNOWN_TOKEN".to_owned())
}

/// What a wrong password gets.
pub fn forbidden() -> (u16, String) {
    (403, "M_FORBIDDEN".to_owned())
}

/// Registers `name` (password "pw") through the UIA dummy flow over raw HTTP and returns
/// (user id, access token).
pub async fn register_raw(server: &TestServer, name: &str) -> (String, String) {
    let http = server.http();
    let url = format!("{}/_matrix/client/v3/register", server.url);
    let first: serde_json::Value = http
        .post(&url)
        .json(&serde_json::json!({ "username": name, "password": "pw" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = first["session"].as_str().expect("UIA session").to_owned();
    let body = serde_json::json!({ "username": name, "password": "pw",
                                   "auth": { "type": "m.login.dummy", "session": session } });
    let response = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200, "registration of {name}");
    let done: serde_json::Value = response.json().await.unwrap();
    (done["user_id"].as_str().unwrap().to_owned(), done["access_token"].as_str().unwrap().to_owned())
}

/// One client-API call over raw HTTP: (status, body as JSON, `null` when it is not JSON).
pub async fn api(
    server: &TestServer,
    method: reqwest::Method,
    token: Option<&str>,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = server.http().request(method, format!("{}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// Uploads a text file named `name`; answers its media id (on server `localhost`).
pub async fn upload(server: &TestServer, token: &str, bytes: &'static str, name: &str) -> String {
    let response = server
        .http()
        .post(format!("{}/_matrix/media/v3/upload?filename={name}", server.url))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    body["content_uri"].as_str().unwrap().trim_start_matches("mxc://localhost/").to_owned()
}
