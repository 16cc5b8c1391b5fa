//! What matrix-sdk (the SDK Element X is built on) sees of the server, driven through its own
//! state machines: history shared with an invite (MSC4268), SAS verification between two users,
//! why an event cannot be decrypted (`unsigned.membership`), and the avatars of sliding sync's
//! room list (issue 35).

use std::time::{Duration, Instant};

use matrix_sdk::{
    config::SyncSettings,
    deserialized_responses::TimelineEventKind,
    room::MessagesOptions,
    ruma::{
        api::client::room::create_room::v3::Request as CreateRoom,
        events::{
            room::{encryption::RoomEncryptionEventContent, message::RoomMessageEventContent},
            InitialStateEvent,
        },
        EventId, OwnedEventId, OwnedMxcUri, OwnedRoomId, RoomId,
    },
    sliding_sync::Version,
    Client, RoomState, SlidingSyncList, SlidingSyncMode,
};
use matrix_sdk_crypto::types::events::{CryptoContextInfo, UtdCause};
use serde_json::{json, Value};

use crate::common::{api, upload, urlencode, TestServer};

/// How long a step may take before the test names it as the one that hung.
const WAIT: Duration = Duration::from_secs(30);

/// One sync that returns at once.
async fn sync(client: &Client) {
    client.sync_once(SyncSettings::default().timeout(Duration::ZERO)).await.unwrap();
}

/// One sync of each client, each long-polling briefly: whatever one of them is waiting for (a
/// to-device message of the other) wakes its sync instead of a sleep.
async fn sync_both(a: &Client, b: &Client) {
    let settings = || SyncSettings::default().timeout(Duration::from_millis(500));
    let (x, y) = tokio::join!(a.sync_once(settings()), b.sync_once(settings()));
    x.unwrap();
    y.unwrap();
}

fn check_deadline(start: Instant, what: &str) {
    assert!(start.elapsed() < WAIT, "{what}: not within {WAIT:?}");
}

/// An encrypted room (the `private_chat` preset: history `shared`) made by `owner`.
async fn encrypted_room(owner: &Client) -> OwnedRoomId {
    let mut request = CreateRoom::new();
    request.initial_state =
        vec![InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults())
            .to_raw_any()];
    owner.create_room(request).await.unwrap().room_id().to_owned()
}

async fn send(client: &Client, room: &RoomId, body: &str) -> OwnedEventId {
    let room = client.get_room(room).unwrap();
    room.send(RoomMessageEventContent::text_plain(body)).await.unwrap().response.event_id
}

/// Syncs `client` until the room is an invite in its store.
async fn wait_invited(client: &Client, room: &RoomId) {
    let start = Instant::now();
    while client.get_room(room).map(|r| r.state()) != Some(RoomState::Invited) {
        check_deadline(start, "the invite reaches the invitee's client");
        client.sync_once(SyncSettings::default().timeout(Duration::from_millis(500))).await.unwrap();
    }
}

/// The events of `room` that `client` reads back through `/messages` (newest first), as the
/// SDK hands them over: decrypted, or not.
async fn history(client: &Client, room: &RoomId) -> Vec<(OwnedEventId, TimelineEventKind)> {
    let room = client.get_room(room).unwrap();
    let mut options = MessagesOptions::backward();
    options.limit = 100u32.into();
    let messages = room.messages(options).await.unwrap();
    messages.chunk.into_iter().filter_map(|event| Some((event.event_id()?, event.kind))).collect()
}

/// The body of a decrypted event; `None` for anything else.
fn decrypted_body(kind: &TimelineEventKind) -> Option<String> {
    let TimelineEventKind::Decrypted(decrypted) = kind else { return None };
    let content: Value = decrypted.event.get_field("content").ok()??;
    content["body"].as_str().map(str::to_owned)
}

