//! Federation scenarios: every test starts its own Hemicycle nodes (real processes on loopback,
//! HTTPS federation with self-signed certificates) and drives them through the client API, raw
//! HTTP or matrix-sdk. Waits long-poll `/sync`; nothing sleeps for a fixed time.

use std::collections::BTreeSet;

use hemicycle_federation_tests::{
    bodies, describe_all, enc, ephemeral, is_membership, next_batch, shared_room, typing_users, Node, Timeline,
    SYNC_WAIT,
};
use reqwest::Method;
use serde_json::{json, Value};

/// Nodes A and B, started side by side, federating with everyone.
async fn two_nodes() -> (Node, Node) {
    tokio::join!(Node::start("a", &[]), Node::start("b", &[]))
}

/// The event ids of a list of events.
fn event_ids(events: &[Value]) -> BTreeSet<String> {
    events.iter().map(|e| e["event_id"].as_str().expect("event_id").to_owned()).collect()
}

/// No event delivered twice in what a wait gathered.
fn assert_each_once(timeline: &Timeline, who: &str) {
    let ids = timeline.event_ids();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{who}: an event came twice: {ids:?}");
}

/// The messages of `timeline` whose body starts with `prefix`, in order.
fn with_prefix(timeline: &Timeline, prefix: &str) -> Vec<String> {
    timeline.bodies().into_iter().filter(|b| b.starts_with(prefix)).collect()
}

#[tokio::test]
async fn join_by_alias_across_nodes() {
    let (a, b) = two_nodes().await;
    let (alice, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let room = a.create_room(&at, json!({ "preset": "public_chat", "room_alias_name": "pub" })).await;
    let alias = format!("#pub:{}", a.server_name());
    let alice_since = a.sync_token(&at).await;

    // No server_name: B resolves the alias by asking A.
    let joined = b.join(&bt, &alias, &[]).await;
    assert_eq!(joined, room, "the alias resolves to A's room");
    a.wait_for_timeline(&at, &room, Some(&alice_since), |e| is_membership(e, &bob, "join"), SYNC_WAIT).await;
    let everyone = BTreeSet::from([alice.clone(), bob.clone()]);
    assert_eq!(a.joined_members(&at, &room).await, everyone, "A's view of the members");
    assert_eq!(b.joined_members(&bt, &room).await, everyone, "B's view of the members");

    // Five messages from each side, interleaved.
    let a_since = a.sync_token(&at).await;
    let b_since = b.sync_token(&bt).await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let (from_a, from_b) = (format!("a{i}"), format!("b{i}"));
        a.send_text(&at, &room, &from_a).await;
        b.send_text(&bt, &room, &from_b).await;
        expected.push(from_a);
        expected.push(from_b);
    }
    let sides = [(&a, &at, &a_since, "alice on A"), (&b, &bt, &b_since, "bob on B")];
    for (node, token, since, who) in sides {
        let timeline = node.wait_for_bodies(token, &room, since, &expected).await;
        assert_each_once(&timeline, who);
        assert_eq!(timeline.bodies().len(), 10, "{who}: exactly the ten messages: {:?}", timeline.bodies());
        for prefix in ["a", "b"] {
            let want: Vec<String> = (0..5).map(|i| format!("{prefix}{i}")).collect();
            assert_eq!(with_prefix(&timeline, prefix), want, "{who}: {prefix}'s messages in the order sent");
        }
    }
}

