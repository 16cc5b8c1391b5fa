//! Email validation through a real SMTP conversation: a sink this test runs on loopback receives
//! what the server sends; the token it carries adds the address to the account and resets the
//! password, each exactly once.

use reqwest::Method;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::mpsc,
};

use crate::common::{api, TestServer};

/// An SMTP server that accepts every message and hands (recipients, data) to the test.
pub(crate) async fn smtp_sink() -> (u16, mpsc::UnboundedReceiver<(Vec<String>, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut recipients = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "RCPT" => {
                            recipients.push(line.trim_start_matches("RCPT TO:").trim_matches(['<', '>']).to_owned());
                            b"250 OK\r\n"
                        }
                        "DATA" => {
                            write.write_all(b"354 go on\r\n").await.unwrap();
                            let mut data = String::new();
                            while let Ok(Some(line)) = lines.next_line().await {
                                if line == "." {
                                    break;
                                }
                                data.push_str(&line);
                                data.push('\n');
                            }
                            tx.send((std::mem::take(&mut recipients), data)).unwrap();
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await.unwrap();
                            return;
                        }
                        _ => b"250 OK\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, rx)
}

/// The message text with quoted-printable soft breaks and escapes undone.
pub(crate) fn decode(data: &str) -> String {
    let joined = data.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The code and the link's query string in a validation email.
fn token_and_query(data: &str) -> (String, String) {
    let text = decode(data);
    let code = text.split("enter this code: ").nth(1).expect("a code").split_whitespace().next().unwrap().to_owned();
    let query = text.split("submit_token?").nth(1).expect("a link").split_whitespace().next().unwrap().to_owned();
    (code, query)
}

fn password_auth(user: &str, password: &str) -> Value {
    json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password })
}

