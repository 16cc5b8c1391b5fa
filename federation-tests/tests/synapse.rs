//! Interoperability with a real Synapse (the `matrix-synapse` release `./scripts/test` installs):
//! one Synapse and one Hemicycle node for the whole run, the scenarios side by side, each in both
//! directions (the room made on Hemicycle, then on Synapse). Every scenario runs to its end even
//! when another fails; the test fails naming every scenario that did.

use std::{collections::BTreeSet, future::Future, pin::Pin, sync::Arc};

use hemicycle_federation_tests::{
    bodies, enc, ephemeral, is_membership, next_batch,
    scenarios::{encrypted_chat, remote_media},
    shared_room, typing_users, Node, SYNC_WAIT,
};
use reqwest::Method;
use serde_json::{json, Value};

/// A scenario run in both directions, boxed so that they can all be listed and spawned.
type Scenario = Box<dyn Fn(Arc<Node>, Arc<Node>) -> Pin<Box<dyn Future<Output = ()> + Send>>>;

/// Both directions of a scenario: `home` holds the room, `away` joins it.
async fn both_ways<F, Fut>(hemicycle: &Arc<Node>, synapse: &Arc<Node>, scenario: F)
where
    F: Fn(Arc<Node>, Arc<Node>) -> Fut,
    Fut: Future<Output = ()>,
{
    scenario(hemicycle.clone(), synapse.clone()).await;
    scenario(synapse.clone(), hemicycle.clone()).await;
}

/// A user name unique to one scenario and direction.
fn who(home: &Node, base: &str) -> String {
    format!("{base}_{}", if home.is_synapse() { "s" } else { "h" })
}

fn event_ids_of(state: &[Value]) -> BTreeSet<String> {
    state.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect()
}

async fn join_by_alias_and_messages(home: Arc<Node>, away: Arc<Node>) {
    let (alice, at) = home.register(&who(&home, "alias_a")).await;
    let (bob, bt) = away.register(&who(&home, "alias_b")).await;
    let localpart = who(&home, "salon");
    let room = home.create_room(&at, json!({ "preset": "public_chat", "room_alias_name": localpart })).await;
    let alias = format!("#{localpart}:{}", home.server_name());
    let since = home.sync_token(&at).await;
    assert_eq!(away.join(&bt, &alias, &[]).await, room, "the alias of {} resolves", home.server_name());
    home.wait_for_timeline(&at, &room, Some(&since), |e| is_membership(e, &bob, "join"), SYNC_WAIT).await;
    let (home_since, away_since) = (home.sync_token(&at).await, away.sync_token(&bt).await);
    let mut sent = Vec::new();
    for i in 0..3 {
        let (from_home, from_away) = (format!("{alice} {i}"), format!("{bob} {i}"));
        home.send_text(&at, &room, &from_home).await;
        away.send_text(&bt, &room, &from_away).await;
        sent.extend([from_home, from_away]);
    }
    let on_home = home.wait_for_bodies(&at, &room, &home_since, &sent).await;
    let on_away = away.wait_for_bodies(&bt, &room, &away_since, &sent).await;
    // Each side's own messages keep their order on the other side.
    for (timeline, side) in [(&on_home, "home"), (&on_away, "away")] {
        for sender in [&alice, &bob] {
            let mine: Vec<String> = timeline.bodies().into_iter().filter(|b| b.starts_with(sender.as_str())).collect();
            let expected: Vec<String> = (0..3).map(|i| format!("{sender} {i}")).collect();
            assert_eq!(mine, expected, "{sender}'s messages in order on the {side} side");
        }
    }
    // A join by room id with `via` works too.
    let (_, ct) = away.register(&who(&home, "alias_c")).await;
    assert_eq!(away.join(&ct, &room, &[home.server_name()]).await, room);
}

async fn room_versions(home: Arc<Node>, away: Arc<Node>) {
    let (_, at) = home.register(&who(&home, "versions_a")).await;
    let (_, bt) = away.register(&who(&home, "versions_b")).await;
    for version in ["10", "11", "12"] {
        let room = home.create_room(&at, json!({ "preset": "public_chat", "room_version": version })).await;
        away.join(&bt, &room, &[home.server_name()]).await;
        let since = away.sync_token(&bt).await;
        let text = format!("version {version}");
        home.send_text(&at, &room, &text).await;
        away.wait_for_bodies(&bt, &room, &since, &[text]).await;
        let create = away.state_event(&bt, &room, "m.room.create", "").await;
        let seen = create["room_version"].as_str().unwrap_or("1");
        assert_eq!(seen, version, "the room version as the joining side has it: {create}");
    }
}

