//! The binary's command line: configuration errors and the operator's `user` commands, with the
//! server stopped (the CLI opens the database) and running (the CLI talks to it).

use std::{process::Command, time::Duration};

use crate::common::{forbidden, matrix_error, register_raw, sdk_error, unknown_token, write_config, TestServer, BIN};

fn run(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(BIN).arg("--config").arg(config).args(args).output().unwrap()
}

fn bad_config(toml_text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml_text).unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&path).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let (code, err) = bad_config("[registration]\nopne = true\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("registration") && err.contains("opne"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");

    let (code, err) = bad_config("[listen]\nclient = \"nonsense\"\n");
    assert_eq!(code, 2);
    assert!(err.contains("listen.client"), "{err}");

    let (code, err) = bad_config("[rate_limits]\nenabled = \"maybe\"\n");
    assert_eq!(code, 2);
    assert!(err.contains("rate_limits.enabled"), "{err}");

    let (code, err) = bad_config("[listen]\nfederation = \"127.0.0.1:0\"\n[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n");
    assert_eq!(code, 2);
    assert!(err.contains("tls.cert"), "{err}");

    let (code, err) = bad_config("server_name = \"not a name!\"\n");
    assert_eq!(code, 2);
    assert!(err.contains("server_name"), "{err}");

    // Environment variables are checked the same way.
    let out = Command::new(BIN).args(["serve"]).env("HEMICYCLE_DATABASE__PATHH", "/tmp/x").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pathh"));
}

