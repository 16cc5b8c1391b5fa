//! Network actions with consent over real nodes: the allow-list changed at runtime in the
//! console (with the admin's second factor, kept across a restart, enforced on the next request
//! either way), and changed on another node only when one of that node's admins approves the
//! proposal; a server notice to chosen nodes, as a proposal to each.

use std::time::Duration;

use hemicycle_federation_tests::Node;
use serde_json::json;

use super::console::{console_get, console_post, enrol, totp, wait_page};

/// A fresh code of `secret` for an admin whose last accepted code was of time step `last`: the
/// next step's, once the clock is close enough for it to be accepted (a code is good from one
/// step ahead of the current one).
async fn next_code(secret: &[u8], last: &mut u64) -> String {
    let step = *last + 1;
    let good_from_ms = (step - 1) * 30_000;
    let now = hemicycle::time::now_ms();
    if now < good_from_ms {
        tokio::time::sleep(Duration::from_millis(good_from_ms - now + 50)).await;
    }
    *last = step;
    totp(secret, step)
}

/// A code that is none of those `secret` makes around step `step`.
fn wrong_code(secret: &[u8], step: u64) -> String {
    let near: Vec<String> = (step - 1..=step + 3).map(|s| totp(secret, s)).collect();
    (0..1_000_000).map(|n| format!("{n:06}")).find(|c| !near.contains(c)).unwrap()
}

/// The servers the node's peers page lists as allowed.
async fn allow_list(node: &Node, token: &str) -> Vec<String> {
    let page = console_get(node, token, "/peers").await;
    let list = page.split("<ul class=\"allowed\">").nth(1).and_then(|l| l.split("</ul>").next()).unwrap_or("");
    list.split("<code>").skip(1).map(|item| item.split("</code>").next().unwrap().to_owned()).collect()
}

/// Changes `node`'s allow-list in its console: (status, page or redirect).
async fn change_allow_list(node: &Node, token: &str, server: &str, change: &str, code: &str) -> (u16, String) {
    console_post(
        node,
        token,
        "/peers",
        "/peers/allow",
        &[("server", server), ("change", change), ("reason", "décision du comité réseau"), ("totp", code)],
    )
    .await
}

