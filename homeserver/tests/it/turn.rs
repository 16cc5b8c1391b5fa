//! TURN credentials (`GET /voip/turnServer`) against Debian's coturn: a `turnserver` on loopback,
//! sharing `voip.turn_shared_secret` as its `static-auth-secret` (`use-auth-secret`, the TURN
//! REST API scheme), relays for the credentials the node hands out, and refuses a tampered, an
//! expired or another secret's credential. The TURN client is coturn's own `turnutils_uclient`,
//! which makes a real Allocate with the long-term credential and sends through the relay to a
//! peer this test holds; it exits non-zero when the allocation is refused.

use std::{
    io::{BufRead, BufReader},
    net::{TcpListener, UdpSocket},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use reqwest::Method;

use crate::common::{api, register_raw, TestServer};

const SECRET: &str = "secret-partagé-avec-coturn";

/// A `turnserver` of its own on 127.0.0.1: free ports, its own config and database in a temp
/// directory, in the foreground (no daemon), killed with the test.
struct Coturn {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Coturn {
    fn start(secret: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_and_tcp_port();
        let (min_port, max_port) = free_udp_range(8);
        let config = format!(
            "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\n\
             min-port={min_port}\nmax-port={max_port}\n\
             use-auth-secret\nstatic-auth-secret={secret}\nrealm=hemicycle.test\n\
             userdb={db}\npidfile={pid}\n\
             no-tls\nno-dtls\nno-cli\nno-tcp-relay\n\
             # The peer is this test, on loopback, which coturn refuses to relay to by default.\n\
             allow-loopback-peers\n",
            db = dir.path().join("turndb").display(),
            pid = dir.path().join("turnserver.pid").display(),
        );
        let config_path = dir.path().join("turnserver.conf");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("turnserver")
            .arg("-c")
            .arg(&config_path)
            .args(["-v", "--log-file", "stdout"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver (Debian's coturn, installed by scripts/test)");
        // Ready once its listeners are open: it says so after opening them.
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Total General servers") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let mut coturn = Coturn { child, port, _dir: dir };
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let status = coturn.child.try_wait().unwrap();
            panic!("turnserver did not open its listeners (exit: {status:?})");
        }
        coturn
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on loopback (coturn listens on both).
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `n` consecutive UDP ports free on loopback, for coturn's relay range.
fn free_udp_range(n: u16) -> (u16, u16) {
    loop {
        let first = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = first.local_addr().unwrap().port();
        if start.checked_add(n).is_none() {
            continue;
        }
        let rest: Vec<_> = (1..n).map(|i| UdpSocket::bind(("127.0.0.1", start + i))).collect();
        if rest.iter().all(Result::is_ok) {
            return (start, start + n - 1);
        }
    }
}

/// The far end of a relayed call: echoes every datagram it gets back to its sender (the relay),
/// counting them, until dropped.
struct Peer {
    port: u16,
    received: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Peer {
    fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let port = socket.local_addr().unwrap().port();
        let received = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, done) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            // The read timeout only lets the thread notice the test ended.
            while !done.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buffer) {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.send_to(&buffer[..len], from);
                }
            }
        });
        Peer { port, received, stop }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What coturn's TURN client made of one credential: whether it exited successfully, and its
/// output (which counts the messages that came back through the relay).
struct Attempt {
    success: bool,
    output: String,
}

/// Allocates a relay on `port` with the long-term credential and sends one message through it
/// to the peer, with coturn's `turnutils_uclient`.
async fn allocate(port: u16, username: &str, password: &str, peer: &Peer) -> Attempt {
    let mut command = tokio::process::Command::new("turnutils_uclient");
    command
        .args(["-p", &port.to_string(), "-u", username, "-w", password])
        // One message, no RTCP allocation, to the test's peer.
        .args(["-n", "1", "-c", "-e", "127.0.0.1", "-r", &peer.port.to_string(), "127.0.0.1"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("turnutils_uclient ends within 30 s")
        .expect("turnutils_uclient (Debian's coturn, installed by scripts/test)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Attempt { success: output.status.success(), output: text }
}

/// A credential of coturn's shared-secret scheme, made here: `<expiry>:<user>` and the base64
/// HMAC-SHA1 of it under `secret`.
fn credential(secret: &str, expiry: u64, user: &str) -> (String, String) {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let username = format!("{expiry}:{user}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    (username, base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

fn node(secret: &str, coturn: &Coturn) -> TestServer {
    let uri = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    TestServer::start_with(&[
        ("voip.turn_uris", toml::Value::Array(vec![uri.into()])),
        ("voip.turn_shared_secret", secret.into()),
        ("voip.turn_user_lifetime_s", 3600.into()),
    ])
}

/// The node's credentials, as a client gets them: (username, password, the TURN server's port
/// from the URI).
async fn turn_server(server: &TestServer, token: &str) -> (String, String, u16) {
    let (status, turn) = api(server, Method::GET, Some(token), "/_matrix/client/v3/voip/turnServer", None).await;
    assert_eq!(status, 200, "{turn}");
    let uri = turn["uris"][0].as_str().expect("a TURN URI");
    let port = uri
        .strip_prefix("turn:127.0.0.1:")
        .and_then(|rest| rest.split('?').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("the configured URI: {uri}"));
    let username = turn["username"].as_str().expect("username").to_owned();
    let password = turn["password"].as_str().expect("password").to_owned();
    (username, password, port)
}

#[tokio::test]
async fn coturn_relays_with_our_turn_credentials_and_refuses_others() {
    let coturn = Coturn::start(SECRET);
    let peer = Peer::start();
    let server = node(SECRET, &coturn);
    let (user, token) = register_raw(&server, "alice").await;

    // The node's credential: coturn allocates a relay and the message comes back through it.
    let (username, password, port) = turn_server(&server, &token).await;
    assert_eq!(port, coturn.port);
    let accepted = allocate(port, &username, &password, &peer).await;
    assert!(accepted.success, "coturn refused the node's credential:\n{}", accepted.output);
    assert!(accepted.output.contains("tot_recv_msgs=1"), "nothing came back through the relay:\n{}", accepted.output);
    assert!(peer.received.load(Ordering::SeqCst) >= 1, "the peer got nothing through the relay");

    // A password that is not the secret's for this user name: refused.
    let mut tampered = password.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let refused = allocate(port, &username, &tampered, &peer).await;
    assert!(!refused.success, "coturn accepted a tampered password:\n{}", refused.output);
    // The node's password under another user name (a client claiming a later expiry): refused.
    let (expiry, _) = username.split_once(':').unwrap();
    let later = format!("{}:{user}", expiry.parse::<u64>().unwrap() + 86_400);
    let refused = allocate(port, &later, &password, &peer).await;
    assert!(!refused.success, "coturn accepted a user name the password is not for:\n{}", refused.output);

    // Expired: the scheme's credential, correctly signed, for a time already past.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (expired_user, expired_password) = credential(SECRET, now - 60, &user);
    let refused = allocate(port, &expired_user, &expired_password, &peer).await;
    assert!(!refused.success, "coturn accepted an expired credential:\n{}", refused.output);
    // The same, unexpired, goes through: the refusal above was the expiry's.
    let (fresh_user, fresh_password) = credential(SECRET, now + 600, &user);
    let fresh = allocate(port, &fresh_user, &fresh_password, &peer).await;
    assert!(fresh.success, "coturn refused a fresh credential:\n{}", fresh.output);

    // A node configured with another secret hands out credentials coturn refuses.
    let other = node("un-autre-secret", &coturn);
    let (_, other_token) = register_raw(&other, "bob").await;
    let (username, password, port) = turn_server(&other, &other_token).await;
    let refused = allocate(port, &username, &password, &peer).await;
    assert!(!refused.success, "coturn accepted another secret's credential:\n{}", refused.output);
}
