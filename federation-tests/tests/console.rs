//! The console's network view over three real Hemicycle nodes and a Synapse (which publishes no
//! status document): every node asks the others for their signed status documents, and the
//! console of one draws the network from them: reachability both ways, a node made unreachable
//! and back, an allow-list made one-sided, the shared room's state compared. Then the same view in
//! Debian's chromium, with screenshots.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use hemicycle_federation_tests::Node;
use serde_json::{json, Value};

/// How long the view may take to show a change: a few rounds of `network.status_interval`.
const VIEW_WAIT: Duration = Duration::from_secs(60);

/// The console's network page as an admin sees it.
async fn network_page(node: &Node, token: &str) -> String {
    let response = reqwest::Client::new()
        .get(format!("{}/_hemicycle/console/network", node.client_url()))
        .header("Cookie", format!("hemicycle_console={token}"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The row of `server` in the page's first table (the reachability matrix): its cells' text.
fn matrix_row(page: &str, server: &str) -> Vec<String> {
    let matrix = page.split("<table class=\"matrix\">").nth(1).and_then(|t| t.split("</table>").next()).unwrap_or("");
    let row = matrix
        .split("<tr>")
        .find(|row| row.contains(&format!("<th scope=\"row\"><code>{server}</code>")))
        .unwrap_or_else(|| panic!("no row for {server} in the matrix: {matrix}"));
    row.split("<td").skip(1).map(|cell| cell.split("</td>").next().unwrap_or("").to_owned()).collect()
}

/// Reads the view until `check` holds (the documents come on the nodes' own timers, which no
/// event here can wake).
async fn wait_view(node: &Node, token: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + VIEW_WAIT;
    loop {
        let page = network_page(node, token).await;
        if check(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "the network view never showed {what}:\n{page}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The column of `server` in the matrix (columns follow the rows' order).
fn column(page: &str, servers: &[String], from: &str, to: &str) -> String {
    let at = servers.iter().position(|s| s == to).unwrap();
    matrix_row(page, from)[at].clone()
}

/// Rewrites a stopped node's `federation.allow`.
fn set_allow(node: &Node, allow: &[String]) {
    let text = std::fs::read_to_string(node.config_path()).unwrap();
    let mut config: toml::Table = toml::from_str(&text).unwrap();
    let federation = config.get_mut("federation").and_then(|f| f.as_table_mut()).unwrap();
    federation
        .insert("allow".into(), toml::Value::Array(allow.iter().map(|s| toml::Value::from(s.as_str())).collect()));
    std::fs::write(node.config_path(), toml::to_string(&config).unwrap()).unwrap();
}

#[tokio::test]
async fn the_network_view_shows_three_nodes_and_a_synapse() {
    let fast = [("network.status_interval", toml::Value::from("1s"))];
    let (a, mut b, mut c, synapse) = tokio::join!(
        Node::start_with("a", None, &[], &fast),
        Node::start_with("b", None, &[], &fast),
        Node::start_with("c", None, &[], &fast),
        Node::start_synapse("s"),
    );
    let root = a.admin_token().await;
    // One room on every node: each node's events go to the others, which makes them peers.
    let (_, alice) = a.register("alice").await;
    let room = a.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let mut members = Vec::new();
    for (node, name) in [(&b, "bob"), (&c, "carol"), (&synapse, "sam")] {
        let (_, token) = node.register(name).await;
        node.join(&token, &room, &[a.server_name()]).await;
        members.push((node, token));
    }
    for (node, token) in &members {
        node.send_text(token, &room, "présent").await;
    }
    a.send_text(&alice, &room, "bienvenue").await;
    let (an, bn, cn, sn) = (a.server_name(), b.server_name(), c.server_name(), synapse.server_name());

    // Every node shows, the Synapse without status, each Hemicycle node reaching every other;
    // the shared room's state is the same on the three nodes (hashed independently by each).
    let page = wait_view(&a, &root, "every node reachable and the room's state equal", |page| {
        let rows_up = [&an, &bn, &cn].iter().all(|from| {
            let row = matrix_row(page, from);
            row.len() == 4
                && row.iter().filter(|cell| cell.contains("reachable") && !cell.contains("unreachable")).count() == 3
        });
        rows_up
            && page.contains("no status (the server publishes none)")
            && page.contains("shared rooms compared have the same state everywhere")
    })
    .await;
    let servers: Vec<String> = {
        let head = page.split("<table class=\"matrix\">").nth(1).unwrap().split("</thead>").next().unwrap();
        head.split("<th scope=\"col\"><code>").skip(1).map(|h| h.split("</code>").next().unwrap().to_owned()).collect()
    };
    assert_eq!(servers[0], an, "this node first: {servers:?}");
    assert_eq!(servers.len(), 4, "{servers:?}");
    for server in [&bn, &cn, &sn] {
        assert!(servers.contains(server), "{server} in {servers:?}");
    }
    assert!(column(&page, &servers, &sn, &an).contains("no status"), "Synapse's row: {:?}", matrix_row(&page, &sn));
    assert!(page.contains("1 shared rooms compared"), "the one room shared is compared: {page}");
    assert!(page.contains("<svg"), "plots: {page}");

    // C goes down: A cannot fetch its status, and B's document says B cannot reach it either.
    c.kill().await;
    wait_view(&a, &root, "C unreachable from A and from B", |page| {
        column(page, &servers, &an, &cn).contains("unreachable")
            && column(page, &servers, &bn, &cn).contains("unreachable")
    })
    .await;
    // C is back: reachable again both ways.
    c.restart().await;
    wait_view(&a, &root, "C reachable again", |page| {
        let up = |cell: String| cell.contains("reachable") && !cell.contains("unreachable");
        up(column(page, &servers, &an, &cn))
            && up(column(page, &servers, &bn, &cn))
            && up(column(page, &servers, &cn, &an))
    })
    .await;

    // B's allow-list leaves C out: C still lets B in, which A's view shows as a disagreement.
    b.stop().await;
    set_allow(&b, &[an.clone(), bn.clone(), sn.clone()]);
    b.restart().await;
    let page = wait_view(&a, &root, "the one-sided allow-list", |page| {
        page.contains(&format!(
            "Allow-lists disagree: <code>{cn}</code> lets <code>{bn}</code> in, but <code>{bn}</code> does not let <code>{cn}</code> in."
        ))
    })
    .await;
    assert!(!page.contains(&format!("<code>{an}</code> lets <code>{bn}</code> in, but")), "A is on B's list: {page}");

    // The same view in a real browser, with the screenshots of docs/console.
    let seen = console_in_browser(&a, "root", "root-pw", "network_console.mjs", None).await;
    assert!(seen["matrix"].as_str().unwrap().contains(&cn), "{seen}");
    assert!(seen["problems"].as_str().unwrap().contains("Allow-lists disagree"), "{seen}");
    assert!(seen["svgs"].as_u64().unwrap() >= 2, "{seen}");
}

/// Runs `js/{script}` (a console page in Debian's chromium, `js/console_network.mjs`) against
/// `node` signed in as `admin`; what it saw. Its screenshots go to `shots`, else to a scratch
/// folder.
pub(crate) async fn console_in_browser(
    node: &Node,
    admin: &str,
    password: &str,
    script: &str,
    shots: Option<String>,
) -> Value {
    let playwright = std::env::var("PLAYWRIGHT_CORE").unwrap_or_else(|_| {
        panic!("PLAYWRIGHT_CORE is not set: run the tests with ./scripts/test, which installs playwright-core")
    });
    assert!(Path::new("/usr/bin/chromium").exists(), "/usr/bin/chromium is missing: run ./scripts/test");
    let scratch = tempfile::tempdir().unwrap();
    let shots = shots.unwrap_or_else(|| scratch.path().to_string_lossy().into_owned());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("js").join(script);
    let (url, admin, password) = (node.client_url().to_owned(), admin.to_owned(), password.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("CONSOLE_URL", url)
            .env("CONSOLE_ADMIN", admin)
            .env("CONSOLE_PASSWORD", password)
            .env("CONSOLE_SCREENSHOTS", shots)
            .env("PLAYWRIGHT_CORE", playwright)
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "browser run failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the browser script printed no JSON ({e}): {stdout}"))
}

/// A `POST` of a console form as `token`'s admin, with the CSRF token of the form's page; the
/// status and the page or the redirect's target.
pub(crate) async fn console_post(
    node: &Node,
    token: &str,
    page: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = format!("hemicycle_console={token}");
    let html = client
        .get(format!("{}/_hemicycle/console{page}", node.client_url()))
        .header("Cookie", &cookie)
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    let csrf = html[start..start + 64].to_owned();
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    fields.push(("csrf", &csrf));
    let body = fields.iter().fold(String::new(), |mut out, (k, v)| {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&format!("{}={}", hemicycle_federation_tests::enc(k), hemicycle_federation_tests::enc(v)));
        out
    });
    let response = client
        .post(format!("{}/_hemicycle/console{path}", node.client_url()))
        .header("Cookie", &cookie)
        .header("Accept", "text/html")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    (status, location.unwrap_or(text))
}

pub(crate) async fn console_get(node: &Node, token: &str, path: &str) -> String {
    let response = reqwest::Client::new()
        .get(format!("{}/_hemicycle/console{path}", node.client_url()))
        .header("Cookie", format!("hemicycle_console={token}"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Enrols a second factor for the console's admin; answers the secret and the time step of the
/// code that confirmed it (spent).
pub(crate) async fn enrol(node: &Node, token: &str) -> (Vec<u8>, u64) {
    let (status, html) = console_post(node, token, "/second-factor", "/second-factor/begin", &[]).await;
    assert_eq!(status, 200, "{html}");
    let marker = r#"<code id="totp-secret">"#;
    let start = html.find(marker).expect("the secret") + marker.len();
    let text = &html[start..start + html[start..].find('<').unwrap()];
    let (mut secret, mut buffer, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes() {
        let value = if c.is_ascii_uppercase() { c - b'A' } else { c - b'2' + 26 };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            secret.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    let step = hemicycle::time::now_ms() / 1000 / 30;
    let code = totp(&secret, step);
    let (status, body) =
        console_post(node, token, "/second-factor", "/second-factor/confirm", &[("totp", &code)]).await;
    assert_eq!(status, 303, "{body}");
    (secret, step)
}

/// The one-time code of `secret` at time step `step`.
pub(crate) fn totp(secret: &[u8], step: u64) -> String {
    format!("{:06}", hemicycle::users::totp::code_at(secret, step, 6))
}

pub(crate) async fn account(node: &Node, token: &str, user: &str) -> Value {
    node.get(token, &format!("/_synapse/admin/v2/users/{}", hemicycle_federation_tests::enc(user))).await
}

/// Reads a console page until it contains `text`: the other node's answer comes by federation,
/// in the background.
pub(crate) async fn wait_page(node: &Node, token: &str, path: &str, text: &str) -> String {
    let deadline = Instant::now() + VIEW_WAIT;
    loop {
        let page = console_get(node, token, path).await;
        if page.contains(text) {
            return page;
        }
        assert!(Instant::now() < deadline, "{path} never showed {text:?}:\n{page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_proposal_waits_for_an_admin_of_the_node_it_is_for() {
    let strict = [("console.require_second_factor", toml::Value::from(true))];
    let (a, b) = tokio::join!(Node::start("a", &[]), Node::start_with("b", None, &[], &strict));
    let (root_a, root_b) = tokio::join!(a.admin_token(), b.admin_token());
    let (agent, _) = b.register("agent").await;
    let (other, other_token) = b.register("other").await;
    // A learns of B as a peer by sending to it: a room both are in.
    let room = b.create_room(&other_token, json!({ "preset": "public_chat" })).await;
    let (_, alice) = a.register("alice").await;
    a.join(&alice, &room, &[b.server_name()]).await;
    let bn = b.server_name();

    // A's admin proposes deactivating B's agent: B keeps it, and nothing happens there.
    let (status, body) = console_post(
        &a,
        &root_a,
        "/proposals",
        "/proposals/new",
        &[("node", &bn), ("kind", "deactivate"), ("user", &agent), ("reason", "a quitté le ministère")],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let page = console_get(&a, &root_a, "/proposals").await;
    assert!(page.contains("waiting for an admin of the node"), "{page}");
    let page = console_get(&b, &root_b, "/proposals").await;
    assert!(page.contains(&format!("deactivate {agent}")) && page.contains("a quitté le ministère"), "{page}");
    assert_eq!(account(&b, &root_b, &agent).await["deactivated"], 0, "a proposal does nothing by itself");
    let id = {
        let marker = r#"name="id" value=""#;
        let start = page.find(marker).unwrap() + marker.len();
        page[start..start + page[start..].find('"').unwrap()].to_owned()
    };
    let an = a.server_name();

    // B requires a second factor: an approval without one enrolled, then with a wrong code, is
    // refused, and the agent stays.
    let approve = |code: String| {
        let (b, root_b, an, id) = (&b, root_b.clone(), an.clone(), id.clone());
        async move {
            console_post(
                b,
                &root_b,
                "/proposals",
                "/proposals/decide",
                &[("origin", &an), ("id", &id), ("decision", "approve"), ("totp", &code)],
            )
            .await
        }
    };
    let (status, body) = approve("000000".into()).await;
    assert_eq!(status, 403, "no second factor enrolled: {body}");
    let (secret, step) = enrol(&b, &root_b).await;
    let near: Vec<String> = (step - 1..=step + 3).map(|s| totp(&secret, s)).collect();
    let wrong = (0..1_000_000).map(|n| format!("{n:06}")).find(|c| !near.contains(c)).unwrap();
    let (status, body) = approve(wrong).await;
    assert_eq!(status, 403, "a wrong code: {body}");
    let (status, body) = approve(totp(&secret, step)).await;
    assert_eq!(status, 403, "the code used to enrol is spent: {body}");
    assert_eq!(account(&b, &root_b, &agent).await["deactivated"], 0);
    // With a fresh code, B's admin approves: the agent is deactivated, and A is told.
    let (status, body) = approve(totp(&secret, step + 1)).await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(account(&b, &root_b, &agent).await["deactivated"], 1);
    wait_page(&a, &root_a, "/proposals", &format!("approved by @root:{bn}")).await;

    // A second proposal, to lock the other account, is refused on B: nothing happens.
    let (status, body) = console_post(
        &a,
        &root_a,
        "/proposals",
        "/proposals/new",
        &[("node", &bn), ("kind", "lock"), ("user", &other), ("reason", "compte compromis")],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let page = wait_page(&b, &root_b, "/proposals", "compte compromis").await;
    let marker = r#"name="decision" value="refuse""#;
    let refuse_at = page.find(marker).unwrap();
    let id_marker = r#"name="id" value=""#;
    let id_at = page[..refuse_at].rfind(id_marker).unwrap() + id_marker.len();
    let lock_id = page[id_at..id_at + page[id_at..].find('"').unwrap()].to_owned();
    let (status, body) = console_post(
        &b,
        &root_b,
        "/proposals",
        "/proposals/decide",
        &[("origin", &an), ("id", &lock_id), ("decision", "refuse")],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(account(&b, &root_b, &other).await["locked"], false, "refused: nothing done");
    wait_page(&a, &root_a, "/proposals", &format!("refused by @root:{bn}")).await;
    // A decided proposal cannot be approved afterwards.
    let (status, _) = console_post(
        &b,
        &root_b,
        "/proposals",
        "/proposals/decide",
        &[("origin", &an), ("id", &lock_id), ("decision", "approve"), ("totp", &totp(&secret, step + 2))],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(account(&b, &root_b, &other).await["locked"], false);

    // A proposal naming an account of another node than the one it goes to is refused by A.
    let (status, _) = console_post(
        &a,
        &root_a,
        "/proposals",
        "/proposals/new",
        &[("node", &bn), ("kind", "lock"), ("user", &format!("@alice:{an}")), ("reason", "x")],
    )
    .await;
    assert_eq!(status, 400);

    let audit = b.get(&root_b, "/_synapse/admin/v1/audit").await;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["proposal.approve", "proposal.refuse", "user.deactivate", "console.second_factor.enrol"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}
