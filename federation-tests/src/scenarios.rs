//! Scenarios shared by the Hemicycle-only tests and the Synapse interop tests: each takes the
//! node that holds the room (or the data) and the node whose users reach it.

use std::{
    future::IntoFuture,
    time::{Duration, Instant},
};

use matrix_sdk::{
    config::SyncSettings,
    ruma::{
        api::client::room::create_room::v3::Request as CreateRoom,
        events::{
            room::{encryption::RoomEncryptionEventContent, member::MembershipState, message::RoomMessageEventContent},
            InitialStateEvent,
        },
        EventId, RoomId, UserId,
    },
    Client, RoomState,
};
use serde_json::Value;

use crate::{enc, png, png_size, Node, SYNC_WAIT};

/// One matrix-sdk sync, long-polling up to `wait`.
pub async fn sdk_sync(client: &Client, wait: Duration) {
    client.sync_once(SyncSettings::default().timeout(wait)).await.expect("sync");
}

/// The body of an event as the client decrypted it; `None` while it cannot (event not on the
/// client's server yet, or room key not received yet).
pub async fn decrypted_body(client: &Client, room: &RoomId, event: &EventId) -> Option<String> {
    let event = client.get_room(room)?.event(event, None).await.ok()?;
    event.encryption_info()?;
    let content: Value = event.raw().get_field("content").ok()??;
    content["body"].as_str().map(str::to_owned)
}

/// Whether the client's store has `user` joined to `room`.
pub async fn is_joined(client: &Client, room: &RoomId, user: &UserId) -> bool {
    let Some(room) = client.get_room(room) else { return false };
    matches!(room.get_member_no_sync(user).await, Ok(Some(member)) if *member.membership() == MembershipState::Join)
}

/// Syncs `client` until it decrypts `event`, bounded by [`SYNC_WAIT`].
pub async fn wait_decrypted(client: &Client, room: &RoomId, event: &EventId, who: &str) -> String {
    let deadline = Instant::now() + SYNC_WAIT;
    loop {
        if let Some(body) = decrypted_body(client, room, event).await {
            return body;
        }
        assert!(Instant::now() < deadline, "{who} could not decrypt {event} within {SYNC_WAIT:?}");
        sdk_sync(client, Duration::from_secs(2)).await;
    }
}

/// Bounds a step of the scenario so that a hang names the step instead of timing out the test.
pub async fn step<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(SYNC_WAIT, future).await.unwrap_or_else(|_| panic!("{what}: no answer within {SYNC_WAIT:?}"))
}