#[tokio::test]
async fn user_commands_with_server_stopped_then_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[("registration.open", false.into())]);
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "agent-pass\n").unwrap();

    // Stopped: the CLI opens the database itself.
    let out =
        run(&["user", "create", "agent.dupont", "--admin", "--password-file", pw_file.to_str().unwrap()], &config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["user", "create", "agent.martin"], &config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let generated =
        printed.lines().find_map(|l| l.strip_prefix("password: ")).expect("generated password printed").to_owned();
    let out = run(&["user", "create", "agent.dupont"], &config);
    assert!(!out.status.success(), "duplicate refused");
    let out = run(&["user", "list"], &config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(list.contains("@agent.dupont:localhost\tadmin"), "{list}");
    assert!(list.contains("@agent.martin:localhost"), "{list}");

    // Running: the CLI goes through the admin socket (the database is locked by the server).
    let mut server = TestServer::start_on_config(&config);
    let client = server.client().await;
    client.matrix_auth().login_username("agent.dupont", "agent-pass").await.unwrap();
    let martin = server.client().await;
    martin.matrix_auth().login_username("agent.martin", &generated).await.unwrap();

    let out = run(&["user", "create", "agent.leroy", "--password-file", pw_file.to_str().unwrap()], &config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server.client().await.matrix_auth().login_username("agent.leroy", "agent-pass").await.unwrap();

    std::fs::write(&pw_file, "new-pass").unwrap();
    let out = run(
        &["user", "reset-password", "@agent.martin:localhost", "--password-file", pw_file.to_str().unwrap()],
        &config,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(matrix_error(&martin.whoami().await.unwrap_err()), unknown_token(), "reset logs every session out");
    server.client().await.matrix_auth().login_username("agent.martin", "new-pass").await.unwrap();

    let out = run(&["user", "deactivate", "agent.dupont"], &config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(matrix_error(&client.whoami().await.unwrap_err()), unknown_token());
    let refused = server.client().await.matrix_auth().login_username("agent.dupont", "agent-pass").await.unwrap_err();
    assert_eq!(sdk_error(&refused), forbidden());
    let list = String::from_utf8(run(&["user", "list"], &config).stdout).unwrap();
    assert!(list.contains("@agent.dupont:localhost\tadmin,deactivated"), "{list}");

    // Stopped again: the database opens cleanly and still holds everything.
    assert!(server.stop().success(), "graceful shutdown exits 0");
    let list = String::from_utf8(run(&["user", "list"], &config).stdout).unwrap();
    assert_eq!(list.lines().count(), 3, "{list}");
}

/// `hemicycle server backup` while the server runs; a new server started on the copy has the
/// accounts, the messages and the media of the moment of the backup.
#[tokio::test]
async fn a_backup_taken_while_running_restores_into_a_working_server() {
    use reqwest::Method;
    use serde_json::json;

    use crate::common::{api, register_raw};

    let mut server = TestServer::start();
    let (_, token) = register_raw(&server, "archiviste").await;
    let (_, room) = api(&server, Method::POST, Some(&token), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/before");
    api(&server, Method::PUT, Some(&token), &path, Some(json!({ "msgtype": "m.text", "body": "avant" }))).await;
    let media = crate::common::upload(&server, &token, "pièce jointe", "note.txt").await;

    let target = tempfile::tempdir().unwrap();
    let folder = target.path().join("sauvegarde");
    let out = server.cli(&["server", "backup", folder.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 media files"), "{}", String::from_utf8_lossy(&out.stdout));
    // Into an existing folder: refused, nothing overwritten.
    let again = server.cli(&["server", "backup", folder.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    // Written after the backup: not in it.
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/after");
    api(&server, Method::PUT, Some(&token), &path, Some(json!({ "msgtype": "m.text", "body": "après" }))).await;
    server.kill();

    let restored = TestServer::start_with(&[
        ("database.path", folder.join("db").to_string_lossy().into_owned().into()),
        ("media.path", folder.join("media").to_string_lossy().into_owned().into()),
    ]);
    let (status, page) = api(
        &restored,
        Method::GET,
        Some(&token),
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10"),
        None,
    )
    .await;
    assert_eq!(status, 200, "the session token is in the backup: {page}");
    let bodies: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["avant"]);
    let file = restored
        .http()
        .get(format!("{}/_matrix/client/v1/media/download/localhost/{media}", restored.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.text().await.unwrap(), "pièce jointe");
}

/// `hemicycle server compact` while the server runs: every memtable goes to table files (the
/// events written a moment ago are in `eventid_pdu`'s files afterwards, not before), each column
/// family is listed with its bytes before and after, and the server goes on serving them.
#[tokio::test]
async fn compaction_reports_every_table_and_keeps_the_records() {
    use reqwest::Method;
    use serde_json::json;

    use crate::common::{api, register_raw};

    let server = TestServer::start();
    let (_, token) = register_raw(&server, "archiviste").await;
    let (_, room) = api(&server, Method::POST, Some(&token), "/_matrix/client/v3/createRoom", Some(json!({}))).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    for n in 0..20 {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{n}");
        api(
            &server,
            Method::PUT,
            Some(&token),
            &path,
            Some(json!({ "msgtype": "m.text", "body": format!("note {n}") })),
        )
        .await;
    }
    let out = server.cli(&["server", "compact"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = |name: &str| -> (u64, u64) {
        let line =
            table.lines().find(|l| l.split('\t').next() == Some(name)).unwrap_or_else(|| panic!("{name}: {table}"));
        let numbers: Vec<u64> = line.split('\t').skip(1).map(|n| n.parse().expect("bytes")).collect();
        (numbers[0], numbers[1])
    };
    let (before, after) = row("eventid_pdu");
    assert!(before == 0 && after > 0, "the events went from memory to table files: {table}");
    assert!(row("table files").1 >= after, "{table}");
    assert!(row("database folder").1 > 0, "{table}");
    let (status, page) = api(
        &server,
        Method::GET,
        Some(&token),
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["chunk"][0]["content"]["body"], "note 19", "{page}");
}

/// The server runs with its allocators' options (docs/performance.md: mimalloc's arena
/// committed lazily and freed pages returned at once, glibc's `mmap` threshold fixed): the
/// binary runs itself again with them set, keeping its process id, so what the server's
/// environment holds is the options, and the pid the caller knows is the server's. An option
/// the operator set is kept as set.
#[tokio::test]
async fn the_server_runs_with_its_allocators_options_and_keeps_the_operators() {
    let server = TestServer::start_with_env(&[], &[("MIMALLOC_PURGE_DELAY", "5")]);
    server.register("alice", "pw").await;
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid())).expect("the server's environment");
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    for option in ["MIMALLOC_ARENA_EAGER_COMMIT=0", "MALLOC_MMAP_THRESHOLD_=131072", "MIMALLOC_PURGE_DELAY=5"] {
        assert!(vars.contains(&option.as_bytes()), "{option} in {:?}", String::from_utf8_lossy(&environ));
    }
    assert!(!vars.contains(&b"MIMALLOC_PURGE_DELAY=1".as_slice()), "the operator's setting is kept");

    let plain = TestServer::start();
    plain.register("bob", "pw").await;
    let environ = std::fs::read(format!("/proc/{}/environ", plain.pid())).expect("the server's environment");
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(vars.contains(&b"MIMALLOC_PURGE_DELAY=1".as_slice()), "{:?}", String::from_utf8_lossy(&environ));
}

/// A stop is bounded: a long-polling sync does not hold it for as long as its client asked to wait,
/// and a second SIGTERM (an operator's second Ctrl-C) ends the drain at once — the process exits
/// cleanly, the database flushed, and the sync's connection is closed instead of answered later.
#[tokio::test]
async fn a_second_stop_signal_ends_a_drain_held_by_a_long_poll() {
    let mut server = TestServer::start();
    let (_, token) = register_raw(&server, "veilleur").await;
    let http = server.http();
    let url = format!("{}/_matrix/client/v3/sync", server.url);
    let first: serde_json::Value = http.get(&url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let long_poll = tokio::spawn({
        let http = http.clone();
        let url = format!("{url}?since={since}&timeout=120000");
        let token = token.clone();
        async move { http.get(url).bearer_auth(token).send().await.map(|r| r.status().as_u16()) }
    });
    server.wait_for_waiting("syncs", 1).await;

    server.signal_term();
    // The first signal is taken once the listener is gone: new connections are refused.
    let address = server.url.trim_start_matches("http://").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&address).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the listener never closed after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal_term();
    let status = server.wait_exit_within(Duration::from_secs(30)).expect("a second SIGTERM ends the drain");
    assert!(status.success(), "exits cleanly after a cut drain: {status:?}");
    let answered = long_poll.await.unwrap();
    assert!(answered.is_err(), "the held sync was cut, not answered: {answered:?}");
}