#[tokio::test]
async fn room_versions_10_11_12() {
    let (a, b) = two_nodes().await;
    let (_, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    for version in ["10", "11", "12"] {
        let room = a.create_room(&at, json!({ "preset": "public_chat", "room_version": version })).await;
        let create = a.state_event(&at, &room, "m.room.create", "").await;
        assert_eq!(create["room_version"], version, "A created a v{version} room: {create}");
        let a_since = a.sync_token(&at).await;

        let joined = b.join(&bt, &room, &[a.server_name()]).await;
        assert_eq!(joined, room, "v{version}");
        let create = b.state_event(&bt, &room, "m.room.create", "").await;
        assert_eq!(create["room_version"], version, "B holds the v{version} create event: {create}");
        let seen = a.wait_for_timeline(&at, &room, Some(&a_since), |e| is_membership(e, &bob, "join"), SYNC_WAIT).await;
        let b_since = b.sync_token(&bt).await;

        let to_b = format!("A to B in v{version}");
        a.send_text(&at, &room, &to_b).await;
        b.wait_for_bodies(&bt, &room, &b_since, std::slice::from_ref(&to_b)).await;
        let to_a = format!("B to A in v{version}");
        b.send_text(&bt, &room, &to_a).await;
        let timeline = a.wait_for_bodies(&at, &room, &seen.next_batch, std::slice::from_ref(&to_a)).await;
        assert_eq!(timeline.bodies(), vec![to_b, to_a], "v{version}: A's timeline after B joined");
    }
}

#[tokio::test]
async fn invite_reject_kick_ban_leave_rejoin() {
    let (a, b) = two_nodes().await;
    let (alice, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let room = a.create_room(&at, json!({ "preset": "public_chat" })).await;
    let via = [a.server_name()];
    let mut a_since = a.sync_token(&at).await;
    let b_since = b.sync_token(&bt).await;

    // Invite: B's sync lists it, with the invite event in the stripped state.
    a.invite(&at, &room, &bob).await;
    let invited = b
        .wait_sync(&bt, Some(&b_since), SYNC_WAIT, "bob's first invite", |s| s["rooms"]["invite"][&room].is_object())
        .await;
    let stripped = invited["rooms"]["invite"][&room]["invite_state"]["events"].as_array().expect("invite_state");
    assert!(
        stripped.iter().any(|e| is_membership(e, &bob, "invite") && e["sender"] == alice.as_str()),
        "the invite itself is in the invite state: {stripped:?}"
    );
    assert!(
        stripped.iter().any(|e| is_membership(e, &alice, "join")),
        "the inviter's own membership too (who invited; MSC4268 key bundles need it): {stripped:?}"
    );
    // The same for an invitee of the inviter's own server.
    let (carol, ct) = a.register("carol").await;
    let c_since = a.sync_token(&ct).await;
    a.invite(&at, &room, &carol).await;
    let local = a
        .wait_sync(&ct, Some(&c_since), SYNC_WAIT, "carol's invite", |s| s["rooms"]["invite"][&room].is_object())
        .await;
    let local = local["rooms"]["invite"][&room]["invite_state"]["events"].as_array().expect("invite_state");
    assert!(local.iter().any(|e| is_membership(e, &alice, "join")), "{local:?}");
    assert!(local.iter().any(|e| is_membership(e, &carol, "invite")), "{local:?}");

    // Reject: A sees bob leave.
    b.leave(&bt, &room).await;
    let seen = a.wait_for_timeline(&at, &room, Some(&a_since), |e| is_membership(e, &bob, "leave"), SYNC_WAIT).await;
    a_since = seen.next_batch;
    assert!(!a.joined_members(&at, &room).await.contains(&bob));

    // Invite again, and this time join.
    a.invite(&at, &room, &bob).await;
    let invited = b
        .wait_sync(&bt, Some(&next_batch(&invited)), SYNC_WAIT, "bob's second invite", |s| {
            s["rooms"]["invite"][&room].is_object()
        })
        .await;
    let b_since = next_batch(&invited);
    b.join(&bt, &room, &via).await;
    let seen = a.wait_for_timeline(&at, &room, Some(&a_since), |e| is_membership(e, &bob, "join"), SYNC_WAIT).await;
    a_since = seen.next_batch;

    // Kick: B sees its own leave, sent by alice, with the reason.
    a.kick(&at, &room, &bob, "hors sujet").await;
    let kicked = b
        .wait_for_timeline(
            &bt,
            &room,
            Some(&b_since),
            |e| is_membership(e, &bob, "leave") && e["sender"] == alice.as_str(),
            SYNC_WAIT,
        )
        .await;
    let kick = kicked.events.iter().rev().find(|e| is_membership(e, &bob, "leave")).expect("the kick");
    assert_eq!(kick["content"]["reason"], "hors sujet");
    assert!(!b.joined_rooms(&bt).await.contains(&room), "B no longer lists the room as joined");
    let seen = a.wait_for_timeline(&at, &room, Some(&a_since), |e| is_membership(e, &bob, "leave"), SYNC_WAIT).await;
    a_since = seen.next_batch;

    // The room is public: bob comes back by himself, leaves, and comes back once more.
    b.join(&bt, &room, &via).await;
    let seen = a.wait_for_timeline(&at, &room, Some(&a_since), |e| is_membership(e, &bob, "join"), SYNC_WAIT).await;
    a_since = seen.next_batch;
    b.leave(&bt, &room).await;
    let seen = a
        .wait_for_timeline(
            &at,
            &room,
            Some(&a_since),
            |e| is_membership(e, &bob, "leave") && e["sender"] == bob.as_str(),
            SYNC_WAIT,
        )
        .await;
    a_since = seen.next_batch;
    b.join(&bt, &room, &via).await;
    a.wait_for_timeline(&at, &room, Some(&a_since), |e| is_membership(e, &bob, "join"), SYNC_WAIT).await;
    assert_eq!(a.joined_members(&at, &room).await, BTreeSet::from([alice.clone(), bob.clone()]));

    // Ban: B's sync shows it, and joining again is refused.
    a.ban(&at, &room, &bob, "récidive").await;
    b.wait_for_timeline(
        &bt,
        &room,
        Some(&kicked.next_batch),
        |e| is_membership(e, &bob, "ban") && e["sender"] == alice.as_str(),
        SYNC_WAIT,
    )
    .await;
    let (status, error) = b.try_join(&bt, &room, &via).await;
    assert_eq!((status, error["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "a banned user cannot join: {error}");
    let member = a.state_event(&at, &room, "m.room.member", &bob).await;
    assert_eq!(member["membership"], "ban", "A's state keeps the ban: {member}");
    assert!(!b.joined_rooms(&bt).await.contains(&room));
}

#[tokio::test]
async fn history_before_join_via_messages() {
    let (a, b) = two_nodes().await;
    let (_, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let shared = json!({ "type": "m.room.history_visibility", "state_key": "",
                         "content": { "history_visibility": "shared" } });
    let room = a.create_room(&at, json!({ "preset": "public_chat", "initial_state": [shared] })).await;
    // More than the 500 events fetched with the join: the rest comes when bob pages back to it.
    let sent: Vec<String> = (0..620).map(|i| format!("avant l'arrivée de Bob {i}")).collect();
    for text in &sent {
        a.send_text(&at, &room, text).await;
    }
    b.join(&bt, &room, &[a.server_name()]).await;

    // B's timeline starts at the join; everything older comes from paging back (backfill).
    let first = b.sync_with_filter(&bt, None, 0, r#"{"room":{"timeline":{"limit":1}}}"#).await;
    let timeline = &first["rooms"]["join"][&room]["timeline"];
    let newest = timeline["events"].as_array().expect("B's timeline of the room");
    let newest_is_join = newest.last().is_some_and(|e| is_membership(e, &bob, "join"));
    assert!(newest_is_join, "the newest event is bob's join: {newest:?}");
    let mut from = timeline["prev_batch"].as_str().expect("prev_batch").to_owned();
    let mut older: Vec<Value> = Vec::new();
    for _ in 0..50 {
        let page = b.messages(&bt, &room, "b", Some(&from), 40).await;
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        let done = chunk.is_empty() || chunk.iter().any(|e| e["type"] == "m.room.create");
        older.extend(chunk);
        match page["end"].as_str() {
            Some(end) if !done => from = end.to_owned(),
            _ => break,
        }
    }
    let summary = describe_all(&older);
    let expected: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(bodies(&older), expected, "all 620 messages, newest first:\n{summary}");
    assert_eq!(older.last().map(|e| &e["type"]), Some(&json!("m.room.create")), "back to the create event:\n{summary}");
    assert_eq!(event_ids(&older).len(), older.len(), "no event twice:\n{summary}");
    let visibility = b.state_event(&bt, &room, "m.room.history_visibility", "").await;
    assert_eq!(visibility["history_visibility"], "shared");

    // B's search finds what came with the join and what paging back fetched (backfill, stored
    // off the stream): the number is the only word that tells the messages apart.
    for n in [600, 3] {
        let body = json!({ "search_categories": { "room_events": { "search_term": n.to_string() } } });
        let found = b.post(&bt, "/_matrix/client/v3/search", body).await;
        let results = &found["search_categories"]["room_events"]["results"];
        let texts: Vec<&str> =
            results.as_array().into_iter().flatten().filter_map(|r| r["result"]["content"]["body"].as_str()).collect();
        assert_eq!(texts, vec![sent[n].as_str()], "B's search for {n}: {found}");
    }
}

#[tokio::test]
async fn concurrent_state_changes_converge() {
    let (mut a, mut b) = two_nodes().await;
    let (_, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let room = shared_room(&a, &at, &b, &bt, &bob).await;
    let b_since = b.sync_token(&bt).await;

    // Bob gets power 100, and waits until B has the new power levels.
    let mut levels = a.state_event(&at, &room, "m.room.power_levels", "").await;
    levels["users"][&bob] = json!(100);
    let promoted = a.put_state(&at, &room, "m.room.power_levels", "", levels).await;
    let seen = b.wait_for_timeline(&bt, &room, Some(&b_since), |e| e["event_id"] == promoted.as_str(), SYNC_WAIT).await;
    let a_since = a.sync_token(&at).await;

    // Both rename the room without seeing each other's rename, for certain: each renames while
    // the other node is down (a race of two requests may or may not make a fork).
    let mut names = BTreeSet::new();
    for round in 0..2 {
        let (from_a, from_b) = (format!("Salle A{round}"), format!("Salle B{round}"));
        b.kill().await;
        a.put_state(&at, &room, "m.room.name", "", json!({ "name": from_a })).await;
        a.kill().await;
        b.restart().await;
        b.put_state(&bt, &room, "m.room.name", "", json!({ "name": from_b })).await;
        a.restart().await;
        names.insert(from_a);
        names.insert(from_b);
    }

    // A last message from each side, each seen by the other: both then have the whole DAG.
    let last_a = a.send_text(&at, &room, "dernier mot de A").await;
    b.wait_for_timeline(&bt, &room, Some(&seen.next_batch), |e| e["event_id"] == last_a.as_str(), SYNC_WAIT).await;
    let last_b = b.send_text(&bt, &room, "dernier mot de B").await;
    a.wait_for_timeline(&at, &room, Some(&a_since), |e| e["event_id"] == last_b.as_str(), SYNC_WAIT).await;

    let name_a = a.state_event(&at, &room, "m.room.name", "").await;
    let name_b = b.state_event(&bt, &room, "m.room.name", "").await;
    assert_eq!(name_a, name_b, "both nodes resolved the same name");
    let name = name_a["name"].as_str().expect("a name");
    assert!(names.contains(name), "the name is one of those set: {name}");
    let state_a = a.get_state(&at, &room).await;
    let state_b = b.get_state(&bt, &room).await;
    assert_eq!(event_ids(&state_a), event_ids(&state_b), "the same current state on both nodes");
}

/// How long a node that stayed up may take to deliver its queue to one that is back: its
/// retries back off (2 s, 4 s, 8 s…) while the other is down, and it is not told the other is
/// back, so the wait covers a backoff of some length.
const REDELIVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

#[tokio::test]
async fn killed_node_catches_up() {
    let (mut a, mut b) = two_nodes().await;
    let (alice, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let room = shared_room(&a, &at, &b, &bt, &bob).await;
    // The restarted side says nothing to the other, so the side that stayed up must deliver its
    // queue by itself, after its backoff: a message from the restarted side would make the other
    // fetch what it missed (through `/get_missing_events`), and any request of it (a presence
    // update) would end the other's backoff early. Both users are `unavailable` and the
    // harness's syncs say so again, which writes no presence: syncs stay silent.
    for (node, token, user) in [(&a, &at, &alice), (&b, &bt, &bob)] {
        let path = format!("/_matrix/client/v3/presence/{}/status", enc(user));
        node.put(token, &path, json!({ "presence": "unavailable" })).await;
        node.set_sync_presence(Some("unavailable"));
    }

    // B dies without warning; A keeps talking, then B comes back and only listens.
    let bob_since = b.sync_token(&bt).await;
    b.kill().await;
    let sent: Vec<String> = (0..20).map(|i| format!("pendant la panne de B {i}")).collect();
    for text in &sent {
        a.send_text(&at, &room, text).await;
    }
    b.restart().await;
    let caught_up = b
        .wait_timeline_until(&bt, &room, Some(&bob_since), REDELIVERY_WAIT, |events| {
            bodies(events).iter().filter(|b| b.starts_with("pendant la panne de B")).count() == sent.len()
        })
        .await;
    assert_each_once(&caught_up, "bob after B's restart");
    assert_eq!(with_prefix(&caught_up, "pendant la panne de B"), sent, "the 20, in order, each once");

    // The other way round: A dies, B talks, A comes back and only listens.
    let alice_since = a.sync_token(&at).await;
    a.kill().await;
    let sent: Vec<String> = (0..20).map(|i| format!("pendant la panne de A {i}")).collect();
    for text in &sent {
        b.send_text(&bt, &room, text).await;
    }
    a.restart().await;
    let caught_up = a
        .wait_timeline_until(&at, &room, Some(&alice_since), REDELIVERY_WAIT, |events| {
            bodies(events).iter().filter(|b| b.starts_with("pendant la panne de A")).count() == sent.len()
        })
        .await;
    assert_each_once(&caught_up, "alice after A's restart");
    assert_eq!(with_prefix(&caught_up, "pendant la panne de A"), sent, "the 20, in order, each once");
}

/// Adds the text of every `org.example.note` to-device message `token`'s user gets from `since` to
/// `texts`, until `until` is among them; answers where to go on from.
async fn gather_notes(node: &Node, token: &str, since: &str, until: &str, texts: &mut Vec<String>) -> String {
    let what = format!("the to-device message {until:?}");
    let seen = node
        .wait_sync(token, Some(since), REDELIVERY_WAIT, &what, |s| {
            for event in s["to_device"]["events"].as_array().into_iter().flatten() {
                assert_eq!(event["type"], "org.example.note", "{event}");
                texts.push(event["content"]["texte"].as_str().unwrap_or("?").to_owned());
            }
            texts.iter().any(|t| t == until)
        })
        .await;
    next_batch(&seen)
}

/// A to-device message for a server that is down is queued durably: accepted, the sending node
/// killed (`kill -9`) while it cannot have delivered it, then both nodes started again — the
/// message reaches the recipient's device, once. The two users share no room: the sender has
/// never delivered anything to that server before.
#[tokio::test]
async fn a_to_device_message_for_a_server_that_is_down_survives_a_kill() {
    let (mut a, mut b) = two_nodes().await;
    let (_, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let device = b.get(&bt, "/_matrix/client/v3/account/whoami").await["device_id"].as_str().unwrap().to_owned();
    let bob_since = b.sync_token(&bt).await;
    b.kill().await;
    let messages = json!({ bob.clone(): { device.clone(): { "texte": "gardé pour B" } } });
    let path = "/_matrix/client/v3/sendToDevice/org.example.note/pendant-la-panne";
    a.put(&at, path, json!({ "messages": messages })).await;
    a.kill().await;
    b.restart().await;
    a.restart().await;
    let mut texts = Vec::new();
    let since = gather_notes(&b, &bt, &bob_since, "gardé pour B", &mut texts).await;
    // A second message, sent once the first arrived: a second delivery of the first would come
    // no later than it (one queue per destination, in order).
    let messages = json!({ bob.clone(): { device.clone(): { "texte": "témoin" } } });
    a.put(&at, "/_matrix/client/v3/sendToDevice/org.example.note/temoin", json!({ "messages": messages })).await;
    gather_notes(&b, &bt, &since, "témoin", &mut texts).await;
    assert_eq!(texts, ["gardé pour B", "témoin"], "each once");
}

#[tokio::test]
async fn federation_allow_refuses_outsiders() {
    let (b, c) = tokio::join!(Node::start("b", &[]), Node::start("c", &[]));
    // A federates with B only (and itself: the harness adds A's own name to the list).
    let a = Node::start("a", &[b.server_name()]).await;
    let (_, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let (carol, ct) = c.register("carol").await;
    let room = shared_room(&a, &at, &b, &bt, &bob).await;

    // Control: A and B talk as usual.
    let b_since = b.sync_token(&bt).await;
    a.send_text(&at, &room, "entre serveurs admis").await;
    b.wait_for_bodies(&bt, &room, &b_since, &["entre serveurs admis".to_owned()]).await;

    // C's user cannot join A's public room through A: A refuses C's `make_join` (403), which C
    // answers carol as the spec's refusal of a join she may not make.
    let (status, error) = c.try_join(&ct, &room, &[a.server_name()]).await;
    assert_eq!((status, error["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "A refuses C: {error}");
    assert!(!c.joined_rooms(&ct).await.contains(&room), "C does not count carol as joined");

    // A's user cannot invite C's user.
    let (status, error) = a.room_action(&at, &room, "invite", json!({ "user_id": carol })).await;
    assert_eq!((status, error["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "invite of {carol}: {error}");

    // A's state of the room never mentions carol.
    let state = a.get_state(&at, &room).await;
    assert!(state.iter().any(|e| is_membership(e, &bob, "join")), "bob (allowed) is in");
    let mentions: Vec<&Value> = state.iter().filter(|e| e["state_key"] == carol.as_str()).collect();
    assert!(mentions.is_empty(), "carol is not in A's state: {mentions:?}");
    assert!(!a.joined_members(&at, &room).await.contains(&carol));
}

#[tokio::test]
async fn typing_receipts_and_presence_across_nodes() {
    let (a, b) = two_nodes().await;
    let (alice, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let room = shared_room(&a, &at, &b, &bt, &bob).await;
    let b_since = b.sync_token(&bt).await;
    let event = a.send_text(&at, &room, "lu ?").await;
    let seen = b.wait_for_timeline(&bt, &room, Some(&b_since), |e| e["event_id"] == event.as_str(), SYNC_WAIT).await;

    // Typing on A reaches B's sync, and so does its end.
    a.typing(&at, &room, &alice, true).await;
    let typing = b
        .wait_sync(&bt, Some(&seen.next_batch), SYNC_WAIT, "alice typing", |s| {
            typing_users(s, &room).is_some_and(|users| users.contains(&alice))
        })
        .await;
    assert_eq!(typing_users(&typing, &room), Some(vec![alice.clone()]));
    a.typing(&at, &room, &alice, false).await;
    b.wait_sync(&bt, Some(&next_batch(&typing)), SYNC_WAIT, "alice stops typing", |s| {
        typing_users(s, &room).is_some_and(|users| !users.contains(&alice))
    })
    .await;

    // A read receipt on B reaches A's sync.
    let a_since = a.sync_token(&at).await;
    b.read_receipt(&bt, &room, &event).await;
    let receipt = a
        .wait_sync(&at, Some(&a_since), SYNC_WAIT, "bob's read receipt", |s| {
            ephemeral(s, &room, "m.receipt").is_some_and(|r| r["content"][&event]["m.read"][&bob].is_object())
        })
        .await;
    let read = &ephemeral(&receipt, &room, "m.receipt").expect("m.receipt")["content"][&event]["m.read"][&bob];
    assert!(read["ts"].is_u64(), "the receipt has its timestamp: {read}");

    // Presence set on A reaches B's sync and B's /presence, and the way back.
    let b_since = b.sync_token(&bt).await;
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&alice));
    a.put(&at, &path, json!({ "presence": "unavailable", "status_msg": "en réunion" })).await;
    let presence_of = |s: &Value, user: &str| -> Option<Value> {
        s["presence"]["events"].as_array()?.iter().rev().find(|e| e["sender"] == user).map(|e| e["content"].clone())
    };
    let seen = b
        .wait_sync(&bt, Some(&b_since), SYNC_WAIT, "alice's presence", |s| {
            presence_of(s, &alice).is_some_and(|p| p["presence"] == "unavailable")
        })
        .await;
    assert_eq!(presence_of(&seen, &alice).expect("presence")["status_msg"], "en réunion");
    let asked = b.get(&bt, &path).await;
    assert_eq!((asked["presence"].as_str(), asked["status_msg"].as_str()), (Some("unavailable"), Some("en réunion")));
    let a_since = a.sync_token(&at).await;
    let status = json!({ "presence": "online", "status_msg": "disponible" });
    b.put(&bt, &format!("/_matrix/client/v3/presence/{}/status", enc(&bob)), status).await;
    a.wait_sync(&at, Some(&a_since), SYNC_WAIT, "bob's presence", |s| {
        presence_of(s, &bob).is_some_and(|p| p["presence"] == "online" && p["status_msg"] == "disponible")
    })
    .await;
}

#[tokio::test]
async fn profile_and_directory_queries() {
    let (a, b) = two_nodes().await;
    let (alice, at) = a.register("alice").await;
    let (_, bt) = b.register("bob").await;
    a.set_displayname(&at, &alice, "Alice d'A").await;
    let room = a
        .create_room(
            &at,
            json!({ "preset": "public_chat", "room_alias_name": "annuaire", "visibility": "public",
                    "name": "Annuaire des services" }),
        )
        .await;

    // Profiles of A's users, asked on B.
    let profile = b.get(&bt, &format!("/_matrix/client/v3/profile/{}", enc(&alice))).await;
    assert_eq!(profile["displayname"], "Alice d'A", "{profile}");
    let name = b.get(&bt, &format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice))).await;
    assert_eq!(name["displayname"], "Alice d'A", "{name}");
    let nobody = a.user_id("personne");
    let (status, error) =
        b.call(Method::GET, Some(&bt), &format!("/_matrix/client/v3/profile/{}", enc(&nobody)), None).await;
    assert_eq!((status, error["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{nobody}: {error}");

    // A's aliases, resolved on B.
    let alias = format!("#annuaire:{}", a.server_name());
    let found = b.get(&bt, &format!("/_matrix/client/v3/directory/room/{}", enc(&alias))).await;
    assert_eq!(found["room_id"], room.as_str(), "{found}");
    let servers: Vec<&str> = found["servers"].as_array().expect("servers").iter().filter_map(Value::as_str).collect();
    assert!(servers.contains(&a.server_name().as_str()), "A is among the servers: {servers:?}");
    let unknown = format!("#inconnu:{}", a.server_name());
    let (status, error) =
        b.call(Method::GET, Some(&bt), &format!("/_matrix/client/v3/directory/room/{}", enc(&unknown)), None).await;
    assert_eq!((status, error["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{unknown}: {error}");

    // A's public room directory, browsed and searched from B.
    let server = enc(&a.server_name());
    let listed = b.get(&bt, &format!("/_matrix/client/v3/publicRooms?server={server}")).await;
    let chunk = listed["chunk"].as_array().expect("chunk");
    let entry = chunk.iter().find(|r| r["room_id"] == room.as_str()).unwrap_or_else(|| panic!("listed: {listed}"));
    assert_eq!(entry["name"], "Annuaire des services");
    assert_eq!(entry["num_joined_members"], 1);
    let path = format!("/_matrix/client/v3/publicRooms?server={server}");
    let found = b.post(&bt, &path, json!({ "filter": { "generic_search_term": "annuaire" }, "limit": 5 })).await;
    let ids: Vec<&str> =
        found["chunk"].as_array().expect("chunk").iter().filter_map(|r| r["room_id"].as_str()).collect();
    assert_eq!(ids, vec![room.as_str()], "the search on A's directory: {found}");
    let none = b.post(&bt, &path, json!({ "filter": { "generic_search_term": "introuvable" } })).await;
    assert_eq!(none["chunk"], json!([]), "{none}");
    let local = b.get(&bt, "/_matrix/client/v3/publicRooms").await;
    assert_eq!(local["chunk"], json!([]), "B's own directory stays B's: {local}");
}

#[tokio::test]
async fn knock_and_restricted_join_across_nodes() {
    let (a, b) = two_nodes().await;
    let (alice, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let (carol, ct) = b.register("carol").await;
    let via = [a.server_name()];

    // Knock: a knockable room on A; bob knocks from B.
    let knockable = a
        .create_room(
            &at,
            json!({ "room_version": "10", "name": "Sur demande",
                    "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }] }),
        )
        .await;
    let a_since = a.sync_token(&at).await;
    let b_since = b.sync_token(&bt).await;
    let path = format!("/_matrix/client/v3/knock/{}?via={}", enc(&knockable), enc(&a.server_name()));
    let (status, knocked) =
        b.call(Method::POST, Some(&bt), &path, Some(&json!({ "reason": "je suis du service" }))).await;
    assert_eq!(status, 200, "bob knocks through A: {knocked}");
    assert_eq!(knocked["room_id"], knockable.as_str());
    let knock = b
        .wait_sync(&bt, Some(&b_since), SYNC_WAIT, "bob's knock", |s| s["rooms"]["knock"][&knockable].is_object())
        .await;
    let state = knock["rooms"]["knock"][&knockable]["knock_state"]["events"].as_array().expect("knock_state");
    assert!(
        state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Sur demande"),
        "the knock state names the room: {state:?}"
    );
    assert!(state.iter().any(|e| is_membership(e, &bob, "knock")), "the knock itself is in the knock state: {state:?}");
    let seen =
        a.wait_for_timeline(&at, &knockable, Some(&a_since), |e| is_membership(e, &bob, "knock"), SYNC_WAIT).await;
    let on_a = seen.events.iter().find(|e| is_membership(e, &bob, "knock")).expect("the knock on A");
    assert_eq!(on_a["content"]["reason"], "je suis du service");

    // Alice lets bob in: the invite reaches B, bob joins.
    a.invite(&at, &knockable, &bob).await;
    b.wait_sync(&bt, Some(&next_batch(&knock)), SYNC_WAIT, "the invite after the knock", |s| {
        s["rooms"]["invite"][&knockable].is_object()
    })
    .await;
    b.join(&bt, &knockable, &via).await;
    a.wait_for_timeline(&at, &knockable, Some(&seen.next_batch), |e| is_membership(e, &bob, "join"), SYNC_WAIT).await;
    assert_eq!(a.joined_members(&at, &knockable).await, BTreeSet::from([alice.clone(), bob.clone()]));

    // Restricted: members of the knockable room may join `restricted` without an invite.
    let allow = json!([{ "type": "m.room_membership", "room_id": knockable }]);
    let restricted = a
        .create_room(
            &at,
            json!({ "room_version": "10",
                    "initial_state": [{ "type": "m.room.join_rules",
                                        "content": { "join_rule": "restricted", "allow": allow } }] }),
        )
        .await;
    let (status, error) = b.try_join(&ct, &restricted, &via).await;
    assert_eq!((status, error["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "carol is in no allowed room: {error}");
    assert!(!a.joined_members(&at, &restricted).await.contains(&carol));
    let a_since = a.sync_token(&at).await;
    b.join(&bt, &restricted, &via).await;
    let seen =
        a.wait_for_timeline(&at, &restricted, Some(&a_since), |e| is_membership(e, &bob, "join"), SYNC_WAIT).await;
    let join = seen.events.iter().find(|e| is_membership(e, &bob, "join")).expect("bob's join on A");
    assert_eq!(join["content"]["join_authorised_via_users_server"], alice.as_str(), "alice vouched for the join");
    let on_b = b.state_event(&bt, &restricted, "m.room.member", &bob).await;
    assert_eq!(on_b["membership"], "join", "B's own view of bob's membership: {on_b}");
}

#[tokio::test]
async fn space_hierarchy_across_nodes() {
    let (a, b) = two_nodes().await;
    let (_, at) = a.register("alice").await;
    let (_, bt) = b.register("bob").await;
    let (a_name, b_name) = (a.server_name(), b.server_name());
    let space = a
        .create_room(
            &at,
            json!({ "preset": "public_chat", "name": "Ministère", "creation_content": { "type": "m.space" } }),
        )
        .await;
    let open = a.create_room(&at, json!({ "preset": "public_chat", "name": "Accueil" })).await;
    let closed = a.create_room(&at, json!({ "preset": "private_chat", "name": "Cabinet" })).await;
    let on_b = b.create_room(&bt, json!({ "preset": "public_chat", "name": "Antenne B" })).await;
    for (child, server, order, suggested) in
        [(&open, &a_name, "a", true), (&closed, &a_name, "b", false), (&on_b, &b_name, "c", false)]
    {
        let content = json!({ "via": [server], "order": order, "suggested": suggested });
        a.put_state(&at, &space, "m.space.child", child, content).await;
    }

    let names = |page: &Value| -> Vec<String> {
        page["rooms"].as_array().expect("rooms").iter().map(|r| r["name"].as_str().unwrap_or("?").to_owned()).collect()
    };
    let path = format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space));

    // Bob on B, in the space (room ids of version 12 name no server: B learns of the space by
    // joining it): A's public room comes from A, the private one stays hidden, B's is B's.
    b.join(&bt, &space, std::slice::from_ref(&a_name)).await;
    let seen = b.get(&bt, &path).await;
    assert_eq!(names(&seen), ["Ministère", "Accueil", "Antenne B"], "bob's view: {seen}");
    let top = &seen["rooms"][0];
    assert_eq!(top["room_type"], "m.space");
    assert_eq!(top["children_state"].as_array().map(Vec::len), Some(3), "every link is listed: {top}");
    assert_eq!(seen["rooms"][0]["num_joined_members"], 2);
    assert_eq!(seen["rooms"][1]["num_joined_members"], 1);

    // Alice on A: she is in the private room; B's room comes from B.
    let seen = a.get(&at, &path).await;
    assert_eq!(names(&seen), ["Ministère", "Accueil", "Cabinet", "Antenne B"], "alice's view: {seen}");

    // Suggested only, paging one room at a time, depth 0.
    let suggested = b.get(&bt, &format!("{path}?suggested_only=true")).await;
    assert_eq!(names(&suggested), ["Ministère", "Accueil"], "{suggested}");
    let first = b.get(&bt, &format!("{path}?limit=1")).await;
    assert_eq!(names(&first), ["Ministère"]);
    let token = first["next_batch"].as_str().expect("a next page");
    let second = b.get(&bt, &format!("{path}?limit=1&from={}", enc(token))).await;
    assert_eq!(names(&second), ["Accueil"], "{second}");
    let shallow = b.get(&bt, &format!("{path}?max_depth=0")).await;
    assert_eq!(names(&shallow), ["Ministère"], "{shallow}");

    // A room nobody lets bob see.
    let hidden = format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&closed));
    let (status, error) = b.call(Method::GET, Some(&bt), &hidden, None).await;
    assert_eq!((status, error["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{error}");
}

#[tokio::test]
async fn servers_are_found_through_srv_records() {
    use hemicycle_federation_tests::dns::{DnsServer, Srv};
    // B is found through `_matrix-fed._tcp`, C through the older `_matrix._tcp`; neither name
    // has an address of its own (nor a well-known document), only their SRV targets have.
    let (b, c) = tokio::join!(
        Node::start_with("b", Some("b.ministere.test"), &[], &[]),
        Node::start_with("c", Some("c.ministere.test"), &[], &[])
    );
    let srv = |port: u16, target: &str| Srv { priority: 10, weight: 5, port, target: target.to_owned() };
    let dns = DnsServer::start(
        &[
            ("_matrix-fed._tcp.b.ministere.test", srv(b.federation_port(), "federation.b.ministere.test")),
            ("_matrix._tcp.c.ministere.test", srv(c.federation_port(), "matrix.c.ministere.test")),
        ],
        &[
            ("federation.b.ministere.test", std::net::Ipv4Addr::LOCALHOST),
            ("matrix.c.ministere.test", std::net::Ipv4Addr::LOCALHOST),
        ],
    )
    .await;
    let nameservers = toml::Value::Array(vec![dns.addr.to_string().into()]);
    let a = Node::start_with("a", None, &[], &[("federation.nameservers", nameservers)]).await;
    let (_, at) = a.register("alice").await;
    for node in [&b, &c] {
        let (user, token) = node.register("agent").await;
        node.set_displayname(&token, &user, "Agent du ministère").await;
        // A asks the node for its user's profile: A finds it through DNS.
        let profile = a.get(&at, &format!("/_matrix/client/v3/profile/{}", enc(&user))).await;
        assert_eq!(profile["displayname"], "Agent du ministère", "{user} through SRV: {profile}");
        // And events flow both ways in a room of A the user joins.
        let room = a.create_room(&at, json!({ "preset": "public_chat" })).await;
        node.join(&token, &room, &[a.server_name()]).await;
        let since = node.sync_token(&token).await;
        let text = format!("bonjour {}", node.server_name());
        a.send_text(&at, &room, &text).await;
        node.wait_for_bodies(&token, &room, &since, &[text]).await;
    }
}

#[tokio::test]
async fn server_acl_shuts_a_server_out() {
    use hemicycle_federation_tests::dns::{DnsServer, Srv};
    // ACLs match host names, so B gets one of its own (every node here is 127.0.0.1).
    let b = Node::start_with("b", Some("b.ministere.test"), &[], &[]).await;
    let target = Srv { priority: 0, weight: 0, port: b.federation_port(), target: "b.ministere.test".to_owned() };
    let dns = DnsServer::start(
        &[("_matrix-fed._tcp.b.ministere.test", target)],
        &[("b.ministere.test", std::net::Ipv4Addr::LOCALHOST)],
    )
    .await;
    let nameservers = toml::Value::Array(vec![dns.addr.to_string().into()]);
    let a = Node::start_with("a", None, &[], &[("federation.nameservers", nameservers)]).await;
    let (_, at) = a.register("alice").await;
    let (bob, bt) = b.register("bob").await;
    let via = [a.server_name()];
    // A room open to B, and one whose ACL shuts B out from the start (server names match
    // whatever their case).
    let open = a.create_room(&at, json!({ "preset": "public_chat" })).await;
    let deny_b = json!({ "allow": ["*"], "deny": ["*.Ministere.TEST"], "allow_ip_literals": true });
    let acl = json!({ "type": "m.room.server_acl", "state_key": "", "content": deny_b.clone() });
    let closed = a.create_room(&at, json!({ "preset": "public_chat", "initial_state": [acl] })).await;
    b.join(&bt, &open, &via).await;
    let (status, error) = b.try_join(&bt, &closed, &via).await;
    assert_eq!((status, error["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "B is denied by the ACL: {error}");
    let members = a.joined_members(&at, &closed).await;
    assert_eq!(members.len(), 1, "only alice in the closed room: {members:?}");

    // The room B joined gets the same ACL. Bob is still a member, but what B sends for the room
    // from then on is refused by A: his message, his typing, his read receipt.
    let control = a.create_room(&at, json!({ "preset": "public_chat" })).await;
    b.join(&bt, &control, &via).await;
    let b_since = b.sync_token(&bt).await;
    let read = a.send_text(&at, &open, "à lire").await;
    b.wait_for_timeline(&bt, &open, Some(&b_since), |e| e["event_id"] == read.as_str(), SYNC_WAIT).await;
    // (A sends B nothing of the room from now on, the ACL included: bob acts on what B holds.)
    a.put_state(&at, &open, "m.room.server_acl", "", deny_b).await;
    let a_since = a.sync_token(&at).await;
    let refused = b.send_text(&bt, &open, "malgré l'ACL").await;
    b.typing(&bt, &open, &bob, true).await;
    b.read_receipt(&bt, &open, &read).await;
    // A point after which all of it was handled by A: a message in a room without an ACL, later
    // in B's stream, goes in the transaction carrying the above or in a later one; bob's typing
    // in that room, once alice has the message, goes in a transaction after that one, which B
    // sends only once A has answered it, and A answers once it has handled every PDU and EDU.
    let marker = b.send_text(&bt, &control, "après l'ACL").await;
    let seen = a.wait_for_timeline(&at, &control, None, |e| e["event_id"] == marker.as_str(), SYNC_WAIT).await;
    b.typing(&bt, &control, &bob, true).await;
    a.wait_sync(&at, Some(&seen.next_batch), SYNC_WAIT, "bob typing in the room without an ACL", |s| {
        typing_users(s, &control).is_some_and(|users| users.contains(&bob))
    })
    .await;
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&open), enc(&refused));
    let (status, error) = a.call(Method::GET, Some(&at), &path, None).await;
    assert_eq!((status, error["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "A did not take B's event: {error}");
    let since = a.sync(&at, Some(&a_since), 0).await;
    let timeline = since["rooms"]["join"][&open]["timeline"]["events"].as_array().cloned().unwrap_or_default();
    assert!(timeline.iter().all(|e| e["sender"] != bob.as_str()), "nothing of bob in alice's timeline: {timeline:?}");
    let typing = typing_users(&since, &open).is_some_and(|users| users.contains(&bob));
    let receipt =
        ephemeral(&since, &open, "m.receipt").is_some_and(|r| r["content"][&read]["m.read"][&bob].is_object());
    assert_eq!((typing, receipt), (false, false), "bob's typing and receipt in the room whose ACL denies B: {since}");
}