/// Alice on `a` and Bob on `b` (matrix-sdk clients) chat in an encrypted room made by Alice:
/// only ciphertext on the servers, both decrypt, and a second device of Bob's reaches Alice's
/// client through a device list update. `tag` keeps user names apart between runs on one pair.
pub async fn encrypted_chat(a: &Node, b: &Node, tag: &str) {
    let alice = a.client(&format!("alice{tag}")).await;
    let bob = b.client(&format!("bob{tag}")).await;
    // First syncs upload the device keys.
    step("alice's first sync", sdk_sync(&alice, Duration::ZERO)).await;
    step("bob's first sync", sdk_sync(&bob, Duration::ZERO)).await;
    let bob_id = bob.user_id().expect("bob logged in").to_owned();

    let mut request = CreateRoom::new();
    request.invite = vec![bob_id.clone()];
    request.initial_state =
        vec![InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults())
            .to_raw_any()];
    let room = step("create the room", alice.create_room(request))
        .await
        .expect("create the encrypted room")
        .room_id()
        .to_owned();

    // Bob's client sees the invite and accepts it (the join goes through A).
    let deadline = Instant::now() + SYNC_WAIT;
    while bob.get_room(&room).map(|r| r.state()) != Some(RoomState::Invited) {
        assert!(Instant::now() < deadline, "bob's client never saw the invite");
        step("bob's sync", sdk_sync(&bob, Duration::from_secs(2))).await;
    }
    step("bob joins", bob.get_room(&room).expect("invited room").join()).await.expect("bob joins");
    step("bob's sync", sdk_sync(&bob, Duration::ZERO)).await;
    let deadline = Instant::now() + SYNC_WAIT;
    while !is_joined(&alice, &room, &bob_id).await {
        assert!(Instant::now() < deadline, "alice's client never saw bob join");
        step("alice's sync", sdk_sync(&alice, Duration::from_secs(2))).await;
    }

    // Alice → Bob: the server keeps ciphertext, Bob's client decrypts.
    let alice_room = alice.get_room(&room).expect("alice's room");
    let hello = step("alice sends", alice_room.send(RoomMessageEventContent::text_plain("bonjour Bob")).into_future())
        .await
        .expect("send")
        .response
        .event_id;
    let token = alice.access_token().expect("alice's token");
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room.as_str()), enc(hello.as_str()));
    let stored = a.get(&token, &path).await;
    assert_eq!(stored["type"], "m.room.encrypted");
    assert!(!stored.to_string().contains("bonjour"), "only ciphertext on the server: {stored}");
    assert_eq!(wait_decrypted(&bob, &room, &hello, "bob").await, "bonjour Bob");

    // Bob → Alice.
    let bob_room = bob.get_room(&room).expect("bob's room");
    let reply = step("bob sends", bob_room.send(RoomMessageEventContent::text_plain("salut Alice")).into_future())
        .await
        .expect("send")
        .response
        .event_id;
    assert_eq!(wait_decrypted(&alice, &room, &reply, "alice").await, "salut Alice");

    // Bob signs in on a second device: A learns of it (m.device_list_update, then A's view of
    // Bob's devices through /user/devices or /user/keys/query) and Alice's client sees both.
    let bob_phone = b.login_client(&format!("bob{tag}")).await;
    step("the new device's first sync", sdk_sync(&bob_phone, Duration::ZERO)).await;
    let phone_id = bob_phone.device_id().expect("logged in").to_owned();
    let deadline = Instant::now() + SYNC_WAIT;
    loop {
        step("alice's sync", sdk_sync(&alice, Duration::from_secs(2))).await;
        let devices = alice.encryption().get_user_devices(&bob_id).await.expect("bob's devices");
        if devices.get(&phone_id).is_some() {
            assert_eq!(devices.devices().count(), 2, "bob's two devices as alice's client sees them");
            break;
        }
        assert!(Instant::now() < deadline, "alice's client never learned of bob's new device {phone_id}");
    }
}

