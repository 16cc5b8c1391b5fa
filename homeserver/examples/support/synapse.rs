//! A real Synapse on its own PostgreSQL cluster, for the examples that compare Hemicycle with
//! it (`loadgen --synapse`, `storage_bench --synapse`). Synapse's documentation keeps SQLite for
//! trying it out and runs its deployments on PostgreSQL, so the comparisons do too: a ratio is
//! against what ministries run. (For the send scenario it makes little difference on one
//! machine: 49 – 54 events/s on PostgreSQL, 61 on SQLite; docs/performance.md.)
//!
//! The cluster lives in a temp folder (`initdb`, `pg_ctl` of Debian's PostgreSQL 15, on a free
//! 127.0.0.1 port, as the `postgres` user when run as root); Synapse's venv is `SYNAPSE_VENV` (as
//! in the tests) and psycopg2 comes from `PSYCOPG2_PATH` (a `pip install --target` folder, added
//! to `PYTHONPATH`) when the venv lacks it. Rate limits are lifted as for Hemicycle.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// PostgreSQL and Synapse, each its own process, in one temp folder; both stop on drop.
pub struct Synapse {
    postgres: PathBuf,
    data: PathBuf,
    pg_port: u16,
    child: Child,
    pub base: String,
    dir: tempfile::TempDir,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = as_postgres(&self.postgres.join("pg_ctl"))
            .args(["-D", &self.data.to_string_lossy(), "-m", "fast", "-w", "stop"])
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user.
fn as_postgres(program: &Path) -> Command {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run_ok(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Synapse {
    /// Starts PostgreSQL, then Synapse named `server_name` with `extra` appended to its YAML
    /// configuration (e.g. `app_service_config_files`), and waits for `/health`.
    pub async fn start(server_name: &str, extra: &str) -> Self {
        let venv = std::env::var("SYNAPSE_VENV")
            .unwrap_or_else(|_| panic!("Synapse needs SYNAPSE_VENV (the venv ./scripts/test installs Synapse into)"));
        let python = Path::new(&venv).join("bin/python");
        let postgres = PathBuf::from("/usr/lib/postgresql/15/bin");
        assert!(postgres.join("initdb").exists(), "no PostgreSQL 15 (apt-get install postgresql)");
        let dir = tempfile::Builder::new().prefix("synapse-pg-").tempdir().expect("temp dir");
        let data = dir.path().join("pgdata");
        let socket = dir.path().join("pgsocket");
        std::fs::create_dir_all(&socket).expect("socket dir");
        for path in [dir.path(), socket.as_path()] {
            run_ok(Command::new("chmod").arg("777").arg(path), "chmod");
        }
        run_ok(
            as_postgres(&postgres.join("initdb")).args([
                "-D",
                &data.to_string_lossy(),
                "-U",
                "synapse",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]),
            "initdb",
        );
        let pg_port = free_port();
        run_ok(
            as_postgres(&postgres.join("pg_ctl")).args([
                "-D",
                &data.to_string_lossy(),
                "-l",
                &dir.path().join("postgres.log").to_string_lossy(),
                "-o",
                &format!("-p {pg_port} -k {} -c listen_addresses=127.0.0.1", socket.display()),
                "-w",
                "start",
            ]),
            "pg_ctl start",
        );
        run_ok(
            Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &pg_port.to_string(), "-U", "synapse", "-d", "postgres", "-c"])
                .arg("CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"),
            "CREATE DATABASE",
        );
        let client_port = free_port();
        let d = dir.path().display();
        let limit = "{per_second: 100000, burst_count: 100000}";
        let config = format!(
            r#"server_name: "{server_name}"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {client_port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    resources: [{{names: [client], compress: false}}]
database:
  name: psycopg2
  args: {{user: synapse, database: synapse, host: 127.0.0.1, port: {pg_port}, cp_min: 5, cp_max: 10}}
log_config: "{d}/log.yaml"
media_store_path: "{d}/media"
signing_key_path: "{d}/signing.key"
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: "comparison-only"
macaroon_secret_key: "comparison-only-macaroon"
form_secret: "comparison-only-form"
presence: {{enabled: false}}
rc_message: {limit}
rc_registration: {limit}
rc_login: {{address: {limit}, account: {limit}, failed_attempts: {limit}}}
rc_joins: {{local: {limit}, remote: {limit}}}
rc_invites: {{per_room: {limit}, per_user: {limit}, per_issuer: {limit}}}
rc_joins_per_room: {limit}
rc_room_creation: {limit}
rc_profile: {limit}
{extra}
"#
        );
        std::fs::write(
            dir.path().join("log.yaml"),
            "version: 1\nformatters: {precise: {format: '%(asctime)s %(name)s %(levelname)s %(message)s'}}\n\
             handlers: {console: {class: logging.StreamHandler, formatter: precise}}\n\
             root: {level: WARNING, handlers: [console]}\ndisable_existing_loggers: false\n",
        )
        .expect("log config");
        let config_path = dir.path().join("homeserver.yaml");
        std::fs::write(&config_path, config).expect("synapse config");
        let python_path = std::env::var("PSYCOPG2_PATH").unwrap_or_default();
        run_ok(
            Command::new(&python)
                .env("PYTHONPATH", &python_path)
                .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
                .arg(&config_path),
            "synapse --generate-keys",
        );
        let child = Command::new(&python)
            .env("PYTHONPATH", &python_path)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("synapse.log")).expect("log file"))
            .spawn()
            .expect("start synapse");
        let mut synapse = Self { postgres, data, pg_port, child, base: format!("http://127.0.0.1:{client_port}"), dir };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = http.get(format!("{}/health", synapse.base)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = synapse.child.try_wait() {
                panic!("Synapse exited ({status}); see its log in {}", synapse.dir.path().display());
            }
            assert!(Instant::now() < deadline, "Synapse did not answer /health within 2 minutes");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        synapse
    }

    /// Synapse's process id (PostgreSQL's processes are apart).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs one SQL statement on Synapse's database; its rows, unaligned.
    #[allow(dead_code)]
    pub fn psql(&self, sql: &str) -> String {
        run_ok(
            Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &self.pg_port.to_string(), "-U", "synapse"])
                .args(["-d", "synapse", "-At", "-c", sql]),
            sql,
        )
    }

    /// PostgreSQL's data folder (tables, WAL, catalogs).
    #[allow(dead_code)]
    pub fn data(&self) -> &Path {
        &self.data
    }
}