#[tokio::test]
async fn email_validation_adds_addresses_and_resets_passwords() {
    let (port, mut inbox) = smtp_sink().await;
    let server = TestServer::start_with(&[
        ("email.smtp_host", "127.0.0.1".into()),
        ("email.smtp_port", i64::from(port).into()),
        ("email.smtp_tls", "none".into()),
        ("email.notif_from", "Hemicycle <noreply@localhost>".into()),
    ]);
    let (_, alice) = crate::common::register_raw(&server, "alice").await;
    let (_, bob) = crate::common::register_raw(&server, "bob").await;
    let post = |token: Option<&str>, path: &str, body: Value| {
        let token = token.map(str::to_owned);
        let path = path.to_owned();
        let server = &server;
        async move { api(server, Method::POST, token.as_deref(), &path, Some(body)).await }
    };

    // A token is mailed to the address; the same attempt again mails nothing and keeps the session.
    let request = json!({ "client_secret": "s3cret", "email": "Agent.Public@Example.gouv.fr", "send_attempt": 1 });
    let (status, first) = post(None, "/_matrix/client/v3/account/3pid/email/requestToken", request.clone()).await;
    assert_eq!(status, 200, "{first}");
    let sid = first["sid"].as_str().unwrap().to_owned();
    assert!(first["submit_url"].as_str().unwrap().ends_with("/_hemicycle/client/email/submit_token"), "{first}");
    let (to, data) = inbox.try_recv().expect("an email was sent before the answer");
    assert_eq!(to, vec!["agent.public@example.gouv.fr"]);
    assert!(data.contains("From: Hemicycle <noreply@localhost>"), "{data}");
    let (code, _) = token_and_query(&data);
    let (_, again) = post(None, "/_matrix/client/v3/account/3pid/email/requestToken", request).await;
    assert_eq!(again["sid"], sid.as_str());
    assert!(inbox.try_recv().is_err(), "a repeated send_attempt sends nothing");

    // Not validated yet: adding fails; a wrong token changes nothing; the right one validates.
    let add = |auth: Value| json!({ "client_secret": "s3cret", "sid": sid, "auth": auth });
    let (status, body) =
        post(Some(&alice), "/_matrix/client/v3/account/3pid/add", add(password_auth("alice", "pw"))).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_THREEPID_AUTH_FAILED")), "{body}");
    let submit = |token: &str| json!({ "sid": sid, "client_secret": "s3cret", "token": token });
    let (status, body) = post(None, "/_hemicycle/client/email/submit_token", submit("wrong")).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_THREEPID_AUTH_FAILED")), "{body}");
    let (status, body) = post(None, "/_hemicycle/client/email/submit_token", submit(&code)).await;
    assert_eq!((status, &body["success"]), (200, &json!(true)), "{body}");

    // Adding asks for the password first (UIA), then takes the validated address once.
    let (status, challenge) =
        post(Some(&alice), "/_matrix/client/v3/account/3pid/add", json!({ "client_secret": "s3cret", "sid": sid }))
            .await;
    assert_eq!(status, 401, "{challenge}");
    let (status, body) =
        post(Some(&alice), "/_matrix/client/v3/account/3pid/add", add(password_auth("alice", "pw"))).await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = api(&server, Method::GET, Some(&alice), "/_matrix/client/v3/account/3pid", None).await;
    assert_eq!(list["threepids"][0]["address"], "agent.public@example.gouv.fr", "{list}");
    assert_eq!(list["threepids"][0]["medium"], "email");
    let (status, _) = post(
        Some(&bob),
        "/_matrix/client/v3/account/3pid/add",
        json!({ "client_secret": "s3cret", "sid": sid, "auth": password_auth("bob", "pw") }),
    )
    .await;
    assert_eq!(status, 400, "the session is used up");
    let taken = json!({ "client_secret": "other", "email": "agent.public@example.gouv.fr", "send_attempt": 1 });
    let (status, body) = post(None, "/_matrix/client/v3/account/3pid/email/requestToken", taken).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_THREEPID_IN_USE")), "{body}");

    // Password reset: unknown addresses are refused; the emailed link validates; the reset
    // works once, and the old password stops working.
    let unknown = json!({ "client_secret": "r", "email": "nobody@example.gouv.fr", "send_attempt": 1 });
    let (status, body) = post(None, "/_matrix/client/v3/account/password/email/requestToken", unknown).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_THREEPID_NOT_FOUND")), "{body}");
    let reset = json!({ "client_secret": "r3set", "email": "agent.public@example.gouv.fr", "send_attempt": 1 });
    let (status, body) = post(None, "/_matrix/client/v3/account/password/email/requestToken", reset).await;
    assert_eq!(status, 200, "{body}");
    let reset_sid = body["sid"].as_str().unwrap().to_owned();
    let (_, data) = inbox.try_recv().expect("a reset email");
    let (_, query) = token_and_query(&data);
    let clicked =
        server.http().get(format!("{}/_hemicycle/client/email/submit_token?{query}", server.url)).send().await.unwrap();
    assert_eq!(clicked.status(), 200);
    assert!(clicked.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let new_password = |sid: &str| {
        json!({
            "new_password": "nouveau-mot-de-passe",
            "auth": { "type": "m.login.email.identity", "threepid_creds": { "sid": sid, "client_secret": "r3set" } },
        })
    };
    let (status, body) = post(None, "/_matrix/client/v3/account/password", json!({ "new_password": "x" })).await;
    assert_eq!(status, 401, "a challenge offering email: {body}");
    assert!(body["flows"].to_string().contains("m.login.email.identity"), "{body}");
    let (status, body) = post(None, "/_matrix/client/v3/account/password", new_password(&reset_sid)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(None, "/_matrix/client/v3/account/password", new_password(&reset_sid)).await;
    assert_eq!(status, 400, "a reset session works once");
    let login = |password: &str| json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": password });
    assert_eq!(post(None, "/_matrix/client/v3/login", login("pw")).await.0, 403);
    let (status, session) = post(None, "/_matrix/client/v3/login", login("nouveau-mot-de-passe")).await;
    assert_eq!(status, 200);
    let (status, _) = api(&server, Method::GET, Some(&alice), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(status, 401, "the reset signed the old sessions out");
    let alice = session["access_token"].as_str().unwrap().to_owned();

    // Deactivating an account frees its addresses.
    let (_, carol) = crate::common::register_raw(&server, "carol").await;
    let (_, carol_sid) = post(
        None,
        "/_matrix/client/v3/account/3pid/email/requestToken",
        json!({ "client_secret": "c", "email": "carol@example.gouv.fr", "send_attempt": 1 }),
    )
    .await;
    let carol_sid = carol_sid["sid"].as_str().unwrap().to_owned();
    let (code, _) = token_and_query(&inbox.try_recv().unwrap().1);
    let (status, body) = post(
        None,
        "/_hemicycle/client/email/submit_token",
        json!({ "sid": carol_sid, "client_secret": "c", "token": code }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(None, "/_hemicycle/client/email/submit_token", json!({ "sid": 5 })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
    let (status, _) = post(
        Some(&carol),
        "/_matrix/client/v3/account/3pid/add",
        json!({ "client_secret": "c", "sid": carol_sid, "auth": password_auth("carol", "pw") }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) =
        post(Some(&carol), "/_matrix/client/v3/account/deactivate", json!({ "auth": password_auth("carol", "pw") }))
            .await;
    assert_eq!(status, 200);
    let (status, body) = post(
        None,
        "/_matrix/client/v3/account/3pid/email/requestToken",
        json!({ "client_secret": "d", "email": "carol@example.gouv.fr", "send_attempt": 1 }),
    )
    .await;
    assert_eq!(status, 200, "the address is free again: {body}");

    // Removing the address frees it; registration by email and phones stay refused.
    let gone = json!({ "medium": "email", "address": "agent.public@example.gouv.fr" });
    let (status, _) = post(Some(&alice), "/_matrix/client/v3/account/3pid/delete", gone).await;
    assert_eq!(status, 200);
    let (_, list) = api(&server, Method::GET, Some(&alice), "/_matrix/client/v3/account/3pid", None).await;
    assert!(list.get("threepids").is_none_or(|t| t == &json!([])), "{list}");
    let email = json!({ "client_secret": "s", "email": "x@example.gouv.fr", "send_attempt": 1 });
    let (status, body) = post(None, "/_matrix/client/v3/register/email/requestToken", email).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_THREEPID_DENIED")), "{body}");
}

#[tokio::test]
async fn an_unreachable_mail_relay_is_a_clear_error_and_opens_no_session() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let server = TestServer::start_with(&[
        ("email.smtp_host", "127.0.0.1".into()),
        ("email.smtp_port", i64::from(port).into()),
        ("email.smtp_tls", "none".into()),
    ]);
    let request = json!({ "client_secret": "s", "email": "a@example.gouv.fr", "send_attempt": 1 });
    let (status, body) =
        api(&server, Method::POST, None, "/_matrix/client/v3/account/3pid/email/requestToken", Some(request)).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("could not be sent"), "{body}");
    let bad = json!({ "client_secret": "s", "email": "not an address", "send_attempt": 1 });
    let (status, body) =
        api(&server, Method::POST, None, "/_matrix/client/v3/account/3pid/email/requestToken", Some(bad)).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
}
