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