async fn state_seen_identically(home: Arc<Node>, away: Arc<Node>) {
    let (_, at) = home.register(&who(&home, "state_a")).await;
    let (bob, bt) = away.register(&who(&home, "state_b")).await;
    let room = shared_room(&home, &at, &away, &bt, &bob).await;
    let since = away.sync_token(&bt).await;
    home.put_state(&at, &room, "m.room.name", "", json!({ "name": "Salon commun" })).await;
    home.put_state(&at, &room, "m.room.topic", "", json!({ "topic": "Coordination" })).await;
    let mut power = home.state_event(&at, &room, "m.room.power_levels", "").await;
    power["users"][&bob] = json!(50);
    home.put_state(&at, &room, "m.room.power_levels", "", power).await;
    home.put_state(&at, &room, "m.room.history_visibility", "", json!({ "history_visibility": "joined" })).await;
    let last = home.put_state(&at, &room, "m.room.join_rules", "", json!({ "join_rule": "invite" })).await;
    away.wait_for_timeline(&bt, &room, Some(&since), |e| e["event_id"] == last.as_str(), SYNC_WAIT).await;
    let (on_home, on_away) = (home.get_state(&at, &room).await, away.get_state(&bt, &room).await);
    assert_eq!(event_ids_of(&on_home), event_ids_of(&on_away), "the same state, event by event");
    let name = away.state_event(&bt, &room, "m.room.name", "").await;
    assert_eq!(name["name"], "Salon commun");
}

async fn membership_changes(home: Arc<Node>, away: Arc<Node>) {
    let (alice, at) = home.register(&who(&home, "member_a")).await;
    let (bob, bt) = away.register(&who(&home, "member_b")).await;
    let room = home.create_room(&at, json!({ "preset": "public_chat" })).await;
    let via = [home.server_name()];
    let b_since = away.sync_token(&bt).await;
    // Invite, then reject.
    home.invite(&at, &room, &bob).await;
    let invited =
        away.wait_sync(&bt, Some(&b_since), SYNC_WAIT, "the invite", |s| s["rooms"]["invite"][&room].is_object()).await;
    let a_since = home.sync_token(&at).await;
    away.leave(&bt, &room).await;
    home.wait_for_timeline(&at, &room, Some(&a_since), |e| is_membership(e, &bob, "leave"), SYNC_WAIT).await;
    // Invite again and accept; leave; come back (public room).
    home.invite(&at, &room, &bob).await;
    away.wait_sync(&bt, Some(&next_batch(&invited)), SYNC_WAIT, "the second invite", |s| {
        s["rooms"]["invite"][&room].is_object()
    })
    .await;
    away.join(&bt, &room, &via).await;
    let a_since = home.sync_token(&at).await;
    away.leave(&bt, &room).await;
    home.wait_for_timeline(&at, &room, Some(&a_since), |e| is_membership(e, &bob, "leave"), SYNC_WAIT).await;
    away.join(&bt, &room, &via).await;
    assert_eq!(home.joined_members(&at, &room).await, BTreeSet::from([alice.clone(), bob.clone()]));
    // Kick: the other side sees it; bob comes back by himself.
    let b_since = away.sync_token(&bt).await;
    home.kick(&at, &room, &bob, "hors sujet").await;
    away.wait_for_timeline(&bt, &room, Some(&b_since), |e| is_membership(e, &bob, "leave"), SYNC_WAIT).await;
    away.join(&bt, &room, &via).await;
    // Ban: seen, and joining again is refused.
    let b_since = away.sync_token(&bt).await;
    home.ban(&at, &room, &bob, "récidive").await;
    away.wait_for_timeline(&bt, &room, Some(&b_since), |e| is_membership(e, &bob, "ban"), SYNC_WAIT).await;
    let (status, error) = away.try_join(&bt, &room, &via).await;
    assert_eq!(status, 403, "a banned user cannot rejoin: {error}");
    assert_eq!(home.state_event(&at, &room, "m.room.member", &bob).await["membership"], "ban");
}

