//! The config files of the nodes the harness starts: Hemicycle's TOML and Synapse's YAML.

use std::path::{Path, PathBuf};

/// Sets a dotted key (`a.b.c`) in a TOML table, creating the intermediate tables.
pub(crate) fn set_key(root: &mut toml::Table, key: &str, value: toml::Value) {
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
pub(crate) fn write_node_config(
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
pub(crate) fn write_synapse_config(
    dir: &Path,
    server_name: &str,
    fed_port: u16,
    client_port: u16,
    extra: &str,
) -> PathBuf {
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
