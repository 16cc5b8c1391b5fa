//! The workspace appservice (`hemicycle-workspace`) as a real process registered with a real
//! Hemicycle node, a second node sharing the room: tasks and calendar entries written as room
//! state by the bot reach the other node; members below the bot cannot forge them; commands in
//! French and English; the REST API and its errors, with access tokens and with OpenID tokens
//! of either node; the ICS feed parsed back by an iCalendar parser; reminders on a clock the
//! test sets through config; the appservice and the homeserver each stopped while commands
//! arrive, every command answered exactly once.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use hemicycle_federation_tests::{bodies, enc, free_port, hemicycle_bin, Node};
use reqwest::Method;
use serde_json::{json, Value};

const AS_TOKEN: &str = "workspace-as-token";
const HS_TOKEN: &str = "workspace-hs-token";
const WAIT: Duration = Duration::from_secs(30);

/// The appservice process, with what it needs to be restarted on another clock.
struct Bot {
    child: Option<Child>,
    config: PathBuf,
    port: u16,
}

impl Bot {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn write_config(dir: &Path, port: u16, homeserver: &Node, registration: &Path, clock: &str) -> PathBuf {
        let config = dir.join("workspace.toml");
        let text = format!(
            "homeserver_url = {:?}\nserver_name = {:?}\nregistration = {:?}\nlisten = \"127.0.0.1:{port}\"\n\
             public_url = \"http://127.0.0.1:{port}\"\ndata_dir = {:?}\ntime_zone = \"Europe/Paris\"\n\
             language = \"fr\"\nclock = {clock:?}\nfederation_verify_tls = false\n",
            homeserver.client_url(),
            homeserver.server_name(),
            registration,
            dir.join("data"),
        );
        std::fs::write(&config, text).unwrap();
        config
    }

    fn start(config: PathBuf, port: u16) -> Bot {
        let bin = hemicycle_bin().with_file_name("hemicycle-workspace");
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hemicycle-workspace");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a line from the appservice").unwrap();
        assert!(first.starts_with("hemicycle-workspace listening on"), "{first}");
        std::thread::spawn(move || for _ in lines {});
        Bot { child: Some(child), config, port }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Restarts with the clock reading `clock` (it runs at real speed from there).
    fn restart(&mut self, clock: &str) {
        self.kill();
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text: String = text
            .lines()
            .map(|l| if l.starts_with("clock") { format!("clock = {clock:?}") } else { l.to_owned() })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&self.config, text).unwrap();
        *self = Bot::start(self.config.clone(), self.port);
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A transaction the [`Proxy`] holds: the homeserver sent it, nobody has answered it.
struct Held {
    body: String,
    /// Forwards it to the bot; `true`: hands the bot's answer back to the homeserver, `false`:
    /// never answers the homeserver. The bot's status comes back on the receiver.
    forward: tokio::sync::oneshot::Sender<(bool, tokio::sync::oneshot::Sender<u16>)>,
}

impl Held {
    /// Forwards the transaction to the bot and answers its status; `answer`: whether the
    /// homeserver gets the bot's answer.
    async fn forward(self, answer: bool) -> u16 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.forward.send((answer, tx)).unwrap_or_else(|_| panic!("the proxy dropped the held transaction"));
        rx.await.expect("the bot's status")
    }
}

/// A scripted proxy between the homeserver and the bot (the registration's `url`): passes every
/// request through, except the first transaction holding a text the test armed it with, which it
/// holds and hands to the test ([`Held`]): a point in the transaction's life the test observes,
/// to kill the homeserver at.
struct Proxy {
    port: u16,
    armed: Armed,
    refused: Refused,
}

/// Paths (parts of) the [`Proxy`] answers itself with a 500, never forwarding them.
type Refused = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// What the [`Proxy`] is armed with: the text of the transaction to hold, and where to hand it.
type Armed = std::sync::Arc<std::sync::Mutex<Option<(String, tokio::sync::mpsc::UnboundedSender<Held>)>>>;

impl Proxy {
    async fn start(bot_port: u16) -> Proxy {
        Proxy::start_to(format!("http://127.0.0.1:{bot_port}"), "/_matrix/app/v1/transactions/").await
    }

    /// A proxy to `target` (an origin), holding requests whose path starts with `held_paths`
    /// and whose path or body holds the armed text.
    async fn start_to(target: String, held_paths: &'static str) -> Proxy {
        use axum::{
            body::Bytes,
            extract::State,
            http::{header, StatusCode},
            response::IntoResponse,
        };
        let armed: Armed = Default::default();
        let refused: Refused = Default::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target: std::sync::Arc<str> = target.into();
        let relay = move |State((armed, refused)): State<(Armed, Refused)>, request: axum::extract::Request| {
            let target = target.clone();
            async move {
                let (parts, body) = request.into_parts();
                if refused.lock().unwrap().iter().any(|part| parts.uri.path().contains(part.as_str())) {
                    let body = r#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#;
                    return (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "application/json")], body)
                        .into_response();
                }
                // A body the relay could not read is never forwarded as an empty one.
                let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.expect("the relayed request's body");
                let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
                let mut outgoing = reqwest::Client::new().request(parts.method.clone(), format!("{target}{path}"));
                for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
                    if let Some(value) = parts.headers.get(&name) {
                        outgoing = outgoing.header(name.as_str(), value.as_bytes());
                    }
                }
                let outgoing = outgoing.body(body.to_vec());
                let text = String::from_utf8_lossy(&body).into_owned();
                let hold = {
                    let mut armed = armed.lock().unwrap();
                    let matches = path.starts_with(held_paths)
                        && armed.as_ref().is_some_and(|(needle, _)| {
                            path.contains(needle.as_str()) || text.contains(needle.as_str())
                        });
                    if matches {
                        armed.take().map(|(_, tx)| tx)
                    } else {
                        None
                    }
                };
                let sent = match hold {
                    None => outgoing.send().await,
                    Some(tx) => {
                        // Forwarded by a task of its own, which outlives this request when the
                        // homeserver is gone by then.
                        let (forward, when) =
                            tokio::sync::oneshot::channel::<(bool, tokio::sync::oneshot::Sender<u16>)>();
                        let (reply, replied) = tokio::sync::oneshot::channel();
                        tokio::spawn(async move {
                            let Ok((answer, status)) = when.await else { return };
                            let sent = outgoing.send().await;
                            let _ = status.send(sent.as_ref().map_or(0, |r| r.status().as_u16()));
                            if answer {
                                let _ = reply.send(sent);
                            }
                        });
                        tx.send(Held { body: text, forward }).unwrap_or_else(|_| panic!("the test no longer listens"));
                        match replied.await {
                            Ok(sent) => sent,
                            // Told not to answer: the homeserver waits until it gives up or dies.
                            Err(_) => std::future::pending().await,
                        }
                    }
                };
                match sent {
                    Ok(response) => {
                        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
                        let kind = response.headers().get(header::CONTENT_TYPE).cloned();
                        let bytes = response.bytes().await.unwrap_or_default().to_vec();
                        let mut answer = (status, bytes).into_response();
                        if let Some(kind) = kind.and_then(|k| header::HeaderValue::from_bytes(k.as_bytes()).ok()) {
                            answer.headers_mut().insert(header::CONTENT_TYPE, kind);
                        }
                        answer
                    }
                    Err(_) => StatusCode::BAD_GATEWAY.into_response(),
                }
            }
        };
        let app = axum::Router::new().fallback(relay).with_state((armed.clone(), refused.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Proxy { port, armed, refused }
    }

    /// Answers every request whose path contains `part` with a 500, as a homeserver failing it.
    fn refuse(&self, part: &str) {
        self.refused.lock().unwrap().push(part.to_owned());
    }

    /// Holds the next transaction whose body contains `needle`; the receiver gets it.
    fn hold(&self, needle: &str) -> tokio::sync::mpsc::UnboundedReceiver<Held> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.armed.lock().unwrap() = Some((needle.to_owned(), tx));
        rx
    }
}