/// An event Bob cannot decrypt because it was sent before he was in the room says so: its
/// `unsigned.membership` is `leave`, and matrix-sdk's own diagnosis of the failure (the reason
/// Element X shows) is "sent before we joined", not an unexplained error (item 4).
#[tokio::test]
async fn an_undecryptable_event_from_before_joining_is_explained() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    sync(&alice).await;
    sync(&bob).await;
    // No cross-signing: Alice's client shares no history with the invite.
    let room = encrypted_room(&alice).await;
    sync(&alice).await;
    let before = send(&alice, &room, "avant ton arrivée").await;
    alice.get_room(&room).unwrap().invite_user_by_id(bob.user_id().unwrap()).await.unwrap();
    wait_invited(&bob, &room).await;
    bob.get_room(&room).unwrap().join().await.unwrap();
    sync_both(&alice, &bob).await;
    let after = send(&alice, &room, "bienvenue").await;
    sync(&bob).await;

    let seen = history(&bob, &room).await;
    let kind_of = |event: &EventId| {
        seen.iter().find(|(id, _)| id == event).map(|(_, k)| k.clone()).unwrap_or_else(|| panic!("{event} seen"))
    };
    assert_eq!(decrypted_body(&kind_of(&after)).as_deref(), Some("bienvenue"));
    let TimelineEventKind::UnableToDecrypt { event, utd_info } = kind_of(&before) else {
        panic!("the message from before Bob was invited has no key for him")
    };
    // A device made at the epoch: the event is not older than the device, so only the
    // membership can explain the failure.
    let context = CryptoContextInfo {
        device_creation_ts: matrix_sdk::ruma::MilliSecondsSinceUnixEpoch(0u32.into()),
        this_device_is_verified: false,
        backup_exists_on_server: false,
        is_backup_configured: false,
    };
    assert_eq!(UtdCause::determine(&event, context, &utd_info), UtdCause::SentBeforeWeJoined);
    let unsigned: Value = event.get_field("unsigned").unwrap().expect("unsigned");
    assert_eq!(unsigned["membership"], "leave", "{unsigned}");

    // The same event read alone (`/event`) carries it too.
    let single = bob.get_room(&room).unwrap().event(&before, None).await.unwrap();
    let unsigned: Value = single.raw().get_field("unsigned").unwrap().expect("unsigned");
    assert_eq!(unsigned["membership"], "leave");
}

