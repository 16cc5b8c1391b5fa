//! What matrix-sdk (the SDK Element X is built on) sees of the server, driven through its own
//! state machines: history shared with an invite (MSC4268), SAS verification between two users,
//! why an event cannot be decrypted (`unsigned.membership`), and the avatars of sliding sync's
//! room list (issue 35).

use std::time::{Duration, Instant};

use matrix_sdk::{
    config::SyncSettings,
    deserialized_responses::TimelineEventKind,
    encryption::verification::{SasVerification, Verification, VerificationRequest},
    room::MessagesOptions,
    ruma::{
        api::client::room::create_room::v3::Request as CreateRoom,
        events::{
            room::{encryption::RoomEncryptionEventContent, message::RoomMessageEventContent},
            InitialStateEvent, StateEventType,
        },
        EventId, OwnedEventId, OwnedMxcUri, OwnedRoomId, RoomId, UserId,
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

/// Alice shares the room's history with Bob when she invites him (MSC4268, on by default in
/// matrix-sdk 0.18): her client uploads the room keys as an encrypted file and sends its key to
/// Bob's devices; Bob's client accepts the bundle only from whoever its invite says invited him,
/// which it reads from the inviter's member event in the invite's stripped state (item 1). Then
/// every message sent before he was invited decrypts.
#[tokio::test]
async fn history_shared_with_an_invite_decrypts_after_joining() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    sync(&alice).await;
    sync(&bob).await;
    // Both need cross-signing: keys are shared only with devices their owner signed.
    alice.encryption().bootstrap_cross_signing(None).await.unwrap();
    bob.encryption().bootstrap_cross_signing(None).await.unwrap();
    let alice_id = alice.user_id().unwrap().to_owned();
    let bob_id = bob.user_id().unwrap().to_owned();

    let room = encrypted_room(&alice).await;
    sync(&alice).await;
    let mut early = Vec::new();
    for body in ["ordre du jour", "budget 2027", "questions diverses"] {
        early.push((send(&alice, &room, body).await, body.to_owned()));
    }
    alice.get_room(&room).unwrap().invite_user_by_id(&bob_id).await.unwrap();

    wait_invited(&bob, &room).await;
    let details = bob.get_room(&room).unwrap().invite_details().await.unwrap();
    assert_eq!(details.inviter_id, alice_id);

    bob.get_room(&room).unwrap().join().await.unwrap();
    sync(&bob).await;
    let seen = history(&bob, &room).await;
    for (event, body) in &early {
        let (_, kind) = seen.iter().find(|(id, _)| id == event).unwrap_or_else(|| panic!("{event} in Bob's history"));
        assert_eq!(decrypted_body(kind).as_deref(), Some(body.as_str()), "{event}");
    }
    let undecryptable = seen.iter().filter(|(_, kind)| matches!(kind, TimelineEventKind::UnableToDecrypt { .. }));
    assert_eq!(undecryptable.count(), 0, "nothing Bob may read stays undecryptable");
    // What the SDK accepted the bundle on: the inviter's member event, which came with the invite.
    let inviter = details.inviter.expect("the inviter's member event came with the invite");
    assert_eq!(inviter.user_id(), alice_id);
}

/// Polls the clients until `request` (Alice's side) and Bob's copy of it exist and both say done;
/// every wait is a sync that the other side's to-device message wakes.
async fn sas_between(alice: &Client, bob: &Client, request: VerificationRequest) {
    let alice_id = alice.user_id().unwrap().to_owned();
    let bob_id = bob.user_id().unwrap().to_owned();
    let flow = request.flow_id().to_owned();

    let start = Instant::now();
    let bob_request = loop {
        if let Some(r) = bob.encryption().get_verification_request(&alice_id, &flow).await {
            break r;
        }
        check_deadline(start, "Bob's client receives the verification request");
        sync_both(alice, bob).await;
    };
    bob_request.accept().await.unwrap();

    let start = Instant::now();
    while !request.is_ready() {
        check_deadline(start, "Alice's client sees the request accepted");
        sync_both(alice, bob).await;
    }
    let alice_sas = request.start_sas().await.unwrap().expect("SAS starts");

    let start = Instant::now();
    let bob_sas: SasVerification = loop {
        if let Some(Verification::SasV1(sas)) = bob.encryption().get_verification(&alice_id, &flow).await {
            break sas;
        }
        check_deadline(start, "Bob's client receives the SAS start");
        sync_both(alice, bob).await;
    };
    bob_sas.accept().await.unwrap();

    let start = Instant::now();
    while !(alice_sas.can_be_presented() && bob_sas.can_be_presented()) {
        check_deadline(start, "both clients can show the emoji");
        sync_both(alice, bob).await;
    }
    let symbols = |sas: &SasVerification| sas.emoji().unwrap().map(|e| e.symbol);
    assert_eq!(symbols(&alice_sas), symbols(&bob_sas), "both sides show the same emoji");
    alice_sas.confirm().await.unwrap();
    bob_sas.confirm().await.unwrap();

    let start = Instant::now();
    while !(alice_sas.is_done() && bob_sas.is_done()) {
        assert!(!alice_sas.is_cancelled() && !bob_sas.is_cancelled(), "{:?}", alice_sas.cancel_info());
        check_deadline(start, "the SAS completes on both sides");
        sync_both(alice, bob).await;
    }
    assert_eq!(alice_sas.other_user_id(), bob_id);
}

/// Syncs `client` until its view of `other` is a verified identity: its user-signing key signed
/// the master key it holds for them, which it only holds once it fetched `other`'s keys again —
/// after the server listed `other` in `device_lists.changed` (item 2).
async fn wait_verified(client: &Client, other: &UserId) {
    let start = Instant::now();
    loop {
        let identity = client.encryption().get_user_identity(other).await.unwrap();
        if identity.as_ref().is_some_and(|i| i.is_verified()) {
            return;
        }
        check_deadline(start, &format!("{} sees {other} verified", client.user_id().unwrap()));
        client.sync_once(SyncSettings::default().timeout(Duration::from_millis(500))).await.unwrap();
    }
}

/// Two users verify each other with emoji (SAS) through the server: request, accept, start,
/// both confirm; then Alice's client shows Bob as verified, which needs the server to tell her
/// that *Bob's* keys changed when her signature of his master key was uploaded (item 2).
#[tokio::test]
async fn sas_verification_between_two_users_ends_verified() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    sync(&alice).await;
    sync(&bob).await;
    alice.encryption().bootstrap_cross_signing(None).await.unwrap();
    bob.encryption().bootstrap_cross_signing(None).await.unwrap();
    // A shared encrypted room: each client tracks the other's devices.
    let room = encrypted_room(&alice).await;
    alice.get_room(&room).unwrap().invite_user_by_id(bob.user_id().unwrap()).await.unwrap();
    wait_invited(&bob, &room).await;
    bob.get_room(&room).unwrap().join().await.unwrap();
    sync_both(&alice, &bob).await;
    let bob_id = bob.user_id().unwrap().to_owned();
    let alice_id = alice.user_id().unwrap().to_owned();
    let bob_identity = alice.encryption().request_user_identity(&bob_id).await.unwrap().expect("Bob's identity");
    assert!(!bob_identity.is_verified());
    // Bob verified Alice earlier (by her key): his client signs her key again during the SAS,
    // which the server takes as no change. So nothing Bob does tells Alice's client to fetch
    // his keys again once she signed them: only the server listing Bob as changed by her
    // signature does.
    bob.encryption().request_user_identity(&alice_id).await.unwrap().expect("Alice's identity").verify().await.unwrap();
    sync_both(&alice, &bob).await;

    let bob_device = bob.device_id().unwrap();
    let device = alice.encryption().get_device(&bob_id, bob_device).await.unwrap().expect("Bob's device");
    let request = device.request_verification().await.unwrap();
    sas_between(&alice, &bob, request).await;

    wait_verified(&alice, &bob_id).await;
    wait_verified(&bob, &alice_id).await;
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

/// A room list of every room whose required state includes the user's own membership, as
/// Element X asks for it.
async fn room_list_with_own_membership(client: &Client) -> matrix_sdk::SlidingSync {
    let list = SlidingSyncList::builder("all")
        .sync_mode(SlidingSyncMode::new_selective().add_range(0..=19))
        .required_state(vec![(StateEventType::RoomMember, "$ME".to_owned())]);
    client
        .sliding_sync("rooms")
        .unwrap()
        .version(Version::Native)
        .poll_timeout(Duration::ZERO)
        .add_list(list)
        .build()
        .await
        .unwrap()
}

/// A room the user is no longer in comes down sliding sync once more, with their leave, so the
/// SDK stops showing it as joined (MSC4186): kicked, and an invite rejected on another device;
/// a new connection still lists the room Bob was kicked from, as left.
#[tokio::test]
async fn sliding_sync_tells_the_room_list_a_room_was_left() {
    let server = TestServer::start();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let bob_id = bob.user_id().unwrap().to_owned();
    sync(&alice).await;
    sync(&bob).await;
    let room = encrypted_room(&alice).await;
    sync(&alice).await;
    alice.get_room(&room).unwrap().invite_user_by_id(&bob_id).await.unwrap();
    wait_invited(&bob, &room).await;
    bob.get_room(&room).unwrap().join().await.unwrap();

    let phone = server.client().await;
    phone.matrix_auth().login_username("bob", "pw").send().await.unwrap();
    let list = room_list_with_own_membership(&phone).await;
    list.sync_once().await.unwrap();
    assert_eq!(phone.get_room(&room).expect("the room in Bob's list").state(), RoomState::Joined);

    alice.get_room(&room).unwrap().kick_user(&bob_id, Some("réorganisation")).await.unwrap();
    list.sync_once().await.unwrap();
    assert_eq!(phone.get_room(&room).unwrap().state(), RoomState::Left, "the kick reached the room list");

    // An invite the phone shows, rejected on Bob's other device (by a client that does not
    // forget the room as it rejects: matrix-sdk's own `leave` does, and a forgotten room is gone
    // from every list at once).
    let other = encrypted_room(&alice).await;
    sync(&alice).await;
    alice.get_room(&other).unwrap().invite_user_by_id(&bob_id).await.unwrap();
    list.sync_once().await.unwrap();
    assert_eq!(phone.get_room(&other).expect("the invite in Bob's list").state(), RoomState::Invited);
    let path = format!("/_matrix/client/v3/rooms/{}/leave", urlencode(other.as_str()));
    let (status, _) = api(&server, reqwest::Method::POST, bob.access_token().as_deref(), &path, Some(json!({}))).await;
    assert_eq!(status, 200);
    list.sync_once().await.unwrap();
    assert_eq!(phone.get_room(&other).unwrap().state(), RoomState::Left, "the rejection reached the room list");

    // A new connection lists the room Bob was removed from, as left, and not the invite he
    // rejected himself.
    let tablet = server.client().await;
    tablet.matrix_auth().login_username("bob", "pw").send().await.unwrap();
    let fresh = room_list_with_own_membership(&tablet).await;
    fresh.sync_once().await.unwrap();
    assert_eq!(tablet.get_room(&room).expect("the kicked room listed").state(), RoomState::Left);
    assert!(tablet.get_room(&other).is_none(), "a rejected invite is not listed again");
}