/// `home`'s media downloaded through `away` (a text file and a PNG, whose thumbnail `away`
/// serves too), and 404 for unknown media of `home`. Answers the client paths and bytes.
pub async fn remote_media(home: &Node, away: &Node, tag: &str) -> Vec<(String, Vec<u8>)> {
    let (_, at) = home.register(&format!("alice{tag}")).await;
    let (_, bt) = away.register(&format!("bob{tag}")).await;
    let a_name = home.server_name();
    let mut cached = Vec::new();
    let note = "une pièce jointe venue de A\n".as_bytes().to_vec();
    for (bytes, content_type, filename) in [(note, "text/plain", "note.txt"), (png(64, 32), "image/png", "a.png")] {
        let mxc = home.upload(&at, bytes.clone(), content_type, filename).await;
        let (server, media_id) = mxc.strip_prefix("mxc://").and_then(|p| p.split_once('/')).expect("an mxc URI");
        assert_eq!(server, a_name, "the media is named after its server");
        let path = format!("/_matrix/client/v1/media/download/{}/{}", enc(server), enc(media_id));
        let (status, got_type, got) = away.get_bytes(&bt, &path).await;
        assert_eq!(status, 200, "{filename} through the other server: {}", String::from_utf8_lossy(&got));
        assert!(got_type.starts_with(content_type), "{filename}: content type {got_type}");
        assert_eq!(got, bytes, "{filename}: the same bytes through the other server");
        let (status, _, again) = away.get_bytes(&bt, &path).await;
        assert_eq!((status, again), (200, bytes.clone()), "{filename}: second download");
        cached.push((path, bytes));
        if content_type == "image/png" {
            let path = format!(
                "/_matrix/client/v1/media/thumbnail/{}/{}?width=32&height=32&method=scale",
                enc(server),
                enc(media_id)
            );
            let (status, thumb_type, thumb) = away.get_bytes(&bt, &path).await;
            assert_eq!(status, 200, "a thumbnail of the image: {}", String::from_utf8_lossy(&thumb));
            assert!(thumb_type.starts_with("image/"), "a thumbnail is an image: {thumb_type}");
            if thumb_type == "image/png" {
                let (w, h) = png_size(&thumb).expect("a PNG thumbnail");
                assert!(w <= 64 && h <= 32 && w == 2 * h, "a 64×32 image scaled down keeps its shape: {w}×{h}");
            }
        }
    }
    let path = format!("/_matrix/client/v1/media/download/{}/nonexistent", enc(&a_name));
    let (status, _, body) = away.get_bytes(&bt, &path).await;
    let error: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!((status, error["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "unknown remote media: {error}");
    cached
}

/// Syncs `client` (long-polling briefly) until `room` is an invite in its store.
async fn wait_invited(client: &Client, room: &RoomId, who: &str) {
    let deadline = Instant::now() + SYNC_WAIT;
    while client.get_room(room).map(|r| r.state()) != Some(RoomState::Invited) {
        assert!(Instant::now() < deadline, "{who}'s client never saw the invite to {room}");
        step("sync for the invite", sdk_sync(client, Duration::from_secs(2))).await;
    }
}

/// An encrypted room (the `private_chat` preset: history `shared`) made by `owner`.
async fn encrypted_room(owner: &Client) -> matrix_sdk::ruma::OwnedRoomId {
    let mut request = CreateRoom::new();
    request.initial_state =
        vec![InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults())
            .to_raw_any()];
    step("create the encrypted room", owner.create_room(request)).await.expect("create the room").room_id().to_owned()
}

/// MSC4268 across servers: Alice on `home` shares an encrypted room's history when she invites Bob
/// on `away` (matrix-sdk does it by default: the room keys in an encrypted file on `home`, its key
/// in an Olm to-device message through federation). Bob's client accepts the bundle because the
/// invite `away` shows it names Alice as the inviter (her member event in the invite's stripped
/// state, sent over federation), downloads it through `away`, and decrypts every earlier message
/// it reads back, with nothing left undecryptable.
pub async fn shared_history_on_invite(home: &Node, away: &Node, tag: &str) {
    use matrix_sdk::{deserialized_responses::TimelineEventKind, room::MessagesOptions};

    let alice = home.client(&format!("alice{tag}")).await;
    let bob = away.client(&format!("bob{tag}")).await;
    step("alice's first sync", sdk_sync(&alice, Duration::ZERO)).await;
    step("bob's first sync", sdk_sync(&bob, Duration::ZERO)).await;
    // Keys are shared only with devices their owner cross-signed.
    step("alice's cross-signing", alice.encryption().bootstrap_cross_signing(None)).await.expect("cross-signing");
    step("bob's cross-signing", bob.encryption().bootstrap_cross_signing(None)).await.expect("cross-signing");
    let alice_id = alice.user_id().expect("logged in").to_owned();
    let bob_id = bob.user_id().expect("logged in").to_owned();

    let room = encrypted_room(&alice).await;
    step("alice's sync", sdk_sync(&alice, Duration::ZERO)).await;
    let alice_room = alice.get_room(&room).expect("alice's room");
    let mut early = Vec::new();
    for body in ["ordre du jour", "budget 2027", "questions diverses"] {
        let sent = step("alice sends", alice_room.send(RoomMessageEventContent::text_plain(body)).into_future())
            .await
            .expect("send");
        early.push((sent.response.event_id, body));
    }
    step("alice invites bob, sharing the history", alice_room.invite_user_by_id(&bob_id)).await.expect("invite");

    wait_invited(&bob, &room, "bob").await;
    let details = step("invite details", bob.get_room(&room).expect("invite").invite_details()).await.expect("details");
    assert_eq!(details.inviter_id, alice_id);
    step("bob joins", bob.get_room(&room).expect("invite").join()).await.expect("bob joins");

    // Bob reads the history back through `away` (which fetches it from `home`).
    let bob_room = bob.get_room(&room).expect("bob's room");
    let deadline = Instant::now() + SYNC_WAIT;
    let seen = loop {
        let mut options = MessagesOptions::backward();
        options.limit = 100u32.into();
        let page = step("bob's /messages", bob_room.messages(options)).await.expect("messages");
        let seen: Vec<_> = page.chunk.into_iter().filter_map(|e| Some((e.event_id()?, e.kind))).collect();
        if early.iter().all(|(id, _)| seen.iter().any(|(s, _)| s == id)) {
            break seen;
        }
        assert!(Instant::now() < deadline, "bob never read the messages from before his invite");
        sdk_sync(&bob, Duration::from_secs(1)).await;
    };
    for (event, body) in &early {
        let (_, kind) = seen.iter().find(|(id, _)| id == event).expect("in bob's history");
        let TimelineEventKind::Decrypted(decrypted) = kind else {
            panic!("bob could not decrypt {event} ({body}), shared with his invite: {kind:?}")
        };
        let content: Value = decrypted.event.get_field("content").ok().flatten().expect("content");
        assert_eq!(content["body"], *body);
    }
    let undecryptable = seen.iter().filter(|(_, kind)| matches!(kind, TimelineEventKind::UnableToDecrypt { .. }));
    assert_eq!(undecryptable.count(), 0, "nothing bob may read stays undecryptable");
    let inviter = details.inviter.expect("the inviter's member event came with the invite over federation");
    assert_eq!(inviter.user_id(), alice_id);
}

/// Syncs `client` until it shows `other` as verified: its own user-signing key signed the master
/// key it holds for them, which it holds only after fetching `other`'s keys again.
async fn wait_verified(client: &Client, other: &UserId) {
    let deadline = Instant::now() + SYNC_WAIT;
    loop {
        let identity = step("identity", client.encryption().get_user_identity(other)).await.expect("identity");
        if identity.as_ref().is_some_and(|i| i.is_verified()) {
            return;
        }
        assert!(Instant::now() < deadline, "{:?} never saw {other} as verified", client.user_id());
        sdk_sync(client, Duration::from_secs(1)).await;
    }
}

/// One short long-poll sync of each client at once.
async fn sync_both(a: &Client, b: &Client) {
    tokio::join!(sdk_sync(a, Duration::from_millis(500)), sdk_sync(b, Duration::from_millis(500)));
}

/// Emoji verification (SAS) between Alice on `home` and Bob on `away`, to-device messages going
/// through federation; then Alice's client shows Bob as verified. That needs `home` to take her
/// signature of Bob's master key (checked against the key `away` answers for him, kept for her
/// alone), list Bob as changed for her, and add her signature to the keys `away` answers when
/// her client fetches them again. Bob verified Alice by her key beforehand, so his client's
/// signature during the SAS is the one `away` holds already: nothing he does makes Alice's client
/// fetch his keys again.
pub async fn sas_verification(home: &Node, away: &Node, tag: &str) {
    use matrix_sdk::encryption::verification::{SasVerification, Verification};

    let alice = home.client(&format!("alice{tag}")).await;
    let bob = away.client(&format!("bob{tag}")).await;
    step("alice's first sync", sdk_sync(&alice, Duration::ZERO)).await;
    step("bob's first sync", sdk_sync(&bob, Duration::ZERO)).await;
    step("alice's cross-signing", alice.encryption().bootstrap_cross_signing(None)).await.expect("cross-signing");
    step("bob's cross-signing", bob.encryption().bootstrap_cross_signing(None)).await.expect("cross-signing");
    let alice_id = alice.user_id().expect("logged in").to_owned();
    let bob_id = bob.user_id().expect("logged in").to_owned();

    // A shared encrypted room: each client tracks the other's devices.
    let room = encrypted_room(&alice).await;
    step("alice's sync", sdk_sync(&alice, Duration::ZERO)).await;
    step("invite", alice.get_room(&room).expect("room").invite_user_by_id(&bob_id)).await.expect("invite");
    wait_invited(&bob, &room, "bob").await;
    step("bob joins", bob.get_room(&room).expect("invite").join()).await.expect("bob joins");
    let deadline = Instant::now() + SYNC_WAIT;
    while !is_joined(&alice, &room, &bob_id).await {
        assert!(Instant::now() < deadline, "alice's client never saw bob join");
        sdk_sync(&alice, Duration::from_secs(2)).await;
    }
    let bob_identity = step("bob's identity", alice.encryption().request_user_identity(&bob_id))
        .await
        .expect("keys query")
        .expect("bob's identity through federation");
    assert!(!bob_identity.is_verified());
    let alice_identity = step("alice's identity", bob.encryption().request_user_identity(&alice_id))
        .await
        .expect("keys query")
        .expect("alice's identity through federation");
    step("bob verifies alice by her key", alice_identity.verify()).await.expect("signature upload");

    let bob_device = bob.device_id().expect("logged in").to_owned();
    let device = step("bob's device", alice.encryption().get_device(&bob_id, &bob_device))
        .await
        .expect("devices")
        .expect("bob's device through federation");
    let request = step("request verification", device.request_verification()).await.expect("request");
    let flow = request.flow_id().to_owned();

    let deadline = Instant::now() + SYNC_WAIT;
    let bob_request = loop {
        if let Some(r) = bob.encryption().get_verification_request(&alice_id, &flow).await {
            break r;
        }
        assert!(Instant::now() < deadline, "bob's client never received the verification request");
        sync_both(&alice, &bob).await;
    };
    step("bob accepts", bob_request.accept()).await.expect("accept");
    let deadline = Instant::now() + SYNC_WAIT;
    while !request.is_ready() {
        assert!(Instant::now() < deadline, "alice's client never saw the request accepted");
        sync_both(&alice, &bob).await;
    }
    let alice_sas = step("start SAS", request.start_sas()).await.expect("start").expect("SAS");
    let deadline = Instant::now() + SYNC_WAIT;
    let bob_sas: SasVerification = loop {
        if let Some(Verification::SasV1(sas)) = bob.encryption().get_verification(&alice_id, &flow).await {
            break sas;
        }
        assert!(Instant::now() < deadline, "bob's client never received the SAS start");
        sync_both(&alice, &bob).await;
    };
    step("bob accepts the SAS", bob_sas.accept()).await.expect("accept");
    let deadline = Instant::now() + SYNC_WAIT;
    while !(alice_sas.can_be_presented() && bob_sas.can_be_presented()) {
        assert!(Instant::now() < deadline, "the emoji never showed on both sides");
        sync_both(&alice, &bob).await;
    }
    let symbols = |sas: &SasVerification| sas.emoji().expect("emoji").map(|e| e.symbol);
    assert_eq!(symbols(&alice_sas), symbols(&bob_sas), "both sides show the same emoji");
    step("alice confirms", alice_sas.confirm()).await.expect("confirm");
    step("bob confirms", bob_sas.confirm()).await.expect("confirm");
    let deadline = Instant::now() + SYNC_WAIT;
    while !(alice_sas.is_done() && bob_sas.is_done()) {
        assert!(!alice_sas.is_cancelled() && !bob_sas.is_cancelled(), "cancelled: {:?}", alice_sas.cancel_info());
        assert!(Instant::now() < deadline, "the SAS never completed on both sides");
        sync_both(&alice, &bob).await;
    }

    wait_verified(&alice, &bob_id).await;
    wait_verified(&bob, &alice_id).await;
}