/// `unsigned.membership` is the reader's membership at each event, on every path that serves
/// room events (`/sync`, sliding sync, `/messages`, `/context`, `/event`, `/relations`,
/// `/threads` and the thread summary, `/search`): `leave` before any membership, `invite` from
/// the invite on, `join` from the join on, the reader's own membership event included.
#[tokio::test]
async fn every_read_path_carries_the_readers_membership_at_the_event() {
    let server = TestServer::start();
    let (_, a) = crate::common::register_raw(&server, "alice").await;
    let (bob, b) = crate::common::register_raw(&server, "bob").await;
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let put = reqwest::Method::PUT;
    let (_, created) = api(
        &server,
        post.clone(),
        Some(&a),
        "/_matrix/client/v3/createRoom",
        Some(json!({ "preset": "private_chat" })),
    )
    .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let r = urlencode(&room);
    let mut n = 0;
    let mut send = |token: String, content: Value| {
        n += 1;
        let path = format!("/_matrix/client/v3/rooms/{r}/send/m.room.message/t{n}");
        let server = &server;
        let put = put.clone();
        async move {
            let (status, sent) = api(server, put, Some(&token), &path, Some(content)).await;
            assert_eq!(status, 200, "{sent}");
            sent["event_id"].as_str().unwrap().to_owned()
        }
    };
    let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
    let before = send(a.clone(), text("parapluie avant l'invitation")).await;
    let (status, _) = api(
        &server,
        post.clone(),
        Some(&a),
        &format!("/_matrix/client/v3/rooms/{r}/invite"),
        Some(json!({ "user_id": bob })),
    )
    .await;
    assert_eq!(status, 200);
    let invited = send(a.clone(), text("pendant l'invitation")).await;
    let (status, joined) =
        api(&server, post.clone(), Some(&b), &format!("/_matrix/client/v3/rooms/{r}/join"), Some(json!({}))).await;
    assert_eq!(status, 200, "{joined}");
    let root = send(a.clone(), text("après l'arrivée")).await;
    let reply = send(
        a.clone(),
        json!({ "msgtype": "m.text", "body": "dans le fil",
                "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
    )
    .await;
    let expected =
        [(before.as_str(), "leave"), (invited.as_str(), "invite"), (root.as_str(), "join"), (reply.as_str(), "join")];
    // Every event of `events` that the test knows has the membership expected at it; the
    // reader's own invite and join events say `invite` and `join`.
    let check = |events: &[Value], what: &str| {
        let mut checked = 0;
        for event in events {
            let id = event["event_id"].as_str().unwrap_or_default();
            let own = event["type"] == "m.room.member" && event["state_key"] == bob.as_str();
            let want = match expected.iter().find(|(e, _)| *e == id) {
                Some((_, want)) => *want,
                None if own => event["content"]["membership"].as_str().unwrap(),
                None => continue,
            };
            assert_eq!(event["unsigned"]["membership"], want, "{what}: {event}");
            checked += 1;
        }
        checked
    };

    let filter = urlencode(&json!({ "room": { "timeline": { "limit": 50 } } }).to_string());
    let (_, synced) =
        api(&server, get.clone(), Some(&b), &format!("/_matrix/client/v3/sync?filter={filter}"), None).await;
    let timeline = synced["rooms"]["join"][&room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(check(&timeline, "/sync"), 6, "{timeline:?}");

    let sliding = json!({ "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 50 } } });
    let (_, slid) = api(
        &server,
        post.clone(),
        Some(&b),
        "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
        Some(sliding),
    )
    .await;
    let timeline = slid["rooms"][&room]["timeline"].as_array().cloned().unwrap_or_default();
    assert_eq!(check(&timeline, "sliding sync"), 6, "{slid}");

    let (_, messages) =
        api(&server, get.clone(), Some(&b), &format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=50"), None)
            .await;
    assert_eq!(check(messages["chunk"].as_array().unwrap(), "/messages"), 6, "{messages}");

    let (_, context) = api(
        &server,
        get.clone(),
        Some(&b),
        &format!("/_matrix/client/v3/rooms/{r}/context/{}?limit=10", urlencode(&invited)),
        None,
    )
    .await;
    let mut around = vec![context["event"].clone()];
    around.extend(context["events_before"].as_array().cloned().unwrap_or_default());
    around.extend(context["events_after"].as_array().cloned().unwrap_or_default());
    assert_eq!(check(&around, "/context"), 6, "{context}");

    for (event, _) in &expected {
        let (_, single) = api(
            &server,
            get.clone(),
            Some(&b),
            &format!("/_matrix/client/v3/rooms/{r}/event/{}", urlencode(event)),
            None,
        )
        .await;
        assert_eq!(check(std::slice::from_ref(&single), "/event"), 1);
    }

    let (_, relations) = api(
        &server,
        get.clone(),
        Some(&b),
        &format!("/_matrix/client/v1/rooms/{r}/relations/{}", urlencode(&root)),
        None,
    )
    .await;
    assert_eq!(check(relations["chunk"].as_array().unwrap(), "/relations"), 1, "{relations}");

    let (_, threads) =
        api(&server, get.clone(), Some(&b), &format!("/_matrix/client/v1/rooms/{r}/threads"), None).await;
    let roots = threads["chunk"].as_array().unwrap();
    assert_eq!(check(roots, "/threads"), 1, "{threads}");
    let latest = roots[0]["unsigned"]["m.relations"]["m.thread"]["latest_event"].clone();
    assert_eq!(check(&[latest], "the thread summary's latest event"), 1, "{threads}");

    let search = json!({ "search_categories": { "room_events": { "search_term": "parapluie" } } });
    let (status, found) = api(&server, post.clone(), Some(&b), "/_matrix/client/v3/search", Some(search)).await;
    assert_eq!(status, 200, "{found}");
    let hits: Vec<Value> = found["search_categories"]["room_events"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| hit["result"].clone())
        .collect();
    assert_eq!(check(&hits, "/search"), 1, "{found}");
}

/// A sliding sync client (as Element X runs it) with one list of every room and no
/// `m.room.avatar` in its required state: what it shows as a room's avatar comes from the
/// room's `avatar` field alone.
async fn room_list(client: &Client) -> matrix_sdk::SlidingSync {
    client
        .sliding_sync("rooms")
        .unwrap()
        .version(Version::Native)
        .poll_timeout(Duration::ZERO)
        .add_list(SlidingSyncList::builder("all").sync_mode(SlidingSyncMode::new_selective().add_range(0..=19)))
        .build()
        .await
        .unwrap()
}

async fn mxc(server: &TestServer, token: &str, name: &str) -> OwnedMxcUri {
    let id = upload(server, token, "une image", name).await;
    format!("mxc://localhost/{id}").into()
}

/// Sliding sync sends each room's `avatar` (item 7): the room's own, or in a direct chat the
/// other member's; again when it changes (the partner's new avatar, a room avatar set then
/// removed); and for an invite to a direct chat, the inviter's. Hero names come along, so the
/// SDK names a DM after the other member.
#[tokio::test]
async fn sliding_sync_room_list_shows_room_and_direct_chat_avatars() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let bob_token = bob.access_token().unwrap();
    let alice_token = alice.access_token().unwrap();
    let bob_id = bob.user_id().unwrap().to_owned();
    let face = mxc(&server, &bob_token, "bob.png").await;
    bob.account().set_avatar_url(Some(&face)).await.unwrap();
    bob.account().set_display_name(Some("Bob Leroy")).await.unwrap();
    sync(&alice).await;
    sync(&bob).await;
    let dm = alice.create_dm(&bob_id).await.unwrap().room_id().to_owned();
    wait_invited(&bob, &dm).await;
    bob.get_room(&dm).unwrap().join().await.unwrap();

    // Alice on a new device, synced only through the room list.
    let phone = server.client().await;
    phone.matrix_auth().login_username("alice", "pw").send().await.unwrap();
    let list = room_list(&phone).await;
    list.sync_once().await.unwrap();
    let room = phone.get_room(&dm).expect("the DM in the room list");
    assert_eq!(room.avatar_url(), Some(face.clone()), "a DM shows the other member's avatar");
    let heroes = room.heroes();
    assert_eq!(heroes.len(), 1);
    assert_eq!(heroes[0].display_name.as_deref(), Some("Bob Leroy"));
    assert_eq!(heroes[0].avatar_url, Some(face.clone()));

    // Bob changes his avatar: the DM comes again with it.
    let new_face = mxc(&server, &bob_token, "bob2.png").await;
    bob.account().set_avatar_url(Some(&new_face)).await.unwrap();
    list.sync_once().await.unwrap();
    assert_eq!(phone.get_room(&dm).unwrap().avatar_url(), Some(new_face.clone()));

    // A room with its own avatar, set then removed.
    let group = encrypted_room(&alice).await;
    sync(&alice).await;
    let logo = mxc(&server, &alice_token, "logo.png").await;
    alice.get_room(&group).unwrap().set_avatar_url(&logo, None).await.unwrap();
    list.sync_once().await.unwrap();
    assert_eq!(phone.get_room(&group).expect("the room in the list").avatar_url(), Some(logo.clone()));
    alice.get_room(&group).unwrap().remove_avatar().await.unwrap();
    list.sync_once().await.unwrap();
    assert_eq!(phone.get_room(&group).unwrap().avatar_url(), None, "a removed avatar is gone from the list");

    // An invite to a direct chat shows the inviter's avatar before it is accepted.
    let carol = server.register("carol", "pw").await;
    sync(&carol).await;
    let carol_face = mxc(&server, &carol.access_token().unwrap(), "carol.png").await;
    carol.account().set_avatar_url(Some(&carol_face)).await.unwrap();
    let invite = carol.create_dm(&bob_id).await.unwrap().room_id().to_owned();
    let bob_phone = server.client().await;
    bob_phone.matrix_auth().login_username("bob", "pw").send().await.unwrap();
    let bob_list = room_list(&bob_phone).await;
    bob_list.sync_once().await.unwrap();
    let invited = bob_phone.get_room(&invite).expect("the invite in Bob's list");
    assert_eq!(invited.state(), RoomState::Invited);
    assert_eq!(invited.avatar_url(), Some(carol_face));
}