async fn history_before_the_join(home: Arc<Node>, away: Arc<Node>) {
    let (_, at) = home.register(&who(&home, "history_a")).await;
    let (_, bt) = away.register(&who(&home, "history_b")).await;
    let shared = json!({ "type": "m.room.history_visibility", "state_key": "",
                         "content": { "history_visibility": "shared" } });
    let room = home.create_room(&at, json!({ "preset": "public_chat", "initial_state": [shared] })).await;
    let sent: Vec<String> = (0..40).map(|i| format!("archive {i}")).collect();
    for text in &sent {
        home.send_text(&at, &room, text).await;
    }
    away.join(&bt, &room, &[home.server_name()]).await;
    // One `/messages` from the join back, with room for the whole history (40 messages and the
    // room's first state events): the joining side fetches what it lacks from the room's side
    // (`/backfill`, up to 100 events, which both servers ask for) before answering, and the
    // answer must hold everything, back to the creation. No second try: an incomplete
    // `/backfill` answer fails here.
    let first = away.sync_with_filter(&bt, None, 0, r#"{"room":{"timeline":{"limit":1}}}"#).await;
    let from = first["rooms"]["join"][&room]["timeline"]["prev_batch"].as_str().expect("prev_batch").to_owned();
    let page = away.messages(&bt, &room, "b", Some(&from), 100).await;
    let older = page["chunk"].as_array().cloned().unwrap_or_default();
    let expected: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(bodies(&older), expected, "every message before the join on {}, newest first", away.server_name());
    assert_eq!(older.last().map(|e| e["type"].clone()), Some(json!("m.room.create")), "back to the creation");
}

async fn profile_alias_and_directory(home: Arc<Node>, away: Arc<Node>) {
    let (alice, at) = home.register(&who(&home, "query_a")).await;
    let (_, bt) = away.register(&who(&home, "query_b")).await;
    home.set_displayname(&at, &alice, "Agent d'en face").await;
    let localpart = who(&home, "annuaire");
    let name = format!("Annuaire {}", who(&home, "x"));
    let room = home
        .create_room(
            &at,
            json!({ "preset": "public_chat", "room_alias_name": localpart, "visibility": "public", "name": name }),
        )
        .await;
    let profile = away.get(&bt, &format!("/_matrix/client/v3/profile/{}", enc(&alice))).await;
    assert_eq!(profile["displayname"], "Agent d'en face", "{profile}");
    let alias = format!("#{localpart}:{}", home.server_name());
    let found = away.get(&bt, &format!("/_matrix/client/v3/directory/room/{}", enc(&alias))).await;
    assert_eq!(found["room_id"], room.as_str(), "{found}");
    // Synapse fills its directory from room statistics a moment after the room is made: there
    // is nothing to wait on but the answer itself, so it is asked again (bounded).
    let path = format!("/_matrix/client/v3/publicRooms?server={}", enc(&home.server_name()));
    let deadline = std::time::Instant::now() + SYNC_WAIT;
    loop {
        let listed = away.post(&bt, &path, json!({ "filter": { "generic_search_term": name } })).await;
        let chunk = listed["chunk"].as_array().expect("chunk");
        let ids: Vec<&str> = chunk.iter().filter_map(|r| r["room_id"].as_str()).collect();
        if !ids.is_empty() || std::time::Instant::now() > deadline {
            assert_eq!(
                ids,
                vec![room.as_str()],
                "{}'s directory, searched from the other side: {listed}",
                home.server_name()
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

async fn typing_receipts_presence(home: Arc<Node>, away: Arc<Node>) {
    let (alice, at) = home.register(&who(&home, "edu_a")).await;
    let (bob, bt) = away.register(&who(&home, "edu_b")).await;
    let room = shared_room(&home, &at, &away, &bt, &bob).await;
    let since = away.sync_token(&bt).await;
    let event = home.send_text(&at, &room, "lu ?").await;
    let seen = away.wait_for_timeline(&bt, &room, Some(&since), |e| e["event_id"] == event.as_str(), SYNC_WAIT).await;
    home.typing(&at, &room, &alice, true).await;
    away.wait_sync(&bt, Some(&seen.next_batch), SYNC_WAIT, "typing", |s| {
        typing_users(s, &room).is_some_and(|users| users.contains(&alice))
    })
    .await;
    let a_since = home.sync_token(&at).await;
    away.read_receipt(&bt, &room, &event).await;
    home.wait_sync(&at, Some(&a_since), SYNC_WAIT, "the read receipt", |s| {
        ephemeral(s, &room, "m.receipt").is_some_and(|r| r["content"][&event]["m.read"][&bob].is_object())
    })
    .await;
    let b_since = away.sync_token(&bt).await;
    let status = json!({ "presence": "unavailable", "status_msg": "en réunion" });
    home.put(&at, &format!("/_matrix/client/v3/presence/{}/status", enc(&alice)), status).await;
    away.wait_sync(&bt, Some(&b_since), SYNC_WAIT, "presence", |s| {
        s["presence"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| e["sender"] == alice.as_str() && e["content"]["presence"] == "unavailable")
        })
    })
    .await;
}

async fn encrypted_messages(home: Arc<Node>, away: Arc<Node>) {
    encrypted_chat(&home, &away, &who(&home, "_e2ee")).await;
}

async fn media(home: Arc<Node>, away: Arc<Node>) {
    remote_media(&home, &away, &who(&home, "_media")).await;
}

async fn knock(home: Arc<Node>, away: Arc<Node>) {
    let (alice, at) = home.register(&who(&home, "knock_a")).await;
    let (bob, bt) = away.register(&who(&home, "knock_b")).await;
    let room = home
        .create_room(
            &at,
            json!({ "room_version": "10", "name": "Sur demande",
                    "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }] }),
        )
        .await;
    let (a_since, b_since) = (home.sync_token(&at).await, away.sync_token(&bt).await);
    let path = format!("/_matrix/client/v3/knock/{}?via={}", enc(&room), enc(&home.server_name()));
    let (status, knocked) = away.call(Method::POST, Some(&bt), &path, Some(&json!({ "reason": "du service" }))).await;
    assert_eq!(status, 200, "the knock: {knocked}");
    let seen =
        away.wait_sync(&bt, Some(&b_since), SYNC_WAIT, "the knock", |s| s["rooms"]["knock"][&room].is_object()).await;
    let state = seen["rooms"]["knock"][&room]["knock_state"]["events"].as_array().cloned().unwrap_or_default();
    assert!(state.iter().any(|e| e["type"] == "m.room.name"), "the knock state names the room: {state:?}");
    home.wait_for_timeline(&at, &room, Some(&a_since), |e| is_membership(e, &bob, "knock"), SYNC_WAIT).await;
    home.invite(&at, &room, &bob).await;
    away.wait_sync(&bt, Some(&next_batch(&seen)), SYNC_WAIT, "the invite", |s| s["rooms"]["invite"][&room].is_object())
        .await;
    away.join(&bt, &room, &[home.server_name()]).await;
    assert_eq!(home.joined_members(&at, &room).await, BTreeSet::from([alice, bob]));
}

/// Takes a node down: Synapse is killed (as by `kill -9`), Hemicycle stopped gracefully (its
/// kill -9 case is `killed_node_catches_up`).
async fn down(node: &mut Node) {
    if node.is_synapse() {
        node.kill().await;
    } else {
        node.stop().await;
    }
}

/// The side that joins the room down mid-conversation, then a partition with renames on both
/// sides (each side down while the other speaks); both must end with every message, each once,
/// and one state. `hemicycle`/`synapse` name the roles: the room is made on the first.
async fn outage_and_partition(hemicycle: &mut Node, synapse: &mut Node) {
    let (_, at) = hemicycle.register(&who(hemicycle, "outage_a")).await;
    let (bob, bt) = synapse.register(&who(hemicycle, "outage_b")).await;
    let room = shared_room(hemicycle, &at, synapse, &bt, &bob).await;
    let b_since = synapse.sync_token(&bt).await;
    let mut power = hemicycle.state_event(&at, &room, "m.room.power_levels", "").await;
    power["users"][&bob] = json!(100);
    let raised = hemicycle.put_state(&at, &room, "m.room.power_levels", "", power).await;
    let seen =
        synapse.wait_for_timeline(&bt, &room, Some(&b_since), |e| e["event_id"] == raised.as_str(), SYNC_WAIT).await;

    // Synapse down while Hemicycle's user talks: everything arrives once it is back, once, in order.
    down(synapse).await;
    let during: Vec<String> = (0..5).map(|i| format!("pendant la panne {i}")).collect();
    for text in &during {
        hemicycle.send_text(&at, &room, text).await;
    }
    synapse.restart().await;
    let got = synapse.wait_for_bodies(&bt, &room, &seen.next_batch, &during).await;
    let mine: Vec<String> = got.bodies().into_iter().filter(|b| b.starts_with("pendant la panne")).collect();
    assert_eq!(mine, during, "every message sent while Synapse was down, once, in order");

    // A partition: Hemicycle renames while Synapse is down, then Synapse while Hemicycle is down.
    let (a_since, b_since) = (hemicycle.sync_token(&at).await, synapse.sync_token(&bt).await);
    down(synapse).await;
    for name in ["Hémicycle 1", "Hémicycle 2", "Hémicycle 3"] {
        hemicycle.put_state(&at, &room, "m.room.name", "", json!({ "name": name })).await;
    }
    hemicycle.send_text(&at, &room, "côté Hemicycle").await;
    down(hemicycle).await;
    synapse.restart().await;
    for name in ["Synapse 1", "Synapse 2", "Synapse 3"] {
        synapse.put_state(&bt, &room, "m.room.name", "", json!({ "name": name })).await;
    }
    synapse.send_text(&bt, &room, "côté Synapse").await;
    hemicycle.restart().await;
    let both = ["côté Hemicycle".to_owned(), "côté Synapse".to_owned()];
    hemicycle.wait_for_bodies(&at, &room, &a_since, &both).await;
    synapse.wait_for_bodies(&bt, &room, &b_since, &both).await;
    // One more message each way ties the two branches; then both hold one current state. The
    // other side's resolution happens when its events arrive, so the comparison is asked again
    // (bounded) until both answer the same.
    let (a_since, b_since) = (hemicycle.sync_token(&at).await, synapse.sync_token(&bt).await);
    let ties = ["après Hemicycle".to_owned(), "après Synapse".to_owned()];
    hemicycle.send_text(&at, &room, &ties[0]).await;
    synapse.send_text(&bt, &room, &ties[1]).await;
    hemicycle.wait_for_bodies(&at, &room, &a_since, &ties).await;
    synapse.wait_for_bodies(&bt, &room, &b_since, &ties).await;
    let deadline = std::time::Instant::now() + SYNC_WAIT;
    loop {
        let (on_h, on_s) = (hemicycle.get_state(&at, &room).await, synapse.get_state(&bt, &room).await);
        if event_ids_of(&on_h) == event_ids_of(&on_s) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the two sides never agreed on the state:\n{on_h:?}\n{on_s:?}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let (h_name, s_name) = (
        hemicycle.state_event(&at, &room, "m.room.name", "").await,
        synapse.state_event(&bt, &room, "m.room.name", "").await,
    );
    assert_eq!(h_name, s_name, "one name on both sides");
}

fn scenario<F, Fut>(f: F) -> impl Fn(Arc<Node>, Arc<Node>) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    F: Fn(Arc<Node>, Arc<Node>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    move |h, s| {
        Box::pin(async move {
            both_ways(&h, &s, f).await;
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hemicycle_and_synapse_federate_both_ways() {
    let (hemicycle, synapse) = tokio::join!(Node::start("h", &[]), Node::start_synapse("s"));
    let (hemicycle, synapse) = (Arc::new(hemicycle), Arc::new(synapse));
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("join by alias and messages", Box::new(scenario(join_by_alias_and_messages))),
        ("room versions 10, 11, 12", Box::new(scenario(room_versions))),
        ("state seen identically", Box::new(scenario(state_seen_identically))),
        ("invite, reject, leave, kick, ban", Box::new(scenario(membership_changes))),
        ("history before the join", Box::new(scenario(history_before_the_join))),
        ("profile, alias and directory", Box::new(scenario(profile_alias_and_directory))),
        ("typing, receipts, presence", Box::new(scenario(typing_receipts_presence))),
        ("encrypted messages and device lists", Box::new(scenario(encrypted_messages))),
        ("media and thumbnails", Box::new(scenario(media))),
        ("knock", Box::new(scenario(knock))),
    ];
    let running: Vec<(&str, tokio::task::JoinHandle<()>)> = scenarios
        .into_iter()
        .map(|(name, run)| (name, tokio::spawn(run(hemicycle.clone(), synapse.clone()))))
        .collect();
    let mut failed = Vec::new();
    for (name, task) in running {
        if let Err(error) = task.await {
            failed.push(format!("{name}: {error}"));
        }
    }
    // Last, as it stops and starts both servers: outages and a partition.
    let (mut hemicycle, mut synapse) = (
        Arc::try_unwrap(hemicycle).unwrap_or_else(|_| panic!("the scenarios are done with Hemicycle")),
        Arc::try_unwrap(synapse).unwrap_or_else(|_| panic!("the scenarios are done with Synapse")),
    );
    for direction in ["room on Hemicycle", "room on Synapse"] {
        let outage = async {
            if direction == "room on Hemicycle" {
                outage_and_partition(&mut hemicycle, &mut synapse).await
            } else {
                outage_and_partition(&mut synapse, &mut hemicycle).await
            }
        };
        if let Err(panic) = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outage)).await {
            let message =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            failed.push(format!("outage and partition, {direction}: {}", message.unwrap_or_default()));
        }
    }
    assert!(failed.is_empty(), "scenarios that failed against Synapse:\n{}", failed.join("\n"));
}