fn registration(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("workspace.yaml");
    let text = format!(
        "id: workspace\nurl: http://127.0.0.1:{port}\nas_token: {AS_TOKEN}\nhs_token: {HS_TOKEN}\n\
         sender_localpart: workspace\nrate_limited: false\nnamespaces:\n  users:\n    - exclusive: true\n      regex: '@workspace:.*'\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The bot's notices in `room` as `token` reads them, oldest first.
async fn notices(node: &Node, token: &str, room: &str) -> Vec<String> {
    let page = node.messages(token, room, "b", None, 200).await;
    let mut out: Vec<String> = page["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["content"]["msgtype"] == "m.notice")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    out.reverse();
    out
}

/// Waits (long-polling sync) until the bot has posted a notice in `room` containing `needle`;
/// returns it.
async fn wait_notice(node: &Node, token: &str, room: &str, since: &str, needle: &str) -> String {
    let timeline = node
        .wait_timeline_until(token, room, Some(since), WAIT, |events| {
            events.iter().any(|e| {
                e["content"]["msgtype"] == "m.notice"
                    && e["content"]["body"].as_str().is_some_and(|b| b.contains(needle))
            })
        })
        .await;
    timeline.bodies().into_iter().rfind(|b| b.contains(needle)).unwrap()
}

/// The id in brackets of a reply (`Tâche créée : [t4k2x9] …`).
fn bracketed(text: &str) -> String {
    let start = text.find('[').expect("an id in brackets") + 1;
    let end = start + text[start..].find(']').unwrap();
    text[start..end].to_owned()
}

/// Joins the direct-message room the bot invited `token`'s user to, and returns it.
async fn accept_dm(node: &Node, token: &str) -> String {
    let direct = |s: &Value| -> Option<String> {
        s["rooms"]["invite"].as_object()?.iter().find_map(|(room, invite)| {
            let events = invite["invite_state"]["events"].as_array()?;
            let is_direct = events.iter().any(|e| e["type"] == "m.room.member" && e["content"]["is_direct"] == true);
            is_direct.then(|| room.clone())
        })
    };
    let sync = node.wait_sync(token, None, WAIT, "a direct-message invite from the bot", |s| direct(s).is_some()).await;
    let room = direct(&sync).unwrap();
    node.join(token, &room, &[]).await;
    room
}

async fn api(bot: &Bot, method: Method, token: Option<&str>, path: &str, body: Option<&str>) -> (u16, Value, String) {
    let authorization = token.map(|t| format!("Bearer {t}"));
    api_as(bot, method, authorization.as_deref(), path, body).await
}

/// A REST API call with the `Authorization` header as given.
async fn api_as(
    bot: &Bot,
    method: Method,
    authorization: Option<&str>,
    path: &str,
    body: Option<&str>,
) -> (u16, Value, String) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", bot.url()));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
}

/// `OpenID <server> <token>`: an OpenID token `node` hands `user`, as a widget or an agent of
/// another node presents it to the REST API.
async fn openid(node: &Node, token: &str, user: &str) -> String {
    let path = format!("/_matrix/client/v3/user/{}/openid/request_token", enc(user));
    let issued = node.post(token, &path, json!({})).await;
    assert_eq!(issued["matrix_server_name"], node.server_name().as_str(), "{issued}");
    format!("OpenID {} {}", node.server_name(), issued["access_token"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_calendar_live_in_room_state_across_nodes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The homeserver reaches the bot through a proxy the test scripts (the kills at the end).
    let proxy = Proxy::start(port).await;
    let reg = registration(dir.path(), proxy.port);
    let regs = toml::Value::Array(vec![toml::Value::String(reg.display().to_string())]);
    let mut a = Node::start_with("ws-a", None, &[], &[("appservices.registrations", regs)]).await;
    a.keep_client_port();
    let b = Node::start("ws-b", &[]).await;
    let config = Bot::write_config(dir.path(), port, &a, &reg, "2026-11-30T08:00:00Z");
    // Node B's agents use the REST API with their OpenID tokens.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("allowed_servers = [{:?}]\n", b.server_name()));
    std::fs::write(&config, text).unwrap();
    let mut bot = Bot::start(config, port);
    let bot_id = a.user_id("workspace");

    let (alice, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let (_, carol_token) = a.register("carol").await;
    let room = a
        .create_room(
            &at,
            json!({ "preset": "public_chat", "name": "Bureau du budget",
                    "power_level_content_override": { "users": { bot_id.clone(): 100 } } }),
        )
        .await;
    let since = a.sync_token(&at).await;
    a.invite(&at, &room, &bot_id).await;
    wait_notice(&a, &at, &room, &since, "Bonjour").await;
    let levels = a.state_event(&at, &room, "m.room.power_levels", "").await;
    assert_eq!(levels["events"]["org.hemicycle.task"], 100, "only the bot's level writes tasks: {levels}");
    assert_eq!(levels["events"]["org.hemicycle.calendar.event"], 100);
    b.join(&bt, &room, &[a.server_name()]).await;

    // A task, in English; the reply is in English and the state reaches node B.
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, &format!("!task add \"Budget 2027\" {bob} {alice} due:2026-12-01 prio:high #finances"))
        .await;
    let reply = wait_notice(&a, &at, &room, &since, "Task created").await;
    let id = bracketed(&reply);
    let task = a.state_event(&at, &room, "org.hemicycle.task", &id).await;
    assert_eq!(task["title"], "Budget 2027");
    assert_eq!(task["due"], "2026-12-01T00:00:00");
    assert_eq!(task["timeZone"], "Europe/Paris");
    assert_eq!(task["showWithoutTime"], true);
    assert_eq!(task["priority"], 1);
    assert_eq!(task["progress"], "needs-action");
    assert_eq!(task["keywords"]["finances"], true);
    assert_eq!(task["creator"], alice.as_str());
    assert!(task["participants"][&bob]["roles"]["attendee"] == true, "{task}");
    b.wait_sync(&bt, None, WAIT, "the task on node B", |s| {
        s["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .into_iter()
            .chain(s["rooms"]["join"][&room]["timeline"]["events"].as_array())
            .flatten()
            .any(|e| e["type"] == "org.hemicycle.task" && e["state_key"] == id.as_str())
    })
    .await;
    let on_b = b.state_event(&bt, &room, "org.hemicycle.task", &id).await;
    assert_eq!(on_b["title"], "Budget 2027", "replicated to the other ministry's node");

    // Bob (level 0) cannot forge a task.
    let forged = format!("/_matrix/client/v3/rooms/{}/state/org.hemicycle.task/forged", enc(&room));
    let (status, body) =
        b.call(Method::PUT, Some(&bt), &forged, Some(&json!({ "uid": "forged", "title": "faux" }))).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // French commands get French replies; malformed ones the usage.
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!tâche liste").await;
    let listed = wait_notice(&a, &at, &room, &since, "Budget 2027").await;
    assert!(listed.contains("à faire") && listed.contains("échéance 2026-12-01"), "{listed}");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!task add").await;
    wait_notice(&a, &at, &room, &since, "usage: !task add").await;
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!task done nope").await;
    wait_notice(&a, &at, &room, &since, "no task nope").await;

    // A checklist on the task.
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, &format!("!tâche étape {id} «Chiffrage»")).await;
    wait_notice(&a, &at, &room, &since, "0/1 étapes").await;
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, &format!("!task tick {id} 1")).await;
    wait_notice(&a, &at, &room, &since, "1/1 items").await;
    let checklist = a.state_event(&at, &room, "org.hemicycle.task", &id).await["checklist"].clone();
    assert_eq!(checklist, json!([{ "text": "Chiffrage", "done": true }]));
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, &format!("!task tick {id} 5")).await;
    wait_notice(&a, &at, &room, &since, "no item 5").await;

    // The homeserver's side of the API: the hs_token, and malformed transactions refused.
    let txn_path = "/_matrix/app/v1/transactions/forged";
    let (status, e, _) = api(&bot, Method::PUT, None, txn_path, Some(r#"{"events": []}"#)).await;
    assert_eq!((status, e["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")));
    let forged_event = json!({ "events": [{ "type": "m.room.message", "room_id": room, "sender": alice,
        "event_id": "$forged", "content": { "msgtype": "m.text", "body": "!task add \"Forgée\"" } }] });
    let (status, e, _) = api(&bot, Method::PUT, Some(AS_TOKEN), txn_path, Some(&forged_event.to_string())).await;
    assert_eq!((status, e["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "the as_token is not the hs_token");
    let (status, e, _) = api(&bot, Method::PUT, Some(HS_TOKEN), txn_path, Some("{not json")).await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_NOT_JSON")));
    let (status, e, _) = api(&bot, Method::PUT, Some(HS_TOKEN), txn_path, Some(r#"{"events": 3}"#)).await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (status, e, _) = api(&bot, Method::GET, Some(HS_TOKEN), "/_matrix/app/v1/nothing", None).await;
    assert_eq!((status, e["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
    let (status, e, _) = api(&bot, Method::DELETE, Some(HS_TOKEN), txn_path, None).await;
    assert_eq!((status, e["errcode"].as_str()), (405, Some("M_UNRECOGNIZED")));

    // The REST API: the caller's own token, membership checked, errors as Matrix errors.
    let tasks_path = format!("/api/v1/rooms/{}/tasks", enc(&room));
    let (status, listed, _) = api(&bot, Method::GET, Some(&at), &tasks_path, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["tasks"][0]["uid"], id.as_str());
    assert_eq!(listed["tasks"][0]["late"], false, "the clock reads 30 November");
    let (status, e, _) = api(&bot, Method::GET, None, &tasks_path, None).await;
    assert_eq!((status, e["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));
    let (status, e, _) = api(&bot, Method::GET, Some("not-a-token"), &tasks_path, None).await;
    assert_eq!((status, e["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")));
    let (status, e, _) = api(&bot, Method::GET, Some(&carol_token), &tasks_path, None).await;
    assert_eq!((status, e["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "carol is not a member");
    let (status, e, _) = api(&bot, Method::POST, Some(&at), &tasks_path, Some("{not json")).await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_NOT_JSON")));
    let (status, e, _) = api(&bot, Method::POST, Some(&at), &tasks_path, Some(r#"{"title": 3}"#)).await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (status, e, _) =
        api(&bot, Method::POST, Some(&at), &tasks_path, Some(r#"{"title": "x", "due": "demain"}"#)).await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{e}");
    let (status, created, _) =
        api(&bot, Method::POST, Some(&at), &tasks_path, Some(r#"{"title": "Note au cabinet", "priority": "low"}"#))
            .await;
    assert_eq!(status, 201, "{created}");
    let api_id = created["task"]["uid"].as_str().unwrap().to_owned();
    let done_path = format!("/api/v1/rooms/{}/tasks/{api_id}/done", enc(&room));
    let (status, done, _) = api(&bot, Method::POST, Some(&at), &done_path, None).await;
    assert_eq!((status, done["task"]["progress"].as_str()), (200, Some("completed")));
    assert_eq!(a.state_event(&at, &room, "org.hemicycle.task", &api_id).await["progress"], "completed");
    let (_, all, _) = api(&bot, Method::GET, Some(&at), &tasks_path, None).await;
    assert_eq!(all["tasks"].as_array().unwrap().len(), 2, "nothing written by the refused requests: {all}");

    // An agent of the other node, with an OpenID token their own homeserver confirms; our
    // node's OpenID tokens work too; made-up tokens, servers not allowed and non-members are
    // refused with Matrix errors.
    let bob_openid = openid(&b, &bt, &bob).await;
    let (status, listed, _) = api_as(&bot, Method::GET, Some(&bob_openid), &tasks_path, None).await;
    assert_eq!((status, listed["tasks"].as_array().map(Vec::len)), (200, Some(2)), "{listed}");
    let (status, made, _) =
        api_as(&bot, Method::POST, Some(&bob_openid), &tasks_path, Some(r#"{"title": "Avis des finances"}"#)).await;
    assert_eq!(status, 201, "{made}");
    let bob_task = made["task"]["uid"].as_str().unwrap().to_owned();
    assert_eq!(a.state_event(&at, &room, "org.hemicycle.task", &bob_task).await["creator"], bob.as_str());
    let (status, _, _) = api_as(&bot, Method::GET, Some(&bob_openid), &tasks_path, None).await;
    assert_eq!(status, 200, "a confirmed token keeps working");
    let alice_openid = openid(&a, &at, &alice).await;
    let (status, listed, _) = api_as(&bot, Method::GET, Some(&alice_openid), &tasks_path, None).await;
    assert_eq!((status, listed["tasks"].as_array().map(Vec::len)), (200, Some(3)), "{listed}");
    let made_up = format!("OpenID {} not-a-token", b.server_name());
    let (status, e, _) = api_as(&bot, Method::GET, Some(&made_up), &tasks_path, None).await;
    assert_eq!((status, e["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "{e}");
    let bob_token_only = bob_openid.rsplit(' ').next().unwrap();
    let elsewhere = format!("OpenID {} {bob_token_only}", a.server_name());
    let (status, e, _) = api_as(&bot, Method::GET, Some(&elsewhere), &tasks_path, None).await;
    assert_eq!((status, e["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "B's token is not A's: {e}");
    let (status, e, _) =
        api_as(&bot, Method::GET, Some(&format!("OpenID evil.example {bob_token_only}")), &tasks_path, None).await;
    assert_eq!((status, e["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "a server not allowed: {e}");
    let (status, e, _) = api_as(&bot, Method::GET, Some("OpenID half"), &tasks_path, None).await;
    assert_eq!((status, e["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")), "{e}");
    let (dave, dt) = b.register("dave").await;
    let dave_openid = openid(&b, &dt, &dave).await;
    let (status, e, _) = api_as(&bot, Method::GET, Some(&dave_openid), &tasks_path, None).await;
    assert_eq!((status, e["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "dave is not a member: {e}");
    b.join(&dt, &room, &[a.server_name()]).await;
    a.wait_sync(&at, None, WAIT, "dave's join on node A", |s| {
        s["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .into_iter()
            .chain(s["rooms"]["join"][&room]["state"]["events"].as_array())
            .flatten()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == dave.as_str())
    })
    .await;
    let (status, _, _) = api_as(&bot, Method::GET, Some(&dave_openid), &tasks_path, None).await;
    assert_eq!(status, 200, "a member now");
    b.leave(&dt, &room).await;
    a.wait_sync(&at, None, WAIT, "dave's leave on node A", |s| {
        s["rooms"]["join"][&room]["timeline"]["events"].as_array().into_iter().flatten().any(|e| {
            e["type"] == "m.room.member" && e["state_key"] == dave.as_str() && e["content"]["membership"] == "leave"
        })
    })
    .await;
    let (status, e, _) = api_as(&bot, Method::GET, Some(&dave_openid), &tasks_path, None).await;
    assert_eq!((status, e["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "membership is checked live: {e}");
    let (_, all, _) = api(&bot, Method::GET, Some(&at), &tasks_path, None).await;
    assert_eq!(all["tasks"].as_array().unwrap().len(), 3, "nothing written by the refused requests: {all}");

    // A weekly meeting across the spring DST change.
    let since = a.sync_token(&at).await;
    a.send_text(
        &at,
        &room,
        &format!("!cal add \"Comité budgétaire\" 2026-03-16 10:00 duration:1h repeat:mo count:4 at:\"Salle 2\" {bob}"),
    )
    .await;
    let entry_id = bracketed(&wait_notice(&a, &at, &room, &since, "Entry added").await);
    let entry = a.state_event(&at, &room, "org.hemicycle.calendar.event", &entry_id).await;
    assert_eq!(entry["dtstart"], json!({ "tzid": "Europe/Paris", "value": "20260316T100000" }));
    assert_eq!(entry["rrule"], "FREQ=WEEKLY;BYDAY=MO;COUNT=4");
    let cal_path = format!("/api/v1/rooms/{}/calendar?from=2026-03-01T00:00:00Z&to=2026-05-01T00:00:00Z", enc(&room));
    let (status, cal, _) = api(&bot, Method::GET, Some(&at), &cal_path, None).await;
    assert_eq!(status, 200);
    let starts: Vec<&str> =
        cal["occurrences"].as_array().unwrap().iter().map(|o| o["start"].as_str().unwrap()).collect();
    assert_eq!(
        starts,
        ["2026-03-16T09:00:00Z", "2026-03-23T09:00:00Z", "2026-03-30T08:00:00Z", "2026-04-06T08:00:00Z"]
    );
    let (status, e, _) =
        api(&bot, Method::GET, Some(&at), &format!("/api/v1/rooms/{}/calendar?from=hier", enc(&room)), None).await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{e}");
    let reversed = format!("/api/v1/rooms/{}/calendar?from=2026-05-01T00:00:00Z&to=2026-03-01T00:00:00Z", enc(&room));
    let (status, e, _) = api(&bot, Method::GET, Some(&at), &reversed, None).await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (status, e, _) = api(
        &bot,
        Method::POST,
        Some(&at),
        &format!("/api/v1/rooms/{}/calendar", enc(&room)),
        Some(r#"{"title": "x", "start": "2026-03-16T10:00", "rrule": "FREQ=YEARLY"}"#),
    )
    .await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "unsupported rule: {e}");

    // The days to come, as the clock reads them (30 November): a daily point at 14:00.
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!cal add \"Point\" 2026-11-30 14:00 repeat:daily count:3").await;
    wait_notice(&a, &at, &room, &since, "Entry added").await;
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!agenda liste aujourdhui").await;
    let today = wait_notice(&a, &at, &room, &since, "Point").await;
    assert!(today.contains("2026-11-30 14:00") && !today.contains("2026-12-01"), "{today}");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!cal list week").await;
    let week = wait_notice(&a, &at, &room, &since, "Point").await;
    assert!(week.contains("2026-12-01 14:00") && week.contains("2026-12-02 14:00"), "{week}");
    assert!(!week.contains("Comité"), "March is not this week: {week}");

    let since = b.sync_token(&bt).await;
    b.send_text(&bt, &room, &format!("!agenda rsvp {entry_id} oui")).await;
    wait_notice(&b, &bt, &room, &since, "Réponse enregistrée").await;
    let entry = a.state_event(&at, &room, "org.hemicycle.calendar.event", &entry_id).await;
    assert_eq!(entry["attendees"][&bob]["rsvp"], "yes");

    // The entry's own meeting room, in Nordeck's format.
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, &format!("!cal meeting {entry_id}")).await;
    let made = wait_notice(&a, &at, &room, &since, "Meeting room").await;
    let meeting = made.split_whitespace().find(|w| w.starts_with('!')).unwrap().to_owned();
    a.join(&at, &meeting, &[]).await;
    assert_eq!(a.state_event(&at, &meeting, "m.room.create", "").await["type"], "net.nordeck.meetings.meeting");
    let metadata = a.state_event(&at, &meeting, "net.nordeck.meetings.metadata", "").await;
    assert_eq!(metadata["creator"], alice.as_str());
    assert_eq!(metadata["calendar"][0]["uid"], entry_id.as_str());
    assert_eq!(metadata["calendar"][0]["dtstart"], json!({ "tzid": "Europe/Paris", "value": "20260316T100000" }));
    assert_eq!(metadata["calendar"][0]["rrule"], "FREQ=WEEKLY;BYDAY=MO;COUNT=4");
    assert_eq!(
        a.state_event(&at, &room, "org.hemicycle.calendar.event", &entry_id).await["meeting_room"],
        meeting.as_str()
    );

    // The ICS feed, handed out by direct message, parsed back, then revoked.
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!cal feed").await;
    wait_notice(&a, &at, &room, &since, "direct message").await;
    let dm = accept_dm(&a, &at).await;
    let feed_text = notices(&a, &at, &dm).await.into_iter().find(|n| n.contains(".ics?token=")).expect("the feed link");
    let url = feed_text.split_whitespace().find(|w| w.starts_with("http")).unwrap().to_owned();
    let ics = reqwest::get(&url).await.unwrap();
    assert_eq!(ics.status().as_u16(), 200);
    assert!(ics.headers()["content-type"].to_str().unwrap().starts_with("text/calendar"));
    let ics = ics.text().await.unwrap();
    let parsed: icalendar::Calendar = ics.parse().unwrap_or_else(|e| panic!("{e}\n{ics}"));
    use icalendar::{Component, EventLike};
    let events: Vec<_> = parsed.components.iter().filter_map(|c| c.as_event()).collect();
    assert_eq!(events.len(), 2, "both entries: {ics}");
    let event = events.iter().find(|e| e.get_summary() == Some("Comité budgétaire")).expect("the meeting");
    assert_eq!(event.get_summary(), Some("Comité budgétaire"));
    assert_eq!(event.get_location(), Some("Salle 2"));
    assert_eq!(event.property_value("RRULE"), Some("FREQ=WEEKLY;BYDAY=MO;COUNT=4"));
    let dtstart = event.properties().get("DTSTART").unwrap();
    assert_eq!(dtstart.value(), "20260316T100000");
    assert_eq!(dtstart.params().get("TZID").map(|p| p.value()), Some("Europe/Paris"));
    assert!(ics.contains("BEGIN:VTIMEZONE\r\nTZID:Europe/Paris"), "{ics}");
    assert!(
        ics.contains("DTSTART:20260329T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200"),
        "the 2026 spring change"
    );
    let forged_url = format!("{}/calendar/{}.ics?token=0000", bot.url(), enc(&room));
    assert_eq!(reqwest::get(&forged_url).await.unwrap().status().as_u16(), 403);
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!agenda flux révoquer").await;
    wait_notice(&a, &at, &room, &since, "révoqué").await;
    assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 403, "revoked");

    // Reminders: none before the due date; one, by direct message, once the clock reaches
    // 09:00 in Paris on it; not again after another restart.
    assert!(notices(&a, &at, &dm).await.iter().all(|n| !n.contains("Rappel")), "not due yet");
    bot.restart("2026-12-01T08:00:05Z");
    let reminded = a
        .wait_timeline_until(&at, &dm, None, WAIT, |events| {
            events.iter().any(|e| e["content"]["body"].as_str().is_some_and(|b| b.contains("Rappel")))
        })
        .await;
    let reminder = reminded.bodies().into_iter().find(|b| b.contains("Rappel")).unwrap();
    assert!(reminder.contains("Budget 2027") && reminder.contains("Bureau du budget"), "{reminder}");
    // Bob, on node B, joins the direct-message room after the reminder was sent: his node
    // backfills it from node A for /messages.
    let bob_dm = accept_dm(&b, &bt).await;
    let deadline = std::time::Instant::now() + WAIT;
    let mut since = b.sync_token(&bt).await;
    let bob_notices = loop {
        let seen = notices(&b, &bt, &bob_dm).await;
        if seen.iter().any(|n| n.contains("Rappel")) || std::time::Instant::now() > deadline {
            break seen;
        }
        since = hemicycle_federation_tests::next_batch(&b.sync(&bt, Some(&since), 1000).await);
    };
    assert_eq!(
        bob_notices.iter().filter(|n| n.contains("Rappel") && n.contains("Budget 2027")).count(),
        1,
        "{bob_notices:?} {}",
        a.messages(AS_TOKEN, &bob_dm, "b", None, 50).await
    );
    bot.restart("2026-12-02T10:00:00Z");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!task list late").await;
    wait_notice(&a, &at, &room, &since, "Budget 2027").await;
    // A point after which a second reminder would be there. The bot's reminder loop runs pass
    // after pass, each over the tasks as they were when it began, each sending before the next
    // begins. A task due today, made once another such task was reminded, is reminded by a later
    // pass than that one: a pass after the one the restart began with.
    for witness in ["Témoin 1", "Témoin 2"] {
        a.send_text(&at, &room, &format!("!task add \"{witness}\" {alice} due:2026-12-02")).await;
        a.wait_timeline_until(&at, &dm, None, WAIT, |events| {
            bodies(events).iter().any(|b| b.contains("Rappel") && b.contains(witness))
        })
        .await;
    }
    let count =
        notices(&a, &at, &dm).await.iter().filter(|n| n.contains("Rappel") && n.contains("Budget 2027")).count();
    assert_eq!(count, 1, "one reminder, across restarts");
    let late = notices(&a, &at, &room).await.into_iter().rfind(|n| n.contains("Budget 2027")).unwrap();
    assert!(late.contains("(late)"), "past its due day: {late}");

    // The appservice down while commands arrive: each is answered once it is back.
    bot.kill();
    a.send_text(&at, &room, "!task add \"Pendant la coupure\"").await;
    a.send_text(&at, &room, "!tâche ajouter «Deuxième pendant la coupure»").await;
    bot.restart("2026-12-02T10:00:00Z");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!help").await;
    wait_notice(&a, &at, &room, &since, "!task add").await;
    let all = notices(&a, &at, &room).await;
    assert_eq!(all.iter().filter(|n| n.contains("Pendant la coupure")).count(), 1, "{all:#?}");
    assert_eq!(all.iter().filter(|n| n.contains("Deuxième pendant la coupure")).count(), 1, "{all:#?}");

    // The homeserver killed and restarted: commands after it are answered, none twice.
    a.kill().await;
    a.restart().await;
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!task add \"Après le redémarrage\"").await;
    wait_notice(&a, &at, &room, &since, "Après le redémarrage").await;
    let all = notices(&a, &at, &room).await;
    assert_eq!(all.iter().filter(|n| n.contains("Après le redémarrage")).count(), 1, "{all:#?}");
    assert_eq!(all.iter().filter(|n| n.contains("Pendant la coupure")).count(), 1, "nothing redelivered twice");
    // Killed with a transaction on its way: the proxy holds the one carrying a command, the
    // homeserver is killed, and only then does the bot get it: its writes fail, so it refuses the
    // transaction. After the restart the homeserver sends it again (same id, same events).
    let mut held = proxy.hold("Rafale 1");
    a.send_text(&at, &room, "!task add \"Rafale 1\"").await;
    let transaction = tokio::time::timeout(WAIT, held.recv()).await.expect("the command's transaction").unwrap();
    assert!(transaction.body.contains("!task add"), "{}", transaction.body);
    a.kill().await;
    let status = transaction.forward(false).await;
    assert_eq!(status, 503, "the bot refuses a transaction it could not act on (the homeserver is down)");
    a.restart().await;
    // Killed once the bot has handled a transaction, before its answer reached the homeserver:
    // after the restart the homeserver sends it again, and the bot knows it.
    let mut held = proxy.hold("Rafale 2");
    a.send_text(&at, &room, "!task add \"Rafale 2\"").await;
    let transaction = tokio::time::timeout(WAIT, held.recv()).await.expect("the command's transaction").unwrap();
    assert_eq!(transaction.forward(false).await, 200, "the bot handled it; the homeserver never hears so");
    a.kill().await;
    a.restart().await;
    a.send_text(&at, &room, "!task add \"Rafale 3\"").await;
    // Each command answered once, each task made once.
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!task list open").await;
    wait_notice(&a, &at, &room, &since, "Rafale 3").await;
    let all = notices(&a, &at, &room).await;
    for n in 1..=3 {
        let created =
            all.iter().filter(|t| t.starts_with("Task created") && t.contains(&format!("Rafale {n}"))).count();
        assert_eq!(created, 1, "command {n} answered once: {all:#?}");
    }
    let (_, all_tasks, _) = api(&bot, Method::GET, Some(&at), &tasks_path, None).await;
    assert_eq!(all_tasks["tasks"].as_array().unwrap().len(), 11, "nothing from the refused transactions: {all_tasks}");
}

/// The state events of `type` in `room`, by state key.
async fn states(node: &Node, token: &str, room: &str, kind: &str) -> std::collections::BTreeMap<String, Value> {
    node.get_state(token, room)
        .await
        .into_iter()
        .filter(|e| e["type"] == kind)
        .map(|e| (e["state_key"].as_str().unwrap().to_owned(), e["content"].clone()))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Posts a file message (uploaded first) in `room`; returns its event id.
async fn post_file(node: &Node, token: &str, room: &str, name: &str, bytes: &[u8]) -> String {
    let mxc = node.upload(token, bytes.to_vec(), "text/plain", name).await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
        enc(room),
        sha256_hex(format!("{name}{mxc}").as_bytes())
    );
    let content = json!({ "msgtype": "m.file", "body": name, "url": mxc, "info": { "size": bytes.len(), "mimetype": "text/plain" } });
    node.put(token, &path, content).await["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_libraries_are_msc3089_file_trees_shared_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let reg = registration(dir.path(), port);
    let regs = toml::Value::Array(vec![toml::Value::String(reg.display().to_string())]);
    // Room version 11 here (12 elsewhere): the bot then lists itself in a library's power
    // levels, and matrix-js-sdk's own tree creation (which lists its creator) is accepted.
    let extra = [("appservices.registrations", regs), ("rooms.default_version", toml::Value::String("11".into()))];
    let a = Node::start_with("lib-a", None, &[], &extra).await;
    let b = Node::start("lib-b", &[]).await;
    let bot = Bot::start(Bot::write_config(dir.path(), port, &a, &reg, "2026-12-01T08:00:00Z"), port);
    let bot_id = a.user_id("workspace");
    let (alice, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let room = a
        .create_room(
            &at,
            json!({ "preset": "public_chat", "power_level_content_override": { "users": { alice.clone(): 100, bot_id.clone(): 100 } } }),
        )
        .await;
    let since = a.sync_token(&at).await;
    a.invite(&at, &room, &bot_id).await;
    wait_notice(&a, &at, &room, &since, "Bonjour").await;

    // A library: a space with the MSC3088 purpose and matrix-js-sdk's tree power levels.
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc new \"Bibliothèque du bureau\"").await;
    let created = wait_notice(&a, &at, &room, &since, "Library created").await;
    let library = created.split_whitespace().find(|w| w.starts_with('!')).unwrap().to_owned();
    a.join(&at, &library, &[]).await;
    let create = a.state_event(&at, &library, "m.room.create", "").await;
    assert_eq!(create["type"], "m.space");
    let purpose = a.state_event(&at, &library, "org.matrix.msc3088.purpose", "org.matrix.msc3089.data_tree").await;
    assert_eq!(purpose, json!({ "org.matrix.msc3088.enabled": true }));
    let levels = a.state_event(&at, &library, "m.room.power_levels", "").await;
    assert_eq!(
        (levels["events_default"].as_i64(), levels["invite"].as_i64(), levels["kick"].as_i64()),
        (Some(50), Some(100), Some(100))
    );
    assert_eq!(levels["users"][&alice], 100, "the asker owns it: {levels}");
    a.invite(&at, &library, &bob).await;
    b.join(&bt, &library, &[a.server_name()]).await;

    // A file posted in the linked room is filed: an m.file leaf and its branch, with its hash.
    let since = a.sync_token(&at).await;
    post_file(&a, &at, &room, "note.txt", b"version 1").await;
    wait_notice(&a, &at, &room, &since, "Classé dans la bibliothèque").await;
    let branches = states(&a, &at, &library, "org.matrix.msc3089.branch").await;
    let (first_id, first) = branches.iter().next().expect("a branch");
    assert_eq!(first["active"], true);
    assert_eq!(first["name"], "note.txt");
    assert_eq!(first["version"], 1);
    assert_eq!(first["locked"], false);
    assert_eq!(first["org.hemicycle.sha256"], sha256_hex(b"version 1"));
    assert_eq!(first["org.hemicycle.size"], 9);
    let leaf = a.get(&at, &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&library), enc(first_id))).await;
    assert_eq!(leaf["content"]["msgtype"], "m.file");
    assert_eq!(leaf["content"]["body"], "note.txt");
    assert_eq!(leaf["content"]["org.matrix.msc3089.leaf"], json!({}));
    assert!(leaf["content"]["url"].as_str().unwrap().starts_with("mxc://"));

    // The same name again: a new version replacing the old one.
    let since = a.sync_token(&at).await;
    post_file(&a, &at, &room, "note.txt", b"version 2").await;
    wait_notice(&a, &at, &room, &since, "(v2)").await;
    let branches = states(&a, &at, &library, "org.matrix.msc3089.branch").await;
    assert_eq!(branches[first_id]["active"], false, "the old version is retired");
    let (second_id, second) = branches.iter().find(|(_, b)| b["version"] == 2).expect("version 2");
    assert_eq!(second["active"], true);
    let leaf = a.get(&at, &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&library), enc(second_id))).await;
    assert_eq!(leaf["content"]["m.relates_to"], json!({ "rel_type": "m.replace", "event_id": first_id }));
    assert_eq!(leaf["content"]["m.new_content"]["body"], "note.txt");

    // Node B has the library's state: bob sees version 2.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let on_b = states(&b, &bt, &library, "org.matrix.msc3089.branch").await;
        if on_b.get(second_id).is_some_and(|b| b["active"] == true) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "version 2 not on node B: {on_b:?}");
        b.sync(&bt, Some(&b.sync_token(&bt).await), 1000).await;
    }

    // The same content under another name is found as a duplicate.
    let since = a.sync_token(&at).await;
    post_file(&a, &at, &room, "copie.txt", b"version 2").await;
    wait_notice(&a, &at, &room, &since, "même contenu que « note.txt »").await;

    // Folders: a sub-space linked both ways; moving, listing, locking, history, deleting.
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc mkdir Archives").await;
    wait_notice(&a, &at, &room, &since, "Folder created").await;
    let children = states(&a, &at, &library, "m.space.child").await;
    let (archives, via) = children.iter().next().expect("a child folder");
    assert_eq!(via["via"], json!([a.server_name()]));
    a.join(&at, archives, &[]).await;
    assert_eq!(a.state_event(&at, archives, "m.space.parent", &library).await["via"], json!([a.server_name()]));
    assert_eq!(
        a.state_event(&at, archives, "org.matrix.msc3088.purpose", "org.matrix.msc3089.data_tree").await
            ["org.matrix.msc3088.enabled"],
        true
    );
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc mv note.txt Archives").await;
    wait_notice(&a, &at, &room, &since, "Moved").await;
    let moved = states(&a, &at, archives, "org.matrix.msc3089.branch").await;
    assert!(moved.values().any(|b| b["name"] == "note.txt" && b["active"] == true), "{moved:?}");
    let root = states(&a, &at, &library, "org.matrix.msc3089.branch").await;
    assert_eq!(root[second_id], json!({}), "removed from the top folder");
    let redacted = a.get(&at, &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&library), enc(second_id))).await;
    assert!(redacted["content"].as_object().unwrap().is_empty(), "the moved file event is redacted: {redacted}");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc ls").await;
    let listing = wait_notice(&a, &at, &room, &since, "Archives/").await;
    assert!(listing.contains("copie.txt — v1") && !listing.contains("note.txt"), "{listing}");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc verrouiller Archives/note.txt").await;
    wait_notice(&a, &at, &room, &since, "verrouillé").await;
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc ls Archives").await;
    let listing = wait_notice(&a, &at, &room, &since, "note.txt").await;
    assert!(listing.contains("(locked)"), "{listing}");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc mv Archives/note.txt .").await;
    wait_notice(&a, &at, &room, &since, "locked").await;
    // The REST API over the same library: listing, history, lock, errors.
    let files = format!("/api/v1/libraries/{}/files", enc(&library));
    let (status, top, _) = api(&bot, Method::GET, Some(&at), &files, None).await;
    assert_eq!(status, 200, "{top}");
    assert_eq!(top["folders"][0]["name"], "Archives");
    assert_eq!(top["files"][0]["name"], "copie.txt");
    let (_, inside, _) = api(&bot, Method::GET, Some(&at), &format!("{files}?path=Archives"), None).await;
    assert_eq!(
        (inside["files"][0]["name"].as_str(), inside["files"][0]["locked"].as_bool()),
        (Some("note.txt"), Some(true))
    );
    let (status, history, _) =
        api(&bot, Method::GET, Some(&at), &format!("{files}/history?path=Archives/note.txt"), None).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["versions"].as_array().map(Vec::len), Some(1), "a move restarts the history: {history}");
    assert_eq!(history["versions"][0]["version"], 1);
    let lock = format!("{files}/lock?path=Archives/note.txt");
    let (status, unlocked, _) = api(&bot, Method::POST, Some(&at), &lock, Some(r#"{"locked": false}"#)).await;
    assert_eq!((status, unlocked["file"]["locked"].as_bool()), (200, Some(false)));
    let (status, e, _) = api(&bot, Method::POST, Some(&at), &lock, Some(r#"{"locked": "yes"}"#)).await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (status, e, _) = api(&bot, Method::GET, Some(&at), &format!("{files}?path=Nowhere"), None).await;
    assert_eq!((status, e["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (status, e, _) = api(&bot, Method::GET, None, &files, None).await;
    assert_eq!((status, e["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));

    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc rm copie.txt").await;
    wait_notice(&a, &at, &room, &since, "Deleted").await;
    let root = states(&a, &at, &library, "org.matrix.msc3089.branch").await;
    assert!(root.values().all(|b| b.get("active") != Some(&json!(true))), "nothing active left on top: {root:?}");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc rm absent.txt").await;
    wait_notice(&a, &at, &room, &since, "not found: absent.txt").await;

    // matrix-js-sdk itself (MSC3089TreeSpace) reads the bot's library: the folder, its file.
    let seen = matrix_js_sdk(&a, &alice, &at, "read", &library);
    assert_eq!(seen["files"], json!([]), "nothing active at the top: {seen}");
    let folder = &seen["folders"][0];
    assert_eq!(folder["name"], "Archives", "{seen}");
    assert_eq!(folder["files"][0]["name"], "note.txt", "{seen}");
    assert_eq!(folder["files"][0]["version"], 1);
    // And makes one (unstableCreateFileTree, createFile) that the bot lists.
    let made = matrix_js_sdk(&a, &alice, &at, "create", "Bibliothèque JS");
    let made = made["room_id"].as_str().unwrap().to_owned();
    // Its owner makes the bot an editor (level 50), so it may answer there.
    let mut levels = a.state_event(&at, &made, "m.room.power_levels", "").await;
    levels["users"][&bot_id] = json!(50);
    a.put_state(&at, &made, "m.room.power_levels", "", levels).await;
    let since = a.sync_token(&at).await;
    a.invite(&at, &made, &bot_id).await;
    a.wait_timeline_until(&at, &made, Some(&since), WAIT, |events| {
        events.iter().any(|e| e["sender"] == bot_id.as_str() && e["type"] == "m.room.member")
    })
    .await;
    let since = a.sync_token(&at).await;
    a.send_text(&at, &made, "!doc ls").await;
    // matrix-js-sdk makes the tree encrypted: the bot answers there only encrypted (which this
    // raw client, with no keys, cannot read), and its listing is read through the REST API.
    a.wait_timeline_until(&at, &made, Some(&since), WAIT, |events| {
        events.iter().any(|e| e["sender"] == bot_id.as_str() && e["type"] == "m.room.encrypted")
    })
    .await;
    let (status, listing, _) =
        api(&bot, Method::GET, Some(&at), &format!("/api/v1/libraries/{}/files", enc(&made)), None).await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(
        (listing["files"][0]["name"].as_str(), listing["files"][0]["version"].as_u64()),
        (Some("js-note.txt"), Some(1)),
        "{listing}"
    );

    // A library made the way matrix-js-sdk makes one is read by the bot.
    let js = a
        .create_room(
            &at,
            json!({
                "name": "Made by a client",
                "creation_content": { "type": "m.space" },
                "initial_state": [{ "type": "org.matrix.msc3088.purpose", "state_key": "org.matrix.msc3089.data_tree",
                                    "content": { "org.matrix.msc3088.enabled": true } }],
                "power_level_content_override": { "events_default": 50, "state_default": 50, "invite": 100,
                                                  "users": { alice.clone(): 100, bot_id.clone(): 50 } },
            }),
        )
        .await;
    let mxc = a.upload(&at, b"js".to_vec(), "text/plain", "rapport.pdf").await;
    let file_path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/jsfile", enc(&js));
    let sent = a
        .put(&at, &file_path, json!({ "msgtype": "m.file", "body": "rapport.pdf", "url": mxc, "file": { "url": mxc }, "org.matrix.msc3089.leaf": {} }))
        .await;
    a.put_state(
        &at,
        &js,
        "org.matrix.msc3089.branch",
        sent["event_id"].as_str().unwrap(),
        json!({ "active": true, "name": "rapport.pdf" }),
    )
    .await;
    let since = a.sync_token(&at).await;
    a.invite(&at, &js, &bot_id).await;
    a.wait_timeline_until(&at, &js, Some(&since), WAIT, |events| {
        events.iter().any(|e| e["sender"] == bot_id.as_str() && e["type"] == "m.room.member")
    })
    .await;
    let since = a.sync_token(&at).await;
    a.send_text(&at, &js, "!doc ls").await;
    let listing = wait_notice(&a, &at, &js, &since, "rapport.pdf").await;
    assert!(listing.contains("rapport.pdf — v1"), "version 1 when the branch has none: {listing}");
}

/// The same appservice registered with a real Synapse: it answers commands there, writes tasks as
/// room state, makes a library, files a posted file, and its REST API checks Synapse's tokens;
/// with its encrypting device on, the bot being a user of the appservice's namespace (Synapse
/// refuses its sender `/sync`), it answers encrypted commands in an encrypted room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_appservice_works_with_synapse() {
    use hemicycle_federation_tests::scenarios::{sdk_sync, step};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Synapse refuses `/sync` (and sliding sync) to an appservice's sender: the bot is a user
    // of the namespace instead, whose device syncs (docs/appservices.md).
    let reg = registration(dir.path(), port);
    let text = std::fs::read_to_string(&reg)
        .unwrap()
        .replace("sender_localpart: workspace\n", "sender_localpart: workspace-service\n");
    std::fs::write(&reg, text).unwrap();
    let extra = format!("app_service_config_files: [{:?}]\n", reg.display().to_string());
    let synapse = Node::start_synapse_with("ws-synapse", &extra).await;
    let config = Bot::write_config(dir.path(), port, &synapse, &reg, "2026-11-30T08:00:00Z");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + "user_localpart = \"workspace\"\n").unwrap();
    // Encryption on (the default).
    let bot = Bot::start(config, port);
    assert!(dir.path().join("data/e2ee/session.json").exists(), "the bot's device is logged in");
    let bot_id = synapse.user_id("workspace");
    let (_, at) = synapse.register("alice").await;
    // The bot's level is raised after creation: an override of `users` would drop alice's own
    // level (before room version 12), and she links the room to a library below.
    let room = synapse.create_room(&at, json!({ "preset": "public_chat" })).await;
    let mut levels = synapse.state_event(&at, &room, "m.room.power_levels", "").await;
    levels["users"][&bot_id] = json!(100);
    synapse.put_state(&at, &room, "m.room.power_levels", "", levels).await;
    let since = synapse.sync_token(&at).await;
    synapse.invite(&at, &room, &bot_id).await;
    wait_notice(&synapse, &at, &room, &since, "Bonjour").await;
    assert_eq!(synapse.state_event(&at, &room, "m.room.power_levels", "").await["events"]["org.hemicycle.task"], 100);

    let since = synapse.sync_token(&at).await;
    synapse.send_text(&at, &room, "!task add \"Rapport annuel\" due:2026-12-15").await;
    let id = bracketed(&wait_notice(&synapse, &at, &room, &since, "Task created").await);
    assert_eq!(synapse.state_event(&at, &room, "org.hemicycle.task", &id).await["title"], "Rapport annuel");
    let (status, listed, _) =
        api(&bot, Method::GET, Some(&at), &format!("/api/v1/rooms/{}/tasks", enc(&room)), None).await;
    assert_eq!(status, 200, "Synapse's token accepted: {listed}");
    assert_eq!(listed["tasks"][0]["uid"], id.as_str());

    let since = synapse.sync_token(&at).await;
    synapse.send_text(&at, &room, "!doc new \"Archives\"").await;
    let created = wait_notice(&synapse, &at, &room, &since, "Library created").await;
    let library = created.split_whitespace().find(|w| w.starts_with('!')).unwrap().to_owned();
    synapse.join(&at, &library, &[]).await;
    assert_eq!(synapse.state_event(&at, &library, "m.room.create", "").await["type"], "m.space");
    let since = synapse.sync_token(&at).await;
    post_file(&synapse, &at, &room, "budget.ods", b"cellules").await;
    wait_notice(&synapse, &at, &room, &since, "Classé dans la bibliothèque").await;
    let branches = states(&synapse, &at, &library, "org.matrix.msc3089.branch").await;
    let branch = branches.values().next().expect("a branch on Synapse");
    assert_eq!((branch["name"].as_str(), branch["version"].as_u64()), (Some("budget.ods"), Some(1)));
    assert_eq!(branch["org.hemicycle.sha256"], sha256_hex(b"cellules"), "downloaded from Synapse's media repository");

    // End-to-end encryption on Synapse: carol's client (matrix-sdk) and the bot's device speak
    // encrypted only.
    let carol = synapse.client("carol").await;
    step("carol's first sync", sdk_sync(&carol, Duration::ZERO)).await;
    let ct = carol.access_token().unwrap();
    // Carol is not named in the override: she creates the room, and Synapse refuses a room
    // v12 creator in `users` (creators have unlimited power there).
    let secret = synapse.create_room(&ct, encrypted_room(Some("Secret"), &bot_id, &[])).await;
    synapse.invite(&ct, &secret, &bot_id).await;
    wait_encrypted_notice(&carol, &secret, &bot_id, "Bonjour").await;
    send_encrypted(&carol, &secret, "!task add \"Note chiffrée\"").await;
    let created = wait_encrypted_notice(&carol, &secret, &bot_id, "Task created").await;
    let id = bracketed(&created);
    assert_eq!(synapse.state_event(&ct, &secret, "org.hemicycle.task", &id).await["title"], "Note chiffrée");
    let page = synapse.messages(&ct, &secret, "b", None, 200).await;
    let clear = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sender"] == bot_id.as_str() && e["type"] == "m.room.message")
        .count();
    assert_eq!(clear, 0, "the bot never speaks in the clear in an encrypted room: {page}");
}

/// Runs federation-tests/js/msc3089.mjs (matrix-js-sdk's MSC3089 API) as `user`; its JSON output.
fn matrix_js_sdk(node: &Node, user: &str, token: &str, mode: &str, arg: &str) -> Value {
    let sdk = std::env::var("MATRIX_JS_SDK").unwrap_or_else(|_| {
        panic!("MATRIX_JS_SDK is not set: run the tests with ./scripts/test, which installs matrix-js-sdk")
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/msc3089.mjs");
    let out = Command::new("node")
        .arg(script)
        .args([node.client_url(), user, token, mode, arg])
        .env("MATRIX_JS_SDK", sdk)
        .output()
        .expect("run node");
    assert!(out.status.success(), "matrix-js-sdk {mode}: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("matrix-js-sdk printed no JSON ({e}): {stdout}"))
}

/// The bot acts with the asker's rights, never its own (issue 34). Two users of different power
/// in a library — `ed` an editor (50) of its top folder and a viewer (0) of its sub-folder,
/// `vi` the other way round — use the commands and the REST API, each checked in the folder the
/// path resolves to; a non-member is refused with the same answer as a room that does not
/// exist; a room linked by a non-member of the library is not linked; assignees and attendees
/// must be members of the room; a hostile user id is refused; an invite from another server is
/// rejected by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_bot_acts_with_the_askers_rights() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let reg = registration(dir.path(), port);
    let regs = toml::Value::Array(vec![toml::Value::String(reg.display().to_string())]);
    let a = Node::start_with("rights-a", None, &[], &[("appservices.registrations", regs)]).await;
    let b = Node::start("rights-b", &[]).await;
    let bot = Bot::start(Bot::write_config(dir.path(), port, &a, &reg, "2026-12-01T08:00:00Z"), port);
    let bot_id = a.user_id("workspace");
    let (_, at) = a.register("alice").await;
    let (ed, et) = a.register("ed").await;
    let (vi, vt) = a.register("vi").await;
    let (_, mt) = a.register("mallory").await;
    let (zed, zt) = a.register("zed").await;
    let (_, bt) = b.register("bob").await;

    // The work room (alice creates it: room version 12, she has every power), the library
    // linked to it, and a folder in the library.
    let room = a
        .create_room(
            &at,
            json!({ "preset": "public_chat", "name": "Bureau",
                    "power_level_content_override": { "users": { bot_id.clone(): 100 } } }),
        )
        .await;
    let since = a.sync_token(&at).await;
    a.invite(&at, &room, &bot_id).await;
    wait_notice(&a, &at, &room, &since, "Bonjour").await;
    for token in [&et, &vt, &mt] {
        a.join(token, &room, &[]).await;
    }
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc new \"Bibliothèque\"").await;
    let created = wait_notice(&a, &at, &room, &since, "Library created").await;
    let library = created.split_whitespace().find(|w| w.starts_with('!')).unwrap().to_owned();
    a.join(&at, &library, &[]).await;
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc mkdir Dossier").await;
    wait_notice(&a, &at, &room, &since, "Folder created").await;
    let folder = states(&a, &at, &library, "m.space.child").await.into_keys().next().expect("the folder");
    a.join(&at, &folder, &[]).await;
    // ed: editor of the top folder, viewer of the sub-folder; vi: the other way round.
    for (space, ed_level, vi_level) in [(&library, 50, 0), (&folder, 0, 50)] {
        let mut levels = a.state_event(&at, space, "m.room.power_levels", "").await;
        levels["users"][&ed] = json!(ed_level);
        levels["users"][&vi] = json!(vi_level);
        a.put_state(&at, space, "m.room.power_levels", "", levels).await;
        a.invite(&at, space, &ed).await;
        a.invite(&at, space, &vi).await;
        a.join(&et, space, &[]).await;
        a.join(&vt, space, &[]).await;
    }
    // Two files, one on top and one in the folder (filed and moved by alice, the owner).
    for name in ["racine.txt", "dossier.txt"] {
        let since = a.sync_token(&at).await;
        post_file(&a, &at, &room, name, name.as_bytes()).await;
        wait_notice(&a, &at, &room, &since, &format!("« {name} »")).await;
    }
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc mv dossier.txt Dossier").await;
    wait_notice(&a, &at, &room, &since, "Moved").await;

    // The REST API: reading needs membership of the folder, writing its editor level.
    let files = format!("/api/v1/libraries/{}/files", enc(&library));
    let lock_top = format!("{files}/lock?path=racine.txt");
    let lock_inner = format!("{files}/lock?path=Dossier/dossier.txt");
    let locked = Some(r#"{"locked": true}"#);
    let unlocked = Some(r#"{"locked": false}"#);
    let (status, e, _) = api(&bot, Method::POST, Some(&vt), &lock_top, locked).await;
    assert_eq!((status, e["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "vi is a viewer on top: {e}");
    let (status, e, _) = api(&bot, Method::DELETE, Some(&vt), &format!("{files}?path=racine.txt"), None).await;
    assert_eq!((status, e["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "vi may not delete on top: {e}");
    let (status, e, _) = api(&bot, Method::POST, Some(&et), &lock_inner, locked).await;
    assert_eq!((status, e["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "ed is a viewer in the folder: {e}");
    let (status, e, _) = api(&bot, Method::DELETE, Some(&et), &format!("{files}?path=Dossier/dossier.txt"), None).await;
    assert_eq!((status, e["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{e}");
    let (status, ok, _) = api(&bot, Method::POST, Some(&et), &lock_top, locked).await;
    assert_eq!((status, ok["file"]["locked"].as_bool()), (200, Some(true)), "ed edits on top: {ok}");
    let (status, ok, _) = api(&bot, Method::POST, Some(&et), &lock_top, unlocked).await;
    assert_eq!((status, ok["file"]["locked"].as_bool()), (200, Some(false)));
    let (status, ok, _) = api(&bot, Method::POST, Some(&vt), &lock_inner, locked).await;
    assert_eq!((status, ok["file"]["locked"].as_bool()), (200, Some(true)), "vi edits in the folder: {ok}");
    let (status, ok, _) = api(&bot, Method::POST, Some(&vt), &lock_inner, unlocked).await;
    assert_eq!((status, ok["file"]["locked"].as_bool()), (200, Some(false)));
    for (who, token) in [("vi", &vt), ("ed", &et)] {
        let (status, top, _) = api(&bot, Method::GET, Some(token), &files, None).await;
        assert_eq!(status, 200, "{who} reads the top folder: {top}");
        assert_eq!(top["files"][0]["name"], "racine.txt");
        let (status, inner, _) = api(&bot, Method::GET, Some(token), &format!("{files}?path=Dossier"), None).await;
        assert_eq!((status, inner["files"][0]["name"].as_str()), (200, Some("dossier.txt")), "{who}: {inner}");
        let (status, history, _) =
            api(&bot, Method::GET, Some(token), &format!("{files}/history?path=racine.txt"), None).await;
        assert_eq!((status, history["versions"][0]["version"].as_u64()), (200, Some(1)), "{who}: {history}");
    }
    let branches = states(&a, &at, &library, "org.matrix.msc3089.branch").await;
    assert!(
        branches.values().any(|b| b["name"] == "racine.txt" && b["active"] == true),
        "nothing deleted: {branches:?}"
    );

    // A non-member of the library gets the answer of a library that does not exist, or of a
    // room that is no library, whatever the path.
    let (status, _, refused) = api(&bot, Method::GET, Some(&mt), &files, None).await;
    assert_eq!(status, 403, "{refused}");
    let unknown = format!("/api/v1/libraries/{}/files", enc(&format!("!nowhere:{}", a.server_name())));
    for path in [unknown, format!("/api/v1/libraries/{}/files", enc(&room)), format!("{files}?path=Nowhere")] {
        let (status, _, text) = api(&bot, Method::GET, Some(&mt), &path, None).await;
        assert_eq!((status, text.as_str()), (403, refused.as_str()), "{path}");
    }
    let (status, e, _) = api(&bot, Method::GET, Some(&at), &format!("{files}?path=Nowhere"), None).await;
    assert_eq!((status, e["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "a member is told what is missing");

    // The same over commands in the linked room.
    let ask = |token: &str, text: &str, needle: &str| {
        let (token, text, needle) = (token.to_owned(), text.to_owned(), needle.to_owned());
        let (a, at, room) = (&a, &at, &room);
        async move {
            let since = a.sync_token(at).await;
            a.send_text(&token, room, &text).await;
            wait_notice(a, at, room, &since, &needle).await
        }
    };
    ask(&vt, "!doc rm racine.txt", "as an editor").await;
    ask(&vt, "!doc mkdir Nouveau", "as an editor").await;
    ask(&vt, "!doc mv Dossier/dossier.txt .", "as an editor").await;
    ask(&et, "!doc lock Dossier/dossier.txt", "as an editor").await;
    ask(&et, "!doc mkdir Dossier/Sous", "as an editor").await;
    ask(&mt, "!doc ls", "this needs you to be joined").await;
    ask(&mt, "!doc history racine.txt", "this needs you to be joined").await;
    ask(&vt, "!doc lock Dossier/dossier.txt", "» locked").await;
    ask(&vt, "!doc unlock Dossier/dossier.txt", "unlocked").await;
    ask(&et, "!doc lock racine.txt", "» locked").await;
    ask(&et, "!doc unlock racine.txt", "unlocked").await;
    ask(&vt, "!doc ls Dossier", "dossier.txt").await;
    ask(&et, "!doc history racine.txt", "v1").await;
    assert_eq!(states(&a, &at, &library, "m.space.child").await.len(), 1, "no folder made by the refused commands");
    let branches = states(&a, &at, &library, "org.matrix.msc3089.branch").await;
    assert!(branches.values().any(|b| b["name"] == "racine.txt" && b["active"] == true), "{branches:?}");
    // A file posted by a viewer of the library is not filed; by an editor it is.
    let since = a.sync_token(&at).await;
    post_file(&a, &vt, &room, "vi.txt", b"vi").await;
    wait_notice(&a, &at, &room, &since, "niveau d'éditeur").await;
    let since = a.sync_token(&at).await;
    post_file(&a, &et, &room, "ed.txt", b"ed").await;
    wait_notice(&a, &at, &room, &since, "« ed.txt »").await;
    let names: Vec<String> = states(&a, &at, &library, "org.matrix.msc3089.branch")
        .await
        .into_values()
        .filter_map(|b| b["name"].as_str().map(str::to_owned))
        .collect();
    assert!(names.contains(&"ed.txt".to_owned()) && !names.contains(&"vi.txt".to_owned()), "{names:?}");

    // A room linked to the library by someone who is not a member of it: not linked.
    let other = a.create_room(&mt, json!({ "preset": "public_chat", "name": "Ailleurs" })).await;
    let since = a.sync_token(&mt).await;
    a.invite(&mt, &other, &bot_id).await;
    wait_notice(&a, &mt, &other, &since, "Bonjour").await;
    let since = a.sync_token(&mt).await;
    a.put_state(&mt, &other, "org.hemicycle.library", "", json!({ "library": library })).await;
    wait_notice(&a, &mt, &other, &since, "Lien refusé").await;
    let since = a.sync_token(&mt).await;
    a.send_text(&mt, &other, "!doc ls").await;
    wait_notice(&a, &mt, &other, &since, "linked to no library").await;
    let since = a.sync_token(&mt).await;
    a.send_text(&mt, &other, &format!("!doc link {library}")).await;
    wait_notice(&a, &mt, &other, &since, "as an editor").await;
    // The same state written by an editor of the library links the room.
    let eds = a.create_room(&et, json!({ "preset": "public_chat", "name": "Chez ed" })).await;
    let since = a.sync_token(&et).await;
    a.invite(&et, &eds, &bot_id).await;
    wait_notice(&a, &et, &eds, &since, "Bonjour").await;
    let since = a.sync_token(&et).await;
    a.put_state(&et, &eds, "org.hemicycle.library", "", json!({ "library": library })).await;
    wait_notice(&a, &et, &eds, &since, "seront classés dans").await;
    let since = a.sync_token(&et).await;
    a.send_text(&et, &eds, "!doc ls").await;
    wait_notice(&a, &et, &eds, &since, "racine.txt").await;

    // Assignees and attendees must be members of the room; a hostile user id is refused.
    ask(&at, &format!("!task add \"Pour zed\" {zed}"), "is not a member of this room").await;
    ask(&at, &format!("!cal add \"Avec zed\" 2026-12-10 10:00 {zed}"), "is not a member of this room").await;
    ask(&at, &format!("!task add \"Pour vi\" {vi}"), "Task created").await;
    ask(&at, "!cal add \"Piège\" 2026-12-10 10:00 \"@a:b\r\nBEGIN:VALARM\"", "is not a Matrix user id").await;
    let tasks = format!("/api/v1/rooms/{}/tasks", enc(&room));
    let body = json!({ "title": "x", "assignees": [zed] }).to_string();
    let (status, e, _) = api(&bot, Method::POST, Some(&at), &tasks, Some(&body)).await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{e}");
    let body = json!({ "title": "x", "start": "2026-12-10T10:00", "attendees": [zed] }).to_string();
    let calendar = format!("/api/v1/rooms/{}/calendar", enc(&room));
    let (status, e, _) = api(&bot, Method::POST, Some(&at), &calendar, Some(&body)).await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{e}");
    let body = json!({ "title": "x", "start": "2026-12-10T10:00", "rrule": "FREQ=DAILY;WKST=MO\r\nBEGIN:VALARM" });
    let (status, e, _) = api(&bot, Method::POST, Some(&at), &calendar, Some(&body.to_string())).await;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{e}");

    // An invite from another server is rejected (the default: its own server only), and the
    // REST API answers the same for that room, a room that does not exist, and a room the
    // caller is not in.
    let remote = b.create_room(&bt, json!({ "preset": "public_chat" })).await;
    b.invite(&bt, &remote, &bot_id).await;
    // Node A records the invite, but does not put invites from other servers in appservice
    // transactions yet: the test delivers it as the homeserver would, with the hs_token.
    let invite = b
        .get_state(&bt, &remote)
        .await
        .into_iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bot_id.as_str())
        .expect("the bot's invite");
    let txn = json!({ "events": [invite] }).to_string();
    let (status, e, _) =
        api(&bot, Method::PUT, Some(HS_TOKEN), "/_matrix/app/v1/transactions/remote-invite", Some(&txn)).await;
    assert_eq!(status, 200, "{e}");
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&remote), enc(&bot_id));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, member) = b.call(Method::GET, Some(&bt), &path, None).await;
        if member["membership"] == "leave" {
            break;
        }
        assert_ne!(member["membership"], "join", "the bot joined a room a remote user invited it to");
        assert!(std::time::Instant::now() < deadline, "the bot did not reject the remote invite: {member}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, refused) = api(&bot, Method::GET, Some(&zt), &tasks, None).await;
    assert_eq!(status, 403, "zed is not in the work room: {refused}");
    for room in [remote.clone(), format!("!nowhere:{}", a.server_name())] {
        let (status, _, text) =
            api(&bot, Method::GET, Some(&zt), &format!("/api/v1/rooms/{}/tasks", enc(&room)), None).await;
        assert_eq!((status, text.as_str()), (403, refused.as_str()), "{room}");
    }
}

/// The bot's notices in `room` as `client` reads them back (`/messages`, decrypted by the
/// client), oldest first, each with whether it arrived encrypted and was decrypted.
async fn bot_notices_seen_by(client: &matrix_sdk::Client, room: &str, bot: &str) -> Vec<(String, bool)> {
    use matrix_sdk::{deserialized_responses::TimelineEventKind, room::MessagesOptions, ruma::OwnedRoomId};
    let id = OwnedRoomId::try_from(room).unwrap();
    let Some(room) = client.get_room(&id) else { return Vec::new() };
    let mut options = MessagesOptions::backward();
    options.limit = 200u32.into();
    let page = room.messages(options).await.expect("messages");
    let mut out = Vec::new();
    for event in page.chunk.into_iter().rev() {
        let raw = event.raw();
        if raw.get_field::<String>("sender").ok().flatten().as_deref() != Some(bot) {
            continue;
        }
        let kind = raw.get_field::<String>("type").ok().flatten().unwrap_or_default();
        if kind != "m.room.message" && kind != "m.room.encrypted" {
            continue;
        }
        let content: Value = raw.get_field("content").ok().flatten().unwrap_or(Value::Null);
        let decrypted = matches!(event.kind, TimelineEventKind::Decrypted(_));
        out.push((content["body"].as_str().unwrap_or("<undecryptable>").to_owned(), decrypted));
    }
    out
}

/// Syncs `client` until it has decrypted a notice of the bot containing `needle`; returns it.
async fn wait_encrypted_notice(client: &matrix_sdk::Client, room: &str, bot: &str, needle: &str) -> String {
    use hemicycle_federation_tests::scenarios::sdk_sync;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        sdk_sync(client, Duration::from_secs(2)).await;
        let seen = bot_notices_seen_by(client, room, bot).await;
        if let Some((body, _)) = seen.iter().rev().find(|(body, decrypted)| *decrypted && body.contains(needle)) {
            return body.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no decrypted notice with {needle:?}: {seen:#?}");
    }
}

/// The `createRoom` body of a private room encrypted from its creation, where the bot has
/// power 100 (its creator is not named: room v12 creators have unlimited power and servers
/// refuse them in `users`).
fn encrypted_room(name: Option<&str>, bot_id: &str, invite: &[&str]) -> Value {
    let mut body = json!({ "preset": "private_chat", "invite": invite,
                           "initial_state": [{ "type": "m.room.encryption", "state_key": "",
                                               "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
                           "power_level_content_override": { "users": { bot_id: 100 } } });
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    body
}

/// Sends `text` encrypted in `room` from `client`.
async fn send_encrypted(client: &matrix_sdk::Client, room: &str, text: &str) {
    use matrix_sdk::ruma::{events::room::message::RoomMessageEventContent, OwnedRoomId};
    let id = OwnedRoomId::try_from(room).unwrap();
    let room = client.get_room(&id).expect("the client knows the room");
    room.send(RoomMessageEventContent::text_plain(text)).await.expect("send encrypted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_bot_works_in_encrypted_rooms_across_nodes_and_restarts() {
    use hemicycle_federation_tests::scenarios::{sdk_sync, step};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let reg = registration(dir.path(), port);
    let regs = toml::Value::Array(vec![toml::Value::String(reg.display().to_string())]);
    let extra = [("appservices.registrations", regs)];
    let (a, b) = tokio::join!(Node::start_with("e2ee-a", None, &[], &extra), Node::start("e2ee-b", &[]));
    let config = Bot::write_config(dir.path(), port, &a, &reg, "2026-11-30T08:00:00Z");
    // alice operates node A; bob, of node B, lists a library with an OpenID token of his node.
    let operators = format!("operators = [{:?}]\nallowed_servers = [{:?}]\n", a.user_id("alice"), b.server_name());
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + operators.as_str()).unwrap();
    let mut bot = Bot::start(config, port);
    let bot_id = a.user_id("workspace");
    let data = dir.path().join("data");
    assert!(data.join("e2ee/session.json").exists(), "the bot's device session, in data_dir");

    let alice = a.client("alice").await;
    let bob = b.client("bob").await;
    step("alice's first sync", sdk_sync(&alice, Duration::ZERO)).await;
    step("bob's first sync", sdk_sync(&bob, Duration::ZERO)).await;
    step("alice's cross-signing", alice.encryption().bootstrap_cross_signing(None)).await.expect("cross-signing");
    step("bob's cross-signing", bob.encryption().bootstrap_cross_signing(None)).await.expect("cross-signing");
    let bob_id = bob.user_id().unwrap().to_owned();
    let at = alice.access_token().unwrap();
    let bt = bob.access_token().unwrap();

    // The bot's device is cross-signed by its own identity, and has a key backup.
    let keys = a.post(&at, "/_matrix/client/v3/keys/query", json!({ "device_keys": { bot_id.clone(): [] } })).await;
    assert!(keys["master_keys"][&bot_id].is_object(), "the bot has a cross-signing identity: {keys}");
    let devices = keys["device_keys"][&bot_id].as_object().expect("the bot's devices").clone();
    assert_eq!(devices.len(), 1, "one device: {keys}");
    let (_, device) = devices.iter().next().unwrap();
    let device_id = device["device_id"].as_str().unwrap();
    let signers = device["signatures"][&bot_id].as_object().unwrap();
    let signed_by_identity = signers.keys().filter(|k| !k.ends_with(&format!(":{device_id}"))).count();
    assert_eq!(signed_by_identity, 1, "the device is signed by the bot's self-signing key: {device}");
    let (status, backup) = a.call(Method::GET, Some(AS_TOKEN), "/_matrix/client/v3/room_keys/version", None).await;
    assert_eq!(status, 200, "the bot keeps a key backup: {backup}");

    let room = a.create_room(&at, encrypted_room(Some("Cabinet"), &bot_id, &[bob_id.as_str()])).await;
    b.join(&bt, &room, &[a.server_name()]).await;
    a.invite(&at, &room, &bot_id).await;
    // The greeting is encrypted too.
    wait_encrypted_notice(&alice, &room, &bot_id, "Bonjour").await;

    // A command from each node, read by the bot's device and answered encrypted.
    send_encrypted(&alice, &room, "!task add \"Note secrète\" due:2026-12-01").await;
    let reply = wait_encrypted_notice(&alice, &room, &bot_id, "Task created").await;
    let id = bracketed(&reply);
    assert_eq!(a.state_event(&at, &room, "org.hemicycle.task", &id).await["title"], "Note secrète");
    wait_encrypted_notice(&bob, &room, &bot_id, "Task created").await;
    send_encrypted(&bob, &room, "!tâche liste").await;
    wait_encrypted_notice(&bob, &room, &bot_id, "à faire").await;

    // Killed and restarted: the same device, its keys read back from data_dir; the sessions
    // alice and bob already shared with it still decrypt, its replies still reach them.
    bot.restart("2026-11-30T08:00:00Z");
    send_encrypted(&alice, &room, &format!("!task done {id}")).await;
    wait_encrypted_notice(&alice, &room, &bot_id, "Task done").await;
    send_encrypted(&bob, &room, "!task list").await;
    // Every notice bob has seen is searched, the list from before the restart too: only a
    // notice written after the task was done names it done.
    let listed = wait_encrypted_notice(&bob, &room, &bot_id, "Note secrète — done").await;
    assert!(listed.contains("done"), "{listed}");
    let keys = a.post(&at, "/_matrix/client/v3/keys/query", json!({ "device_keys": { bot_id.clone(): [] } })).await;
    assert_eq!(keys["device_keys"][&bot_id].as_object().map(|d| d.len()), Some(1), "still one device: {keys}");

    // Every notice of the bot decrypts for both members, each command answered once; none is in
    // the clear on the server.
    for (who, client) in [("alice", &alice), ("bob", &bob)] {
        let deadline = std::time::Instant::now() + WAIT;
        let seen = loop {
            sdk_sync(client, Duration::from_secs(2)).await;
            let seen = bot_notices_seen_by(client, &room, &bot_id).await;
            if seen.len() >= 5 || std::time::Instant::now() > deadline {
                break seen;
            }
        };
        assert_eq!(seen.len(), 5, "the greeting and four replies, for {who}: {seen:#?}");
        assert!(seen.iter().all(|(_, decrypted)| *decrypted), "{who} decrypts every notice: {seen:#?}");
    }
    let page = a.messages(&at, &room, "b", None, 200).await;
    let clear: Vec<&Value> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sender"] == bot_id.as_str() && e["type"] == "m.room.message")
        .collect();
    assert!(clear.is_empty(), "the bot never speaks in the clear in an encrypted room: {clear:#?}");

    // A library made from the encrypted room is encrypted; a file alice sends encrypted there is
    // filed with its key in an encrypted leaf, which bob (the other node) finds in the listing
    // and decrypts with his own device: the servers keep only ciphertext.
    send_encrypted(&alice, &room, "!doc new \"Dossiers chiffrés\"").await;
    let created = wait_encrypted_notice(&alice, &room, &bot_id, "Library created").await;
    let library = created.split_whitespace().find(|w| w.starts_with('!')).unwrap().to_owned();
    a.join(&at, &library, &[]).await;
    let encryption = a.state_event(&at, &library, "m.room.encryption", "").await;
    assert_eq!(encryption["algorithm"], "m.megolm.v1.aes-sha2", "the library is encrypted");
    a.invite(&at, &library, bob_id.as_str()).await;
    b.join(&bt, &library, &[a.server_name()]).await;
    step("alice's sync", sdk_sync(&alice, Duration::ZERO)).await;
    step("bob's sync", sdk_sync(&bob, Duration::ZERO)).await;
    let secret = b"Projet de loi de finances, version de travail".to_vec();
    let text_plain: mime::Mime = "text/plain".parse().unwrap();
    let work_room = alice.get_room(&matrix_sdk::ruma::OwnedRoomId::try_from(room.as_str()).unwrap()).unwrap();
    work_room
        .send_attachment("budget.txt", &text_plain, secret.clone(), matrix_sdk::attachment::AttachmentConfig::new())
        .await
        .expect("an encrypted file sent");
    wait_encrypted_notice(&alice, &room, &bot_id, "Classé dans la bibliothèque").await;
    let listing = format!("/api/v1/libraries/{}/files", enc(&library));
    let (status, files, text) =
        api_as(&bot, Method::GET, Some(&openid(&b, &bt, bob_id.as_str()).await), &listing, None).await;
    assert_eq!(status, 200, "{text}");
    let filed = files["files"].as_array().unwrap().iter().find(|f| f["name"] == "budget.txt").expect("filed").clone();
    let leaf_id = filed["event_id"].as_str().unwrap();
    let on_server = a.get(&at, &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&library), enc(leaf_id))).await;
    assert_eq!(on_server["type"], "m.room.encrypted", "the leaf (and the file's key) encrypted: {on_server}");
    let library_id = matrix_sdk::ruma::OwnedRoomId::try_from(library.as_str()).unwrap();
    let leaf_event = matrix_sdk::ruma::OwnedEventId::try_from(leaf_id).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let leaf: Value = loop {
        sdk_sync(&bob, Duration::from_secs(1)).await;
        let event = bob.get_room(&library_id).expect("bob knows the library").event(&leaf_event, None).await;
        if let Ok(event) = event {
            if event.encryption_info().is_some() {
                break event.raw().get_field("content").unwrap().unwrap();
            }
        }
        assert!(std::time::Instant::now() < deadline, "bob cannot decrypt the leaf");
    };
    assert_eq!(leaf["msgtype"], "m.file", "{leaf}");
    assert!(leaf["url"].is_null() && leaf["file"]["key"]["k"].is_string(), "the file's key kept: {leaf}");
    let file: matrix_sdk::ruma::events::room::EncryptedFile = serde_json::from_value(leaf["file"].clone()).unwrap();
    let media = file.url.as_str().strip_prefix("mxc://").unwrap();
    let ciphertext = reqwest::Client::new()
        .get(format!("{}/_matrix/client/v1/media/download/{media}", b.client_url()))
        .bearer_auth(&bt)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(ciphertext.len(), secret.len(), "the file reached bob's server");
    assert_ne!(ciphertext, secret, "the server holds ciphertext");
    let request = matrix_sdk::media::MediaRequestParameters {
        source: matrix_sdk::ruma::events::room::MediaSource::Encrypted(Box::new(file)),
        format: matrix_sdk::media::MediaFormat::File,
    };
    let bytes = bob.media().get_media_content(&request, false).await.expect("bob downloads and decrypts");
    assert_eq!(bytes, secret, "the same bytes, decrypted by bob's device");

    // The operator (alice, listed in `operators`) verifies the bot once, comparing the emojis
    // it writes in its log: her client then trusts its device, signed by the bot's identity;
    // bob, not an operator, is refused.
    let bot_user = matrix_sdk::ruma::OwnedUserId::try_from(bot_id.as_str()).unwrap();
    let device_id: matrix_sdk::ruma::OwnedDeviceId = device_id.into();
    let refused = bob.encryption().get_device(&bot_user, &device_id).await.unwrap().expect("bob sees the bot's device");
    let refused = refused.request_verification().await.expect("bob asks");
    let device = alice.encryption().get_device(&bot_user, &device_id).await.unwrap().expect("the bot's device");
    assert!(device.is_cross_signed_by_owner(), "the bot's device is signed by its own identity");
    let identity = alice.encryption().request_user_identity(&bot_user).await.unwrap().expect("the bot's identity");
    assert!(!identity.is_verified(), "not verified before the operator's step");
    let request = device.request_verification().await.expect("alice asks");
    compare_emojis(&alice, &request).await;
    let device = alice.encryption().get_device(&bot_user, &device_id).await.unwrap().unwrap();
    assert!(device.is_verified(), "alice's client trusts the bot's device once compared");
    identities_verified_each_other(&a, &alice, &bot_id).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !refused.is_cancelled() {
        sdk_sync(&bob, Duration::from_secs(1)).await;
        assert!(std::time::Instant::now() < deadline, "bob's request is refused: {:?}", refused.state());
    }

    // Key backup with recovery: once the library's room key is in the backup, the bot's
    // encryption store is lost. Restarted with the recovery key left in data_dir, it is a new
    // device signed by the same identity, and reads the leaf its lost
    // device encrypted: moving the file re-files it, which bob decrypts to the same bytes.
    assert!(data.join("recovery-key").exists(), "the recovery key, in data_dir");
    let (status, version) = a.call(Method::GET, Some(AS_TOKEN), "/_matrix/client/v3/room_keys/version", None).await;
    assert_eq!(status, 200, "{version}");
    let backed_up =
        format!("/_matrix/client/v3/room_keys/keys/{}?version={}", enc(&library), version["version"].as_str().unwrap());
    loop {
        let (status, keys) = a.call(Method::GET, Some(AS_TOKEN), &backed_up, None).await;
        if status == 200 && keys["sessions"].as_object().is_some_and(|s| !s.is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline + WAIT, "the library's room key is backed up: {status} {keys}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bot.kill();
    std::fs::remove_dir_all(data.join("e2ee")).unwrap();
    bot.restart("2026-11-30T08:00:00Z");
    // The new device publishes its keys, and the signature of the recovered identity, with its
    // first sync, which runs beside the bot: alice's client learns of them as the bot's device
    // list changes.
    let deadline = std::time::Instant::now() + WAIT;
    let device = loop {
        sdk_sync(&alice, Duration::from_secs(1)).await;
        let devices = alice.encryption().get_user_devices(&bot_user).await.unwrap();
        if let Some(device) = devices.devices().find(|d| d.device_id() != device_id && d.is_cross_signed_by_owner()) {
            break device;
        }
        assert!(std::time::Instant::now() < deadline, "a new device of the bot, signed by the same identity");
    };
    assert!(device.is_verified(), "trusted by the operator without a new comparison: she verified the identity");
    send_encrypted(&alice, &room, "!doc mkdir archives").await;
    wait_encrypted_notice(&alice, &room, &bot_id, "archives/").await;
    let (_, listing_root, _) =
        api_as(&bot, Method::GET, Some(&openid(&a, &at, &a.user_id("alice")).await), &listing, None).await;
    let archives = listing_root["folders"].as_array().unwrap()[0]["room_id"].as_str().unwrap().to_owned();
    a.join(&at, &archives, &[]).await;
    a.invite(&at, &archives, bob_id.as_str()).await;
    b.join(&bt, &archives, &[a.server_name()]).await;
    step("bob's sync", sdk_sync(&bob, Duration::ZERO)).await;
    send_encrypted(&alice, &room, "!doc mv budget.txt archives").await;
    wait_encrypted_notice(&alice, &room, &bot_id, "Moved").await;
    let (status, moved, text) = api_as(
        &bot,
        Method::GET,
        Some(&openid(&b, &bt, bob_id.as_str()).await),
        &format!("{listing}?path=archives"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let moved_id = moved["files"][0]["event_id"].as_str().expect("the file moved").to_owned();
    let archives_id = matrix_sdk::ruma::OwnedRoomId::try_from(archives.as_str()).unwrap();
    let moved_event = matrix_sdk::ruma::OwnedEventId::try_from(moved_id.as_str()).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let leaf: Value = loop {
        sdk_sync(&bob, Duration::from_secs(1)).await;
        if let Some(room) = bob.get_room(&archives_id) {
            if let Ok(event) = room.event(&moved_event, None).await {
                if event.encryption_info().is_some() {
                    break event.raw().get_field("content").unwrap().unwrap();
                }
            }
        }
        assert!(std::time::Instant::now() < deadline, "bob cannot decrypt the moved leaf");
    };
    let file: matrix_sdk::ruma::events::room::EncryptedFile = serde_json::from_value(leaf["file"].clone()).unwrap();
    let request = matrix_sdk::media::MediaRequestParameters {
        source: matrix_sdk::ruma::events::room::MediaSource::Encrypted(Box::new(file)),
        format: matrix_sdk::media::MediaFormat::File,
    };
    let bytes = bob.media().get_media_content(&request, false).await.expect("bob downloads the moved file");
    assert_eq!(bytes, secret, "the moved file decrypts to the same bytes");
    let seen = bot_notices_seen_by(&alice, &room, &bot_id).await;
    assert!(seen.iter().all(|(_, decrypted)| *decrypted), "every notice still decrypts for alice: {seen:#?}");
}

/// The operator's side of an emoji verification with the bot, `request` being theirs: started
/// once the bot accepts, confirmed once the emojis show (the bot writes them in its log), then
/// synced until done.
async fn compare_emojis(
    operator: &matrix_sdk::Client,
    request: &matrix_sdk::encryption::verification::VerificationRequest,
) {
    use hemicycle_federation_tests::scenarios::sdk_sync;
    let deadline = std::time::Instant::now() + WAIT;
    let sas = loop {
        sdk_sync(operator, Duration::from_secs(1)).await;
        if request.is_ready() {
            break request.start_sas().await.expect("start").expect("emoji verification");
        }
        assert!(!request.is_cancelled() && std::time::Instant::now() < deadline, "the bot accepts the request");
    };
    loop {
        sdk_sync(operator, Duration::from_secs(1)).await;
        if sas.can_be_presented() {
            assert!(sas.emoji().is_some(), "emojis to compare");
            sas.confirm().await.expect("confirm");
            break;
        }
        assert!(!sas.is_cancelled() && std::time::Instant::now() < deadline, "the keys are exchanged");
    }
    while !sas.is_done() {
        sdk_sync(operator, Duration::from_secs(1)).await;
        assert!(!sas.is_cancelled() && std::time::Instant::now() < deadline, "the verification completes");
    }
}

/// After an operator's emoji verification: their client sees the bot's identity verified (its
/// master key signed by their user-signing key, as a verification between two people leaves
/// it), and the bot has signed the operator's master key with its own user-signing key (what
/// the bot's user reads of the operator's keys).
async fn identities_verified_each_other(node: &Node, operator: &matrix_sdk::Client, bot_id: &str) {
    use hemicycle_federation_tests::scenarios::sdk_sync;
    let bot_user = matrix_sdk::ruma::OwnedUserId::try_from(bot_id).unwrap();
    let operator_id = operator.user_id().unwrap().to_string();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        sdk_sync(operator, Duration::from_secs(1)).await;
        let identity = operator.encryption().get_user_identity(&bot_user).await.unwrap();
        if identity.is_some_and(|identity| identity.is_verified()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{operator_id}'s client sees the bot's identity verified");
    }
    // The bot's own user-signing key comes only to the bot, asked with its own keys.
    let query = json!({ "device_keys": { operator_id.clone(): [], bot_id: [] } });
    loop {
        let (status, keys) =
            node.call(Method::POST, Some(AS_TOKEN), "/_matrix/client/v3/keys/query", Some(&query)).await;
        assert_eq!(status, 200, "{keys}");
        let usk = keys["user_signing_keys"][bot_id]["keys"].as_object().and_then(|k| k.keys().next().cloned());
        let signed = keys["master_keys"][&operator_id]["signatures"][bot_id].as_object();
        if usk.is_some_and(|usk| signed.is_some_and(|s| s.contains_key(&usk))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the bot signs {operator_id}'s master key: {keys}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An operator verifies the bot from a direct chat with it (Element's *Verify* on the bot's
/// profile: an in-room request, encrypted as the chat is): the bot accepts, the emojis are
/// compared, and the two identities end verified by each other, as with a request to its device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_verifies_the_bot_in_a_direct_chat() {
    use hemicycle_federation_tests::scenarios::{sdk_sync, step};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let reg = registration(dir.path(), port);
    let regs = toml::Value::Array(vec![toml::Value::String(reg.display().to_string())]);
    let a = Node::start_with("e2ee-dm-verify", None, &[], &[("appservices.registrations", regs)]).await;
    let config = Bot::write_config(dir.path(), port, &a, &reg, "2026-11-30T08:00:00Z");
    let operators = format!("operators = [{:?}]\n", a.user_id("carol"));
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + operators.as_str()).unwrap();
    let _bot = Bot::start(config, port);
    let bot_id = a.user_id("workspace");
    let bot_user = matrix_sdk::ruma::OwnedUserId::try_from(bot_id.as_str()).unwrap();

    let carol = a.client("carol").await;
    step("carol's first sync", sdk_sync(&carol, Duration::ZERO)).await;
    step("carol's cross-signing", carol.encryption().bootstrap_cross_signing(None)).await.expect("cross-signing");
    let dm = step("carol opens a direct chat", carol.create_dm(&bot_user)).await.expect("a direct chat");
    let dm = dm.room_id().to_string();
    wait_encrypted_notice(&carol, &dm, &bot_id, "Bonjour").await;
    let identity = carol.encryption().request_user_identity(&bot_user).await.unwrap().expect("the bot's identity");
    assert!(!identity.is_verified(), "not verified before the comparison");
    let request = identity.request_verification().await.expect("carol asks in the direct chat");
    assert!(request.room_id().is_some_and(|room| room.as_str() == dm), "an in-room request, in the direct chat");
    compare_emojis(&carol, &request).await;
    identities_verified_each_other(&a, &carol, &bot_id).await;
}

/// The bot's device refused every sync (`/sync` and sliding sync answered with a 500, by a proxy
/// between the bot and its homeserver): the bot starts all the same and serves the rooms in the
/// clear; in an encrypted room, where it may speak only through its device, a command sent in
/// the clear is carried out but not answered (never in the clear), and does not hold up the
/// bot's transactions, so a room in the clear invited after it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_cannot_sync_holds_up_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let reg = registration(dir.path(), port);
    let regs = toml::Value::Array(vec![toml::Value::String(reg.display().to_string())]);
    let a = Node::start_with("e2ee-refused", None, &[], &[("appservices.registrations", regs)]).await;
    let proxy = Proxy::start_to(a.client_url().to_owned(), "/_matrix/client/").await;
    proxy.refuse("/sync");
    let config = Bot::write_config(dir.path(), port, &a, &reg, "2026-11-30T08:00:00Z");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(&format!("{:?}", a.client_url()), &format!("\"http://127.0.0.1:{}\"", proxy.port));
    std::fs::write(&config, text).unwrap();
    let _bot = Bot::start(config, port);
    let bot_id = a.user_id("workspace");
    // alice creates the rooms: a creator is never listed in `users` (room version 12).
    let (_, at) = a.register("alice").await;

    let secret = a.create_room(&at, encrypted_room(None, &bot_id, &[bot_id.as_str()])).await;
    a.wait_timeline_until(&at, &secret, None, WAIT, |events| {
        events.iter().any(|e| e["sender"] == bot_id.as_str() && e["type"] == "m.room.member")
    })
    .await;
    a.send_text(&at, &secret, "!task add \"Sans réponse\"").await;
    let room = a
        .create_room(
            &at,
            json!({ "preset": "public_chat", "power_level_content_override": { "users": { bot_id.clone(): 100 } } }),
        )
        .await;
    let since = a.sync_token(&at).await;
    a.invite(&at, &room, &bot_id).await;
    // The greeting in the encrypted room waited for the device once (30 s), no longer.
    a.wait_timeline_until(&at, &room, Some(&since), WAIT * 3, |events| {
        events.iter().any(|e| e["content"]["body"].as_str().is_some_and(|b| b.contains("Bonjour")))
    })
    .await;
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!task list").await;
    wait_notice(&a, &at, &room, &since, "No tasks").await;
    let tasks = states(&a, &at, &secret, "org.hemicycle.task").await;
    assert_eq!(tasks.len(), 1, "the command in the encrypted room was carried out: {tasks:#?}");
    let page = a.messages(&at, &secret, "b", None, 200).await;
    let clear = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sender"] == bot_id.as_str() && e["type"] == "m.room.message")
        .count();
    assert_eq!(clear, 0, "the bot never speaks in the clear in an encrypted room: {page}");
}

/// An OpenID token past its lifetime (the node's token clock moved past it, through the
/// server's `FAULT_HEMICYCLE_TOKEN_CLOCK_OFFSET_FILE` hook) is refused by the REST API with
/// 401 M_UNKNOWN_TOKEN, as its homeserver no longer confirms it; one within it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_openid_token_is_refused_by_the_rest_api() {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("token-clock-offset-ms");
    std::fs::write(&clock, "0").unwrap();
    // This test's own process: the node it starts inherits the hook.
    std::env::set_var("FAULT_HEMICYCLE_TOKEN_CLOCK_OFFSET_FILE", &clock);
    let port = free_port();
    let reg = registration(dir.path(), port);
    let regs = toml::Value::Array(vec![toml::Value::String(reg.display().to_string())]);
    let a = Node::start_with("openid-expiry", None, &[], &[("appservices.registrations", regs)]).await;
    let bot = Bot::start(Bot::write_config(dir.path(), port, &a, &reg, "2026-11-30T08:00:00Z"), port);
    let bot_id = a.user_id("workspace");
    let (alice, at) = a.register("alice").await;
    let room = a
        .create_room(
            &at,
            json!({ "preset": "private_chat", "power_level_content_override": { "users": { bot_id.clone(): 100 } } }),
        )
        .await;
    let since = a.sync_token(&at).await;
    a.invite(&at, &room, &bot_id).await;
    wait_notice(&a, &at, &room, &since, "Bonjour").await;
    let tasks = format!("/api/v1/rooms/{}/tasks", enc(&room));

    let fresh = openid(&a, &at, &alice).await;
    let (status, _, text) = api_as(&bot, Method::GET, Some(&fresh), &tasks, None).await;
    assert_eq!(status, 200, "a token within its lifetime: {text}");
    let unused = openid(&a, &at, &alice).await;
    // An hour and a minute later on the node's token clock (the lifetime is an hour).
    std::fs::write(&clock, (3_660_000u64).to_string()).unwrap();
    let (status, body, text) = api_as(&bot, Method::GET, Some(&unused), &tasks, None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "an expired token: {text}");
    let (status, _, text) = api_as(&bot, Method::GET, Some(&openid(&a, &at, &alice).await), &tasks, None).await;
    assert_eq!(status, 200, "a new token works: {text}");
}

/// The bot's device killed (SIGKILL) after an encrypted command was received and carried out
/// but before its reply reached the homeserver (the reply held by a proxy between the bot and
/// its homeserver): after a restart the command is answered, once, decryptably, and carried
/// out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_command_cut_short_by_a_crash_is_answered_once_after_restart() {
    use hemicycle_federation_tests::scenarios::{sdk_sync, step};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let reg = registration(dir.path(), port);
    let regs = toml::Value::Array(vec![toml::Value::String(reg.display().to_string())]);
    let a = Node::start_with("e2ee-crash", None, &[], &[("appservices.registrations", regs)]).await;
    let proxy = Proxy::start_to(a.client_url().to_owned(), "/_matrix/client/").await;
    let config = Bot::write_config(dir.path(), port, &a, &reg, "2026-11-30T08:00:00Z");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(&format!("{:?}", a.client_url()), &format!("\"http://127.0.0.1:{}\"", proxy.port));
    std::fs::write(&config, text).unwrap();
    let mut bot = Bot::start(config, port);
    let bot_id = a.user_id("workspace");

    let alice = a.client("alice").await;
    step("alice's first sync", sdk_sync(&alice, Duration::ZERO)).await;
    let at = alice.access_token().unwrap();
    let room = a.create_room(&at, encrypted_room(Some("Crash"), &bot_id, &[])).await;
    a.invite(&at, &room, &bot_id).await;
    wait_encrypted_notice(&alice, &room, &bot_id, "Bonjour").await;

    // The reply to the command is held on its way to the homeserver; the bot is killed then.
    let mut held = proxy.hold("/send/m.room.encrypted/reply-");
    send_encrypted(&alice, &room, "!task add \"Après la panne\"").await;
    let reply = tokio::time::timeout(WAIT, held.recv()).await.expect("the bot replies").expect("held");
    bot.kill();
    drop(reply);
    let tasks = states(&a, &at, &room, "org.hemicycle.task").await;
    assert_eq!(tasks.len(), 1, "the command was carried out before the crash: {tasks:#?}");
    assert!(
        bot_notices_seen_by(&alice, &room, &bot_id).await.iter().all(|(body, _)| !body.contains("Task created")),
        "no reply before the restart"
    );

    bot.restart("2026-11-30T08:00:00Z");
    let created = wait_encrypted_notice(&alice, &room, &bot_id, "Task created").await;
    assert!(created.contains("Après la panne"), "{created}");
    // Restarted once more (cleanly handled by then): nothing is handled again.
    bot.restart("2026-11-30T08:00:00Z");
    send_encrypted(&alice, &room, "!task list").await;
    wait_encrypted_notice(&alice, &room, &bot_id, "— to do").await;
    let seen = bot_notices_seen_by(&alice, &room, &bot_id).await;
    let replies = seen.iter().filter(|(body, _)| body.contains("Task created")).count();
    assert_eq!(replies, 1, "the command answered once: {seen:#?}");
    assert!(seen.iter().all(|(_, decrypted)| *decrypted), "every notice decrypts: {seen:#?}");
    let tasks = states(&a, &at, &room, "org.hemicycle.task").await;
    assert_eq!(tasks.len(), 1, "carried out once: {tasks:#?}");

    // The direct chat the bot opens to send a feed link (a room it keeps no view of), made
    // encrypted by alice: the next link is sent there encrypted, never in the clear.
    send_encrypted(&alice, &room, "!cal feed").await;
    wait_encrypted_notice(&alice, &room, &bot_id, "direct").await;
    step("alice's sync", sdk_sync(&alice, Duration::ZERO)).await;
    let invited = alice.invited_rooms();
    assert_eq!(invited.len(), 1, "the bot's direct chat");
    invited[0].join().await.expect("alice joins the direct chat");
    let dm = invited[0].room_id().to_string();
    let encryption = format!("/_matrix/client/v3/rooms/{}/state/m.room.encryption/", enc(&dm));
    a.put(&at, &encryption, json!({ "algorithm": "m.megolm.v1.aes-sha2" })).await;
    step("alice's sync", sdk_sync(&alice, Duration::ZERO)).await;
    send_encrypted(&alice, &room, "!cal feed").await;
    wait_encrypted_notice(&alice, &dm, &bot_id, ".ics?token=").await;
    let seen = bot_notices_seen_by(&alice, &dm, &bot_id).await;
    assert_eq!(seen.len(), 2, "two links: {seen:#?}");
    assert!(!seen[0].1 && seen[1].1, "the first in the clear, the second encrypted: {seen:#?}");
}

/// matrix-widget-api's client side, read from the matrix-js-sdk install (`./scripts/test`).
fn widget_api_script() -> String {
    let sdk = std::env::var("MATRIX_JS_SDK").unwrap_or_else(|_| {
        panic!("MATRIX_JS_SDK is not set: run the tests with ./scripts/test, which installs matrix-js-sdk")
    });
    let widget_api = Path::new(&sdk).join("node_modules/matrix-widget-api/dist/api.js");
    std::fs::read_to_string(&widget_api).unwrap_or_else(|e| panic!("{}: {e}", widget_api.display()))
}

/// Serves, on an origin of its own, a host page (js/widget-host.js on matrix-widget-api's
/// `ClientWidgetApi`) framing the widget `widget_id` of `room` as `user` sees it; returns its URL.
async fn widget_host(node: &Node, token: &str, user: &str, room: &str, widget_id: &str) -> String {
    let widget = node.state_event(token, room, "im.vector.modular.widgets", widget_id).await;
    let path = format!("/_matrix/client/v3/user/{}/openid/request_token", enc(user));
    let openid = node.post(token, &path, json!({})).await;
    let config = json!({
        "homeserver": node.client_url(), "accessToken": token, "room": room, "user": user, "lang": "en",
        "widget": widget, "widgetId": widget_id, "openid": openid,
    });
    let host_script = format!(
        "const CONFIG = {config};\n{}",
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("js/widget-host.js")).unwrap()
    );
    let host_page = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>host</title></head><body>\
                     <iframe id=\"widget\" title=\"Widget\" style=\"width:100%;height:800px\"></iframe>\
                     <script src=\"api.js\"></script><script src=\"host.js\"></script></body></html>";
    let widget_api = widget_api_script();
    let script_type = || [(axum::http::header::CONTENT_TYPE, "text/javascript")];
    let app = axum::Router::new()
        .route("/host.html", axum::routing::get(move || async move { axum::response::Html(host_page) }))
        .route("/api.js", axum::routing::get(move || async move { (script_type(), widget_api) }))
        .route("/host.js", axum::routing::get(move || async move { (script_type(), host_script) }))
        .route("/favicon.ico", axum::routing::get(|| async { axum::http::StatusCode::NO_CONTENT }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_url = format!("http://127.0.0.1:{}/host.html", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    host_url
}

/// Runs `js/{script}` (a widget-browser.mjs script) against the host page `host_url` with `vars`;
/// returns what it saw, after checking it saw no script error nor policy violation.
async fn browse(script: &str, host_url: &str, vars: &[(&str, &str)]) -> Value {
    let playwright = std::env::var("PLAYWRIGHT_CORE").unwrap_or_else(|_| {
        panic!("PLAYWRIGHT_CORE is not set: run the tests with ./scripts/test, which installs playwright-core")
    });
    let mut command = Command::new("node");
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("js").join(script));
    command.env("HOST_URL", host_url).env("PLAYWRIGHT_CORE", playwright);
    for (name, value) in vars {
        command.env(name, value);
    }
    let out = tokio::task::spawn_blocking(move || command.output().expect("run node")).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "browser run failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the browser script printed no JSON ({e}): {stdout}"));
    assert_eq!(seen["errors"], json!([]), "no script error nor policy violation: {seen}");
    assert_eq!(seen["lang"], "en", "the client's language, through the URL template: {seen}");
    // On a 375 px phone screen, what the view shows last: every control named, nothing wider
    // than the screen, and every string in both languages.
    assert_eq!(seen["unlabelled"], json!([]), "controls without an accessible name: {seen}");
    assert!(seen["overflow"].as_i64().is_some_and(|px| px <= 0), "wider than a phone's screen: {seen}");
    assert_eq!(seen["missingWords"], json!([]), "strings in one language only: {seen}");
    seen
}

/// The task board in Debian's Chromium (playwright-core), framed by a host page built on
/// matrix-widget-api's client side (`ClientWidgetApi`: the real widget protocol, capabilities
/// and OpenID): the board made by `!workspace widgets`, a task made in the board appears as room
/// state and in `!task list`, a task made in the chat appears on the board live, tasks moved on
/// the board (dragged, or with the list) change their room state, and a task's description, due
/// date and assignee edited on the board are room state and show in `!task list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_board_widget_works_in_a_widget_api_host() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let reg = registration(dir.path(), port);
    let regs = toml::Value::Array(vec![toml::Value::String(reg.display().to_string())]);
    let a = Node::start_with("widget-a", None, &[], &[("appservices.registrations", regs)]).await;
    let bot = Bot::start(Bot::write_config(dir.path(), port, &a, &reg, "2026-11-30T08:00:00Z"), port);
    let bot_id = a.user_id("workspace");
    let (alice, at) = a.register("alice").await;
    let (bob, bt) = a.register("bob").await;
    let room = a
        .create_room(
            &at,
            json!({ "preset": "private_chat", "name": "Bureau", "invite": [bob.clone()],
                    "power_level_content_override": { "users": { bot_id.clone(): 100 } } }),
        )
        .await;
    a.join(&bt, &room, &[]).await;
    let since = a.sync_token(&at).await;
    a.invite(&at, &room, &bot_id).await;
    wait_notice(&a, &at, &room, &since, "Bonjour").await;

    // Bob (level 0) may not add widgets; alice may.
    let since = a.sync_token(&at).await;
    a.send_text(&bt, &room, "!workspace widgets").await;
    wait_notice(&a, &at, &room, &since, "does not allow adding widgets").await;
    let (status, _) = a
        .call(
            Method::GET,
            Some(&at),
            &format!("/_matrix/client/v3/rooms/{}/state/im.vector.modular.widgets/org.hemicycle.tasks", enc(&room)),
            None,
        )
        .await;
    assert_eq!(status, 404, "nothing written for bob");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!workspace widgets").await;
    wait_notice(&a, &at, &room, &since, "Widgets added").await;
    let widget = a.state_event(&at, &room, "im.vector.modular.widgets", "org.hemicycle.tasks").await;
    assert_eq!(widget["type"], "m.custom", "{widget}");
    assert!(widget["url"].as_str().unwrap().starts_with(&format!("{}/widgets/tasks?", bot.url())), "{widget}");
    let layout = a.state_event(&at, &room, "io.element.widgets.layout", "").await;
    assert_eq!(layout["widgets"]["org.hemicycle.tasks"]["container"], "top", "{layout}");
    assert_eq!(layout["widgets"]["org.hemicycle.calendar"]["container"], "top", "{layout}");

    let host_url = widget_host(&a, &at, &alice, &room, "org.hemicycle.tasks").await;
    let seen = browse(
        "widget-board.mjs",
        &host_url,
        &[("TITLE_FROM_BOARD", "Note du tableau"), ("TITLE_FROM_CHAT", "Depuis le chat"), ("ASSIGNEE", &bob)],
    )
    .await;
    let capabilities = seen["capabilities"].to_string();
    assert!(capabilities.contains("org.matrix.msc2762.receive.state_event:org.hemicycle.task"), "{seen}");

    // What the board did is room state, and the commands see it.
    let board_task = seen["boardTask"].as_str().unwrap();
    let chat_task = seen["chatTask"].as_str().unwrap();
    let made = a.state_event(&at, &room, "org.hemicycle.task", board_task).await;
    assert_eq!((made["title"].as_str(), made["creator"].as_str()), (Some("Note du tableau"), Some(alice.as_str())));
    assert_eq!(made["progress"], "in-process", "dragged to in progress: {made}");
    assert_eq!(made["description"], "Chiffrer les trois scénarios", "{made}");
    assert_eq!((made["due"].as_str(), made["showWithoutTime"].as_bool()), (Some("2026-12-15T00:00:00"), Some(true)));
    assert_eq!(made["participants"].as_object().unwrap().keys().collect::<Vec<_>>(), [&bob], "{made}");
    let moved = a.state_event(&at, &room, "org.hemicycle.task", chat_task).await;
    assert_eq!((moved["title"].as_str(), moved["progress"].as_str()), (Some("Depuis le chat"), Some("completed")));
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!task list").await;
    let listed = wait_notice(&a, &at, &room, &since, "Note du tableau").await;
    let line = listed.lines().find(|l| l.contains("Note du tableau")).unwrap();
    assert!(line.contains("in progress") && line.contains("2026-12-15"), "{listed}");
    assert!(line.contains(&bob) && line.contains("Chiffrer les trois scénarios"), "{listed}");
    let line = listed.lines().find(|l| l.contains("Depuis le chat")).unwrap();
    assert!(line.contains("done") && line.contains(&bob) && line.contains("Relu en réunion"), "{listed}");
    drop(bot);
}

/// The full state of `room`: (type, state_key) → event id, to tell a rewrite from a keep.
async fn state_ids(node: &Node, token: &str, room: &str) -> std::collections::BTreeMap<(String, String), String> {
    let (status, state) =
        node.call(Method::GET, Some(token), &format!("/_matrix/client/v3/rooms/{}/state", enc(room)), None).await;
    assert_eq!(status, 200, "{state}");
    state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let key = (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned());
            (key, e["event_id"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The calendar and the library browser in Debian's Chromium, in the same widget-API host as the
/// board. Their widgets come by themselves: a room's first calendar entry adds the calendar's,
/// `!doc new` the library's (same state and layout as `!workspace widgets`, which then rewrites
/// neither). The calendar: an entry made in the chat shows (with its recurrences) in the month
/// and week views, one made in the widget is room state and in `!cal list`, an RSVP made there is
/// in the entry's state, one sent in the chat appears live. The library: a folder made in the
/// chat shows, a folder and a file (two versions, locked) made there are in `!doc ls`, an
/// encrypted attachment filed by the bot appears live and is downloaded and decrypted in the
/// browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calendar_and_library_widgets_work_in_a_widget_api_host() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let reg = registration(dir.path(), port);
    let regs = toml::Value::Array(vec![toml::Value::String(reg.display().to_string())]);
    let a = Node::start_with("views-a", None, &[], &[("appservices.registrations", regs)]).await;
    let bot = Bot::start(Bot::write_config(dir.path(), port, &a, &reg, "2026-11-30T08:00:00Z"), port);
    let bot_id = a.user_id("workspace");
    let (alice, at) = a.register("alice").await;
    let room = a
        .create_room(
            &at,
            json!({ "preset": "private_chat", "name": "Bureau",
                    "power_level_content_override": { "users": { bot_id.clone(): 100 } } }),
        )
        .await;
    let since = a.sync_token(&at).await;
    a.invite(&at, &room, &bot_id).await;
    wait_notice(&a, &at, &room, &since, "Bonjour").await;
    let widget_state = |id: &str| ("im.vector.modular.widgets".to_owned(), id.to_owned());

    // The room's first entry makes its calendar, and its widget.
    let before = state_ids(&a, &at, &room).await;
    assert!(!before.contains_key(&widget_state("org.hemicycle.calendar")), "no calendar widget yet");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!cal add \"Comité budgétaire\" 2026-12-02 10:00 repeat:weekly count:3").await;
    let added = wait_notice(&a, &at, &room, &since, "Comité budgétaire").await;
    let chat_entry = bracketed(&added);
    let calendar = a.state_event(&at, &room, "im.vector.modular.widgets", "org.hemicycle.calendar").await;
    assert!(calendar["url"].as_str().unwrap().starts_with(&format!("{}/widgets/calendar?", bot.url())), "{calendar}");
    let layout = a.state_event(&at, &room, "io.element.widgets.layout", "").await;
    assert_eq!(layout["widgets"]["org.hemicycle.calendar"]["container"], "top", "{layout}");

    // `!doc new` makes a library, linked here, and its browser.
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc new \"Dossiers\"").await;
    let made = wait_notice(&a, &at, &room, &since, "Library created").await;
    let library = made.split(" : ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    a.join(&at, &library, &[]).await;
    let browser = a.state_event(&at, &room, "im.vector.modular.widgets", "org.hemicycle.library").await;
    assert_eq!(browser["data"]["library"], library.as_str(), "{browser}");
    let url = browser["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/widgets/library?", bot.url())) && url.contains("&library=%21"), "{browser}");
    let layout = a.state_event(&at, &room, "io.element.widgets.layout", "").await;
    assert_eq!(layout["widgets"]["org.hemicycle.library"]["container"], "top", "{layout}");

    // Adding them again rewrites neither (the board's is new).
    let before = state_ids(&a, &at, &room).await;
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!workspace widgets").await;
    let answer = wait_notice(&a, &at, &room, &since, "Widgets added").await;
    assert!(answer.contains("tasks, calendar, library"), "{answer}");
    let after = state_ids(&a, &at, &room).await;
    for id in ["org.hemicycle.calendar", "org.hemicycle.library"] {
        assert_eq!(before.get(&widget_state(id)), after.get(&widget_state(id)), "{id} kept as it was");
    }
    assert!(after.contains_key(&widget_state("org.hemicycle.tasks")));

    // The calendar.
    let host_url = widget_host(&a, &at, &alice, &room, "org.hemicycle.calendar").await;
    let seen = browse(
        "widget-calendar.mjs",
        &host_url,
        &[("CHAT_TITLE", "Comité budgétaire"), ("WIDGET_TITLE", "Point d'équipe")],
    )
    .await;
    assert_eq!(seen["novemberCount"], 1, "December 2nd in November's last week: {seen}");
    assert_eq!(seen["decemberCount"], 3, "its three weekly occurrences: {seen}");
    assert_eq!((seen["weekCount"].as_u64(), seen["weekDays"].as_u64()), (Some(1), Some(7)), "{seen}");
    assert_eq!(seen["chatEntry"], chat_entry.as_str(), "{seen}");
    let capabilities = seen["capabilities"].to_string();
    assert!(capabilities.contains("receive.state_event:org.hemicycle.calendar.event"), "{seen}");
    let widget_entry = seen["widgetEntry"].as_str().unwrap();
    let entry = a.state_event(&at, &room, "org.hemicycle.calendar.event", widget_entry).await;
    assert_eq!((entry["title"].as_str(), entry["creator"].as_str()), (Some("Point d'équipe"), Some(alice.as_str())));
    assert_eq!(entry["dtstart"], json!({ "tzid": "Europe/Paris", "value": "20261203T140000" }), "{entry}");
    assert_eq!(entry["rrule"], "FREQ=WEEKLY;COUNT=2", "{entry}");
    assert_eq!(entry["location"], "Salle 4", "{entry}");
    let answered = a.state_event(&at, &room, "org.hemicycle.calendar.event", &chat_entry).await;
    assert_eq!(answered["attendees"][&alice]["rsvp"], "yes", "{answered}");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!cal list").await;
    let listed = wait_notice(&a, &at, &room, &since, "Point d'équipe").await;
    assert!(listed.contains("Point d'équipe — 2026-12-03 14:00"), "{listed}");
    assert!(listed.contains("Point d'équipe — 2026-12-10 14:00"), "the second time: {listed}");
    assert!(listed.contains("Café du vendredi"), "{listed}");

    // The library.
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc mkdir Archives").await;
    wait_notice(&a, &at, &room, &since, "Archives").await;
    let host_url = widget_host(&a, &at, &alice, &room, "org.hemicycle.library").await;
    let seen = browse(
        "widget-library.mjs",
        &host_url,
        &[
            ("CHAT_FOLDER", "Archives"),
            ("WIDGET_FOLDER", "Rapports"),
            ("HOMESERVER", a.client_url()),
            ("ACCESS_TOKEN", &at),
            ("WORK_ROOM", &room),
        ],
    )
    .await;
    assert_eq!(seen["versions"].as_array().map(Vec::len), Some(2), "{seen}");
    assert!(seen["note"].as_str().unwrap().contains("locked"), "{seen}");
    assert_eq!(seen["secretMatches"], true, "decrypted in the browser: {seen}");
    assert_eq!(seen["downloadName"], "secret.txt", "{seen}");
    let since = a.sync_token(&at).await;
    a.send_text(&at, &room, "!doc ls").await;
    let listed = wait_notice(&a, &at, &room, &since, "note.txt").await;
    for line in ["📁 Archives/", "📁 Rapports/", "note.txt — v2", "(locked)", "secret.txt — v1"] {
        assert!(listed.contains(line), "{line} in {listed}");
    }
    let branches = states(&a, &at, &library, "org.matrix.msc3089.branch").await;
    let note = branches.values().find(|b| b["name"] == "note.txt" && b["active"] == true).unwrap();
    assert_eq!((note["version"].as_u64(), note["locked"].as_bool()), (Some(2), Some(true)), "{note}");
    drop(bot);
}

/// Starts a node with the bot registered, alice (who gives the bot power 100) and a room the
/// bot has joined; returns them with the bot.
async fn widget_room(name: &str, dir: &Path) -> (Node, Bot, String, String, String) {
    let port = free_port();
    let reg = registration(dir, port);
    let regs = toml::Value::Array(vec![toml::Value::String(reg.display().to_string())]);
    let a = Node::start_with(name, None, &[], &[("appservices.registrations", regs)]).await;
    let bot = Bot::start(Bot::write_config(dir, port, &a, &reg, "2026-11-30T08:00:00Z"), port);
    let bot_id = a.user_id("workspace");
    let (alice, at) = a.register("alice").await;
    let room = a
        .create_room(
            &at,
            json!({ "preset": "private_chat", "name": "Bureau",
                    "power_level_content_override": { "users": { bot_id.clone(): 100 } } }),
        )
        .await;
    let since = a.sync_token(&at).await;
    a.invite(&at, &room, &bot_id).await;
    wait_notice(&a, &at, &room, &since, "Bonjour").await;
    (a, bot, alice, at, room)
}

/// Sends `command` in `room` and waits for the bot's notice containing `needle`.
async fn command(node: &Node, token: &str, room: &str, command: &str, needle: &str) -> String {
    let since = node.sync_token(token).await;
    node.send_text(token, room, command).await;
    wait_notice(node, token, room, &since, needle).await
}

/// The calendar widget edits, deletes and skips (one occurrence of a recurring entry) through
/// the same operations as `!cal edit`, `!cal rm` and `!cal skip` and the REST API: what is done
/// in the widget (on a 375 px screen, the skip with the keyboard) is room state and in `!cal
/// list`, and what the commands do shows in the open widget live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calendar_widget_edits_deletes_and_skips_occurrences() {
    let dir = tempfile::tempdir().unwrap();
    let (a, bot, alice, at, room) = widget_room("cal-edit-a", dir.path()).await;
    let committee = bracketed(
        &command(&a, &at, &room, "!cal add \"Comité budgétaire\" 2026-12-02 10:00 repeat:weekly count:3", "Comité")
            .await,
    );
    let review = bracketed(&command(&a, &at, &room, "!cal add \"Revue\" 2026-12-04 09:00", "Revue").await);
    let coffee = bracketed(&command(&a, &at, &room, "!cal add \"Café\" 2026-12-03 08:30", "Café").await);

    // The API refuses what does not exist, and a skip that names no occurrence; nothing changes.
    let entry = |id: &str| format!("/api/v1/rooms/{}/calendar/{}", enc(&room), enc(id));
    let before = a.state_event(&at, &room, "org.hemicycle.calendar.event", &committee).await;
    let (status, body, _) = api(&bot, Method::PATCH, Some(&at), &entry("enope"), Some(r#"{"title":"x"}"#)).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let skip = format!("{}/skip", entry(&committee));
    let (status, body, _) =
        api(&bot, Method::POST, Some(&at), &skip, Some(r#"{"start":"2026-12-10T09:00:00Z"}"#)).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "no occurrence then: {body}");
    let (status, body, _) = api(
        &bot,
        Method::POST,
        Some(&at),
        &format!("{}/skip", entry(&review)),
        Some(r#"{"start":"2026-12-04T08:00:00Z"}"#),
    )
    .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "not recurring: {body}");
    let (status, body, _) =
        api(&bot, Method::PATCH, Some(&at), &entry(&committee), Some(r#"{"duration_minutes":0}"#)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(a.state_event(&at, &room, "org.hemicycle.calendar.event", &committee).await, before);

    let host_url = widget_host(&a, &at, &alice, &room, "org.hemicycle.calendar").await;
    let seen = browse(
        "widget-calendar-edit.mjs",
        &host_url,
        &[("COMMITTEE", &committee), ("REVIEW", &review), ("COFFEE", &coffee)],
    )
    .await;
    assert_eq!(seen["focusInDetail"], true, "the keyboard lands in the chosen occurrence's details: {seen}");
    assert_eq!(seen["committeeAfterWidget"], 2, "edited, then one occurrence skipped: {seen}");

    // What the widget and the commands did is room state.
    let edited = a.state_event(&at, &room, "org.hemicycle.calendar.event", &committee).await;
    assert_eq!((edited["title"].as_str(), edited["location"].as_str()), (Some("Comité élargi"), Some("Salle 5")));
    assert_eq!(edited["dtstart"], json!({ "tzid": "Europe/Paris", "value": "20261202T110000" }), "{edited}");
    assert_eq!(edited["dtend"], json!({ "tzid": "Europe/Paris", "value": "20261202T120000" }), "{edited}");
    assert_eq!(edited["exdate"], json!(["20261209T110000", "20261216T110000"]), "{edited}");
    for deleted in [&review, &coffee] {
        assert_eq!(a.state_event(&at, &room, "org.hemicycle.calendar.event", deleted).await, json!({}));
    }
    let listed = command(&a, &at, &room, "!cal list", "Comité élargi").await;
    assert!(listed.contains("Comité élargi — 2026-12-02 11:00"), "{listed}");
    for gone in ["2026-12-09", "2026-12-16", "Revue", "Café", "Comité budgétaire"] {
        assert!(!listed.contains(gone), "{gone} in {listed}");
    }
    drop(bot);
}

/// The library browser moves and deletes files through the same operations as `!doc mv` and
/// `!doc rm` and the REST API, with the asker's rights (a viewer's OpenID token is refused):
/// what is done in the widget (on a 375 px screen) is room state and in `!doc ls`, and while a
/// sub-folder is open, a file moved there and locked by command shows in it live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_widget_moves_and_deletes_files_and_follows_sub_folders_live() {
    let dir = tempfile::tempdir().unwrap();
    let (a, bot, alice, at, room) = widget_room("lib-edit-a", dir.path()).await;
    let (bob, bt) = a.register("bob").await;
    a.invite(&at, &room, &bob).await;
    a.join(&bt, &room, &[]).await;
    let made = command(&a, &at, &room, "!doc new \"Dossiers\"", "Library created").await;
    let library = made.split(" : ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    a.join(&at, &library, &[]).await;
    // Bob may read the library (power 0: a viewer), not change it.
    a.invite(&at, &library, &bob).await;
    a.join(&bt, &library, &[]).await;
    command(&a, &at, &room, "!doc mkdir Archives", "Archives").await;
    let archives = states(&a, &at, &library, "m.space.child").await.into_keys().next().unwrap();
    a.join(&at, &archives, &[]).await;
    for name in ["a.txt", "b.txt", "c.txt"] {
        let since = a.sync_token(&at).await;
        post_file(&a, &at, &room, name, format!("contenu de {name}\n").as_bytes()).await;
        wait_notice(&a, &at, &room, &since, &format!("« {name} »")).await;
    }

    // A viewer's OpenID token (what the widget would present for bob) may neither move nor
    // delete; a move to where the file is would lose it and is refused. Nothing changes.
    let bob_openid = openid(&a, &bt, &bob).await;
    let files = format!("/api/v1/libraries/{}/files", enc(&library));
    let (status, body, _) = api_as(
        &bot,
        Method::POST,
        Some(&bob_openid),
        &format!("{files}/move?path=a.txt"),
        Some(r#"{"to":"Archives"}"#),
    )
    .await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    let (status, body, _) = api_as(&bot, Method::DELETE, Some(&bob_openid), &format!("{files}?path=b.txt"), None).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    let alice_openid = openid(&a, &at, &alice).await;
    let (status, body, _) =
        api_as(&bot, Method::POST, Some(&alice_openid), &format!("{files}/move?path=a.txt"), Some(r#"{"to":"."}"#))
            .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    let active = |branches: &std::collections::BTreeMap<String, Value>| -> Vec<String> {
        let mut names: Vec<String> =
            branches.values().filter(|b| b["active"] == true).map(|b| b["name"].as_str().unwrap().to_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(active(&states(&a, &at, &library, "org.matrix.msc3089.branch").await), ["a.txt", "b.txt", "c.txt"]);

    let host_url = widget_host(&a, &at, &alice, &room, "org.hemicycle.library").await;
    let seen = browse("widget-library-manage.mjs", &host_url, &[("FOLDER", "Archives")]).await;
    let capabilities = seen["capabilities"].to_string();
    assert!(capabilities.contains(&format!("org.matrix.msc2762.timeline:{archives}")), "{seen}");

    // What the widget and the commands did is room state, and `!doc ls` sees it.
    assert_eq!(active(&states(&a, &at, &library, "org.matrix.msc3089.branch").await), Vec::<String>::new());
    let moved = states(&a, &at, &archives, "org.matrix.msc3089.branch").await;
    assert_eq!(active(&moved), ["a.txt", "c.txt"]);
    assert!(moved.values().any(|b| b["name"] == "c.txt" && b["locked"] == true), "{moved:#?}");
    let top = command(&a, &at, &room, "!doc ls", "Archives").await;
    assert!(!top.contains(".txt"), "{top}");
    let listed = command(&a, &at, &room, "!doc ls Archives", "a.txt").await;
    assert!(listed.contains("a.txt — v1") && listed.contains("c.txt — v1"), "{listed}");
    assert!(listed.contains("(locked)"), "{listed}");
    drop(bot);
}

/// Bad input on the calendar's edit, delete and skip and the library's move: malformed JSON,
/// wrong types, unknown fields, unknown ids and ids of another room, callers who are not
/// joined, a viewer, a member muted in the room, a body over the limit, a path that is not
/// UTF-8, a missing target folder and a folder named as the file to move. Each gets its Matrix
/// error (errcode and status), and no room's state changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calendar_and_library_apis_refuse_bad_input_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, bot, _alice, at, room) = widget_room("as-bad-a", dir.path()).await;
    let bot_id = a.user_id("workspace");
    let (bob, bt) = a.register("bob").await;
    let (_, ct) = a.register("carol").await;
    a.invite(&at, &room, &bob).await;
    a.join(&bt, &room, &[]).await;
    let other = a
        .create_room(
            &at,
            json!({ "preset": "private_chat", "name": "Ailleurs",
                    "power_level_content_override": { "users": { bot_id.clone(): 100 } } }),
        )
        .await;
    let since = a.sync_token(&at).await;
    a.invite(&at, &other, &bot_id).await;
    wait_notice(&a, &at, &other, &since, "Bonjour").await;
    let committee = bracketed(
        &command(&a, &at, &room, "!cal add \"Comité\" 2026-12-02 10:00 repeat:weekly count:3", "Comité").await,
    );
    let elsewhere = bracketed(
        &command(&a, &at, &other, "!cal add \"Ailleurs\" 2026-12-05 10:00 repeat:daily count:3", "Ailleurs").await,
    );
    let made = command(&a, &at, &room, "!doc new \"Dossiers\"", "Library created").await;
    let library = made.split(" : ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    a.join(&at, &library, &[]).await;
    a.invite(&at, &library, &bob).await;
    a.join(&bt, &library, &[]).await;
    command(&a, &at, &room, "!doc mkdir Archives", "Archives").await;
    let archives = states(&a, &at, &library, "m.space.child").await.into_keys().next().unwrap();
    a.join(&at, &archives, &[]).await;
    let since = a.sync_token(&at).await;
    post_file(&a, &at, &room, "a.txt", b"contenu\n").await;
    wait_notice(&a, &at, &room, &since, "« a.txt »").await;

    let rooms = [room.clone(), other.clone(), library.clone(), archives.clone()];
    let snapshot = || {
        let (a, at, rooms) = (&a, &at, &rooms);
        async move {
            let mut all = Vec::new();
            for r in rooms {
                all.push(state_ids(a, at, r).await);
            }
            all
        }
    };
    let before = snapshot().await;
    let entry = |r: &str, id: &str| format!("/api/v1/rooms/{}/calendar/{}", enc(r), enc(id));
    let mine = entry(&room, &committee);
    let skip = format!("{mine}/skip");
    let occurrence = r#"{"start":"2026-12-09T09:00:00Z"}"#;
    let big = format!(r#"{{"title":"{}"}}"#, "x".repeat(8 << 20));
    let long_title = format!(r#"{{"title":"{}"}}"#, "x".repeat(501));
    let long_description = format!(r#"{{"description":"{}"}}"#, "x".repeat(10_001));
    let move_a = format!("/api/v1/libraries/{}/files/move?path=a.txt", enc(&library));
    let big_move = format!(r#"{{"to":"{}"}}"#, "x".repeat(8 << 20));
    /// What is tried, the method, the caller's token, the path, the body; the status and errcode.
    type Case<'a> = (&'a str, Method, Option<&'a str>, String, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        // The calendar.
        ("malformed", Method::PATCH, Some(&at), mine.clone(), Some(r#"{"title":"#), 400, "M_NOT_JSON"),
        ("not an object", Method::PATCH, Some(&at), mine.clone(), Some("[1]"), 400, "M_BAD_JSON"),
        ("wrong type", Method::PATCH, Some(&at), mine.clone(), Some(r#"{"title":5}"#), 400, "M_BAD_JSON"),
        ("negative", Method::PATCH, Some(&at), mine.clone(), Some(r#"{"duration_minutes":-5}"#), 400, "M_BAD_JSON"),
        ("unknown field", Method::PATCH, Some(&at), mine.clone(), Some(r#"{"colour":"red"}"#), 400, "M_BAD_JSON"),
        ("title too long", Method::PATCH, Some(&at), mine.clone(), Some(&long_title), 400, "M_INVALID_PARAM"),
        ("description", Method::PATCH, Some(&at), mine.clone(), Some(&long_description), 400, "M_INVALID_PARAM"),
        ("bad start", Method::PATCH, Some(&at), mine.clone(), Some(r#"{"start":"demain"}"#), 400, "M_INVALID_PARAM"),
        ("over the limit", Method::PATCH, Some(&at), mine.clone(), Some(&big), 413, "M_TOO_LARGE"),
        (
            "unknown entry",
            Method::PATCH,
            Some(&at),
            entry(&room, "enope"),
            Some(r#"{"title":"x"}"#),
            404,
            "M_NOT_FOUND",
        ),
        (
            "other room's",
            Method::PATCH,
            Some(&at),
            entry(&room, &elsewhere),
            Some(r#"{"title":"x"}"#),
            404,
            "M_NOT_FOUND",
        ),
        (
            "not UTF-8",
            Method::PATCH,
            Some(&at),
            format!("/api/v1/rooms/%FF/calendar/{committee}"),
            Some("{}"),
            400,
            "M_INVALID_PARAM",
        ),
        ("no token", Method::PATCH, None, mine.clone(), Some(r#"{"title":"x"}"#), 401, "M_MISSING_TOKEN"),
        ("not joined", Method::PATCH, Some(&ct), mine.clone(), Some(r#"{"title":"x"}"#), 403, "M_FORBIDDEN"),
        ("not joined", Method::DELETE, Some(&ct), mine.clone(), None, 403, "M_FORBIDDEN"),
        ("not joined", Method::POST, Some(&ct), skip.clone(), Some(occurrence), 403, "M_FORBIDDEN"),
        ("unknown entry", Method::DELETE, Some(&at), entry(&room, "enope"), None, 404, "M_NOT_FOUND"),
        ("other room's", Method::DELETE, Some(&at), entry(&room, &elsewhere), None, 404, "M_NOT_FOUND"),
        (
            "other room's",
            Method::POST,
            Some(&at),
            format!("{}/skip", entry(&room, &elsewhere)),
            Some(r#"{"start":"2026-12-06T09:00:00Z"}"#),
            404,
            "M_NOT_FOUND",
        ),
        ("skip malformed", Method::POST, Some(&at), skip.clone(), Some("{"), 400, "M_NOT_JSON"),
        ("skip no start", Method::POST, Some(&at), skip.clone(), Some("{}"), 400, "M_BAD_JSON"),
        ("skip wrong type", Method::POST, Some(&at), skip.clone(), Some(r#"{"start":5}"#), 400, "M_BAD_JSON"),
        (
            "skip unreadable",
            Method::POST,
            Some(&at),
            skip.clone(),
            Some(r#"{"start":"mercredi"}"#),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "skip no occurrence",
            Method::POST,
            Some(&at),
            skip.clone(),
            Some(r#"{"start":"2026-12-09T10:00:00Z"}"#),
            404,
            "M_NOT_FOUND",
        ),
        (
            "skip other room",
            Method::POST,
            Some(&at),
            format!("{}/skip", entry(&other, &committee)),
            Some(occurrence),
            404,
            "M_NOT_FOUND",
        ),
        // The library's move.
        ("malformed", Method::POST, Some(&at), move_a.clone(), Some(r#"{"to":"#), 400, "M_NOT_JSON"),
        ("no body", Method::POST, Some(&at), move_a.clone(), None, 400, "M_NOT_JSON"),
        ("wrong type", Method::POST, Some(&at), move_a.clone(), Some(r#"{"to":["Archives"]}"#), 400, "M_BAD_JSON"),
        (
            "unknown field",
            Method::POST,
            Some(&at),
            move_a.clone(),
            Some(r#"{"to":"Archives","copy":true}"#),
            400,
            "M_BAD_JSON",
        ),
        ("over the limit", Method::POST, Some(&at), move_a.clone(), Some(&big_move), 413, "M_TOO_LARGE"),
        ("missing folder", Method::POST, Some(&at), move_a.clone(), Some(r#"{"to":"Nowhere"}"#), 404, "M_NOT_FOUND"),
        (
            "missing sub-folder",
            Method::POST,
            Some(&at),
            move_a.clone(),
            Some(r#"{"to":"Archives/Nowhere"}"#),
            404,
            "M_NOT_FOUND",
        ),
        ("up and out", Method::POST, Some(&at), move_a.clone(), Some(r#"{"to":"../Archives"}"#), 404, "M_NOT_FOUND"),
        ("where it is", Method::POST, Some(&at), move_a.clone(), Some(r#"{"to":"."}"#), 400, "M_INVALID_PARAM"),
        (
            "a folder into itself",
            Method::POST,
            Some(&at),
            format!("/api/v1/libraries/{}/files/move?path=Archives", enc(&library)),
            Some(r#"{"to":"Archives"}"#),
            404,
            "M_NOT_FOUND",
        ),
        (
            "unknown file",
            Method::POST,
            Some(&at),
            format!("/api/v1/libraries/{}/files/move?path=b.txt", enc(&library)),
            Some(r#"{"to":"Archives"}"#),
            404,
            "M_NOT_FOUND",
        ),
        (
            "no file named",
            Method::POST,
            Some(&at),
            format!("/api/v1/libraries/{}/files/move?path=Archives/", enc(&library)),
            Some(r#"{"to":"."}"#),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "not a library",
            Method::POST,
            Some(&at),
            format!("/api/v1/libraries/{}/files/move?path=a.txt", enc(&room)),
            Some(r#"{"to":"Archives"}"#),
            403,
            "M_FORBIDDEN",
        ),
        (
            "unknown library",
            Method::POST,
            Some(&at),
            "/api/v1/libraries/!nope:x/files/move?path=a.txt".to_owned(),
            Some(r#"{"to":"Archives"}"#),
            403,
            "M_FORBIDDEN",
        ),
        ("a viewer", Method::POST, Some(&bt), move_a.clone(), Some(r#"{"to":"Archives"}"#), 403, "M_FORBIDDEN"),
        ("not joined", Method::POST, Some(&ct), move_a.clone(), Some(r#"{"to":"Archives"}"#), 403, "M_FORBIDDEN"),
        ("no token", Method::POST, None, move_a.clone(), Some(r#"{"to":"Archives"}"#), 401, "M_MISSING_TOKEN"),
    ];
    for (what, method, token, path, body, status, errcode) in &cases {
        let (got, answer, text) = api(&bot, method.clone(), *token, path, *body).await;
        assert_eq!(
            (got, answer["errcode"].as_str()),
            (*status, Some(*errcode)),
            "{what}: {method} {path}: {}",
            &text[..text.len().min(300)]
        );
    }
    assert_eq!(snapshot().await, before, "no refused request changed a room");
    // An edit that changes nothing (no field, the same title) is answered and writes nothing.
    for body in ["{}", r#"{"title":"Comité"}"#] {
        let (status, answer, _) = api(&bot, Method::PATCH, Some(&at), &mine, Some(body)).await;
        assert_eq!((status, answer["entry"]["title"].as_str()), (200, Some("Comité")), "{body}: {answer}");
    }
    assert_eq!(snapshot().await, before, "an edit of nothing wrote nothing");

    // Bob muted in the room (messages need 50): he may read the calendar, not change it.
    let mut levels = a.state_event(&at, &room, "m.room.power_levels", "").await;
    levels["events"]["m.room.message"] = json!(50);
    a.put_state(&at, &room, "m.room.power_levels", "", levels).await;
    let before = snapshot().await;
    let (status, _, _) =
        api(&bot, Method::GET, Some(&bt), &format!("/api/v1/rooms/{}/calendar", enc(&room)), None).await;
    assert_eq!(status, 200, "reading stays open");
    let muted: Vec<(Method, String, Option<&str>)> = vec![
        (Method::PATCH, mine.clone(), Some(r#"{"title":"x"}"#)),
        (Method::DELETE, mine.clone(), None),
        (Method::POST, skip.clone(), Some(occurrence)),
        (Method::POST, format!("{mine}/rsvp"), Some(r#"{"response":"yes"}"#)),
        (
            Method::POST,
            format!("/api/v1/rooms/{}/calendar", enc(&room)),
            Some(r#"{"title":"x","start":"2026-12-20T10:00"}"#),
        ),
        (Method::POST, format!("/api/v1/rooms/{}/tasks", enc(&room)), Some(r#"{"title":"x"}"#)),
    ];
    for (method, path, body) in &muted {
        let (status, answer, _) = api(&bot, method.clone(), Some(&bt), path, *body).await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "muted: {method} {path}: {answer}"
        );
    }
    assert_eq!(snapshot().await, before, "a muted member changed nothing");
    // Alice still may.
    let (status, answer, _) = api(&bot, Method::POST, Some(&at), &skip, Some(occurrence)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["entry"]["exdate"], json!(["20261209T100000"]), "{answer}");
    drop(bot);
}