/// The id in the pending proposal form of `page` that comes after `text`.
fn proposal_id_after(page: &str, text: &str) -> String {
    let at = page.find(text).unwrap_or_else(|| panic!("{text} in {page}"));
    let marker = r#"name="id" value=""#;
    let start = at + page[at..].find(marker).unwrap() + marker.len();
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

async fn audit_actions(node: &Node, token: &str) -> Vec<String> {
    let audit = node.get(token, "/_synapse/admin/v1/audit").await;
    audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn the_allow_list_changes_at_runtime_with_a_second_factor_and_on_another_node_by_consent() {
    // A and B start with an allow-list that names neither; C federates with every server.
    let closed = ["nowhere.invalid".to_owned()];
    let (mut a, b, c) = tokio::join!(Node::start("a", &closed), Node::start("b", &closed), Node::start("c", &[]));
    let (root_a, root_b) = tokio::join!(a.admin_token(), b.admin_token());
    let (an, bn, cn) = (a.server_name(), b.server_name(), c.server_name());
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    let room_a = a.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let (status, body) = b.try_join(&bob, &room_a, std::slice::from_ref(&an)).await;
    assert_ne!(status, 200, "B is not on A's list nor A on B's: {body}");

    // A's admin puts B on A's list: a wrong code is refused and changes nothing, a fresh one
    // does. B's admin puts A on B's. Then B's user joins A's room.
    let (secret_a, mut step_a) = enrol(&a, &root_a).await;
    let (status, body) = change_allow_list(&a, &root_a, &bn, "add", &wrong_code(&secret_a, step_a)).await;
    assert_eq!(status, 403, "{body}");
    assert!(!allow_list(&a, &root_a).await.contains(&bn));
    let (status, body) = change_allow_list(&a, &root_a, &bn, "add", &next_code(&secret_a, &mut step_a).await).await;
    assert_eq!(status, 303, "{body}");
    assert!(allow_list(&a, &root_a).await.contains(&bn));
    let page = console_get(&a, &root_a, "/peers").await;
    assert!(page.contains("décision du comité réseau") && page.contains(&format!("@root:{an}")), "{page}");
    let (secret_b, mut step_b) = enrol(&b, &root_b).await;
    let (status, body) = change_allow_list(&b, &root_b, &an, "add", &next_code(&secret_b, &mut step_b).await).await;
    assert_eq!(status, 303, "{body}");
    b.join(&bob, &room_a, std::slice::from_ref(&an)).await;

    // A proposes that B lets C in. C's user stays out of B's rooms until B's admin approves.
    let room_b = b.create_room(&bob, json!({ "preset": "public_chat" })).await;
    let (_, carol) = c.register("carol").await;
    let (status, body) = c.try_join(&carol, &room_b, std::slice::from_ref(&bn)).await;
    assert_ne!(status, 200, "C is not on B's list: {body}");
    let propose = |kind: &'static str, reason: &'static str| {
        let (a, root_a, bn, cn) = (&a, root_a.clone(), bn.clone(), cn.clone());
        async move {
            console_post(
                a,
                &root_a,
                "/proposals",
                "/proposals/new",
                &[("node", &bn), ("kind", kind), ("server", &cn), ("reason", reason)],
            )
            .await
        }
    };
    let (status, body) = propose("allow_server", "le ministère C rejoint le réseau").await;
    assert_eq!(status, 303, "{body}");
    let page = wait_page(&b, &root_b, "/proposals", &format!("add {cn} to the allow-list")).await;
    let id = proposal_id_after(&page, &format!("add {cn} to the allow-list"));
    let (status, body) = c.try_join(&carol, &room_b, std::slice::from_ref(&bn)).await;
    assert_ne!(status, 200, "a pending proposal changes nothing: {body}");
    assert!(!allow_list(&b, &root_b).await.contains(&cn));
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
    let (status, body) = approve(wrong_code(&secret_b, step_b)).await;
    assert_eq!(status, 403, "{body}");
    assert!(!allow_list(&b, &root_b).await.contains(&cn), "a wrong code changes nothing");
    let (status, body) = approve(next_code(&secret_b, &mut step_b).await).await;
    assert_eq!(status, 303, "{body}");
    assert!(allow_list(&b, &root_b).await.contains(&cn));
    c.join(&carol, &room_b, std::slice::from_ref(&bn)).await;
    wait_page(&a, &root_a, "/proposals", &format!("approved by @root:{bn}")).await;

    // A proposes that B takes C off again; B's admin refuses: C stays on B's list.
    let (status, body) = propose("remove_server", "plus de partenariat").await;
    assert_eq!(status, 303, "{body}");
    let page = wait_page(&b, &root_b, "/proposals", &format!("remove {cn} from the allow-list")).await;
    let id = proposal_id_after(&page, &format!("remove {cn} from the allow-list"));
    let (status, body) = console_post(
        &b,
        &root_b,
        "/proposals",
        "/proposals/decide",
        &[("origin", &an), ("id", &id), ("decision", "refuse")],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    assert!(allow_list(&b, &root_b).await.contains(&cn), "refused: nothing done");
    wait_page(&a, &root_a, "/proposals", &format!("refused by @root:{bn}")).await;

    // A's admin takes B off A's list: B's requests are refused from then on, also after A
    // restarts (B still lets A in, so the refusal is A's).
    let (status, body) = change_allow_list(&a, &root_a, &bn, "remove", &next_code(&secret_a, &mut step_a).await).await;
    assert_eq!(status, 303, "{body}");
    let room_a2 = a.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let (_, bob2) = b.register("bob2").await;
    let (status, body) = b.try_join(&bob2, &room_a2, std::slice::from_ref(&an)).await;
    assert_ne!(status, 200, "B is off A's list: {body}");
    a.stop().await;
    a.restart().await;
    assert!(!allow_list(&a, &root_a).await.contains(&bn), "the change outlives a restart");
    let (status, body) = b.try_join(&bob2, &room_a2, std::slice::from_ref(&an)).await;
    assert_ne!(status, 200, "B is still off A's list after the restart: {body}");

    let actions = audit_actions(&a, &root_a).await;
    assert_eq!(actions.iter().filter(|a| *a == "federation.allow_list").count(), 2, "{actions:?}");
    let actions = audit_actions(&b, &root_b).await;
    for action in ["federation.allow_list", "proposal.approve", "proposal.refuse"] {
        assert!(actions.iter().any(|a| a == action), "{action} in {actions:?}");
    }
}

#[tokio::test]
async fn a_notice_to_chosen_nodes_goes_as_a_proposal_to_each() {
    let (a, b, c) = tokio::join!(Node::start("a", &[]), Node::start("b", &[]), Node::start("c", &[]));
    let (root_a, root_b, root_c) = tokio::join!(a.admin_token(), b.admin_token(), c.admin_token());
    let (an, bn, cn) = (a.server_name(), b.server_name(), c.server_name());
    // A learns of B and C as peers: a room all three are in.
    let (_, alice) = a.register("alice").await;
    let room = a.create_room(&alice, json!({ "preset": "public_chat" })).await;
    for node in [&b, &c] {
        let (_, token) = node.register("agent").await;
        node.join(&token, &room, std::slice::from_ref(&an)).await;
        node.send_text(&token, &room, "présent").await;
    }
    a.send_text(&alice, &room, "bienvenue").await;
    let page = wait_page(&a, &root_a, "/proposals", &format!("name=\"server:{cn}\"")).await;
    assert!(page.contains(&format!("name=\"server:{bn}\"")), "{page}");

    // To B and to this node, not to C: B holds a proposal, C nothing, A's accounts get it now.
    let server_b = format!("server:{bn}");
    let server_a = format!("server:{an}");
    let (status, body) = console_post(
        &a,
        &root_a,
        "/proposals",
        "/notices/send",
        &[("audience", "servers"), (&server_b, "on"), (&server_a, "on"), ("text", "Maintenance samedi à 8 h")],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let page = console_get(&b, &root_b, "/proposals").await;
    assert!(page.contains("server notice to every account: Maintenance samedi à 8 h"), "{page}");
    let page = console_get(&c, &root_c, "/proposals").await;
    assert!(!page.contains("Maintenance samedi"), "C was not chosen: {page}");
    let page = console_get(&a, &root_a, "/proposals").await;
    assert!(page.contains("waiting for an admin of the node"), "{page}");
    assert!(page.contains("every account") && page.contains("<progress"), "A's own batch shows: {page}");
    // Nothing ticked: refused.
    let (status, _) = console_post(
        &a,
        &root_a,
        "/proposals",
        "/notices/send",
        &[("audience", "servers"), ("text", "Maintenance samedi à 8 h")],
    )
    .await;
    assert_eq!(status, 400);
}

/// The key id the console's node page names as current.
async fn current_key(node: &Node, token: &str) -> String {
    let page = console_get(node, token, "").await;
    let row = page.split("<tr>").find(|row| row.contains("<td>current</td>")).unwrap_or_else(|| panic!("{page}"));
    row.split("<code>").nth(1).unwrap().split("</code>").next().unwrap().to_owned()
}

#[tokio::test]
async fn a_signing_key_rotated_in_the_console_signs_what_follows_and_the_others_take_it() {
    let (a, b) = tokio::join!(Node::start("a", &[]), Node::start("b", &[]));
    let root = a.admin_token().await;
    let an = a.server_name();
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    let room = a.create_room(&alice, json!({ "preset": "public_chat" })).await;
    b.join(&bob, &room, std::slice::from_ref(&an)).await;
    let since = b.sync_token(&bob).await;
    a.send_text(&alice, &room, "avant la rotation").await;
    b.wait_for_bodies(&bob, &room, &since, &["avant la rotation".to_owned()]).await;

    // The rotation asks the admin's code: none or a wrong one leave the key as it is.
    let old = current_key(&a, &root).await;
    let (secret, mut step) = enrol(&a, &root).await;
    let (status, body) = console_post(&a, &root, "", "/keys/rotate", &[]).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = console_post(&a, &root, "", "/keys/rotate", &[("totp", &wrong_code(&secret, step))]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(current_key(&a, &root).await, old);
    let (status, body) =
        console_post(&a, &root, "", "/keys/rotate", &[("totp", &next_code(&secret, &mut step).await)]).await;
    assert_eq!(status, 303, "{body}");
    let new = current_key(&a, &root).await;
    assert_ne!(new, old);
    let page = console_get(&a, &root, "").await;
    assert!(page.contains(&format!("<code>{old}</code></th><td>retired</td>")), "{page}");

    // What A signs now, B verifies with A's new key (fetched, as it never saw it), without a
    // restart of either; and B's events still reach A.
    let since = b.sync_token(&bob).await;
    a.send_text(&alice, &room, "après la rotation").await;
    b.wait_for_bodies(&bob, &room, &since, &["après la rotation".to_owned()]).await;
    let since = a.sync_token(&alice).await;
    b.send_text(&bob, &room, "bien reçu").await;
    a.wait_for_bodies(&alice, &room, &since, &["bien reçu".to_owned()]).await;
    assert!(audit_actions(&a, &root).await.iter().any(|a| a == "server.rotate_key"));
}
