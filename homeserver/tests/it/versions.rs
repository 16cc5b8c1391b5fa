//! Every room version 1–12 through the services directly (clients may only create 10–12, but
//! rooms of every version reach the server over federation and must be stored by their rules).

use hemicycle::{
    config::Config,
    rooms::{create::CreateRoom, NewEvent},
    services::Services,
};
use ruma::{
    events::{StateEventType, TimelineEventType},
    signatures::{verify_event, PublicKeyMap, Verified},
    CanonicalJsonObject, RoomVersionId,
};
use serde_json::{json, Value};

#[tokio::test]
async fn rooms_of_every_version_are_built_authorized_signed_and_redacted_by_their_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.database.path = dir.path().join("db");
    let services = Services::open(config).unwrap();
    let alice = services.users.create("alice", Some("pw".into()), false).await.unwrap();
    let bob = services.users.create("bob", Some("pw".into()), false).await.unwrap();
    let mut keys = PublicKeyMap::new();
    keys.insert(
        "localhost".into(),
        [(
            services.server_keys.key_id(),
            ruma::serde::Base64::parse(services.server_keys.public_key_base64()).unwrap(),
        )]
        .into(),
    );
    let rooms = &services.rooms;
    for n in 1..=12u32 {
        let version = RoomVersionId::try_from(n.to_string()).unwrap();
        let rules = version.rules().unwrap();
        let request = CreateRoom { version: Some(version.clone()), name: Some(format!("v{n}")), ..Default::default() };
        let room =
            rooms.create_room(&alice, request, &RoomVersionId::V12).await.unwrap_or_else(|e| panic!("v{n}: {e}"));
        assert_eq!(room.as_str().contains(':'), n < 12, "v{n} room id format: {room}");

        rooms.set_membership(&room, &alice, &bob, "invite", None, Default::default()).await.unwrap();
        rooms.join(&room, &bob, None).await.unwrap_or_else(|e| panic!("v{n} join: {e}"));
        let message =
            NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": "secret" }));
        let id = rooms.append(&room, &bob, message, None).await.unwrap();
        match n {
            1 | 2 => assert!(id.as_str().contains(":localhost"), "v{n} ids are $random:server: {id}"),
            3 => assert_eq!(id.as_str().len(), 44, "v3 ids are a base64 hash: {id}"),
            _ => assert!(id.as_str().len() == 44 && !id.as_str().contains(['+', '/']), "v{n} ids are URL-safe: {id}"),
        }

        // Bob (power 0) may not change the name; the auth rules of every version say so.
        let rename = NewEvent::state(StateEventType::RoomName, "", json!({ "name": "x" }));
        let refused = rooms.append(&room, &bob, rename, None).await;
        assert!(
            matches!(refused, Err(hemicycle::error::Error::Forbidden(_))),
            "v{n}: power levels enforced: {refused:?}"
        );

        // The PDU as other servers get it is signed by this server and references events the
        // version's way.
        let stored: CanonicalJsonObject =
            serde_json::from_slice(&rooms.pdu_json_for_peers(&id).unwrap().unwrap()).unwrap();
        assert_eq!(verify_event(&keys, &stored, &rules).unwrap(), Verified::All, "v{n} signature and hash");
        let prev = serde_json::to_value(&stored["prev_events"]).unwrap();
        assert_eq!(prev[0].is_array(), n <= 2, "v{n} prev_events format: {prev}");

        // Alice redacts; the stored event is stripped by the version's algorithm.
        let mut redaction = NewEvent::message(TimelineEventType::RoomRedaction, json!({}));
        if rules.redaction.content_field_redacts {
            redaction.content["redacts"] = json!(id);
        } else {
            redaction.redacts = Some(id.clone());
        }
        let redaction_id = rooms.append(&room, &alice, redaction, None).await.unwrap();
        // Redacted, it still carries a signature that holds (over the redacted form).
        let redacted: CanonicalJsonObject =
            serde_json::from_slice(&rooms.pdu_json_for_peers(&id).unwrap().unwrap()).unwrap();
        assert_eq!(verify_event(&keys, &redacted, &rules).unwrap(), Verified::Signatures, "v{n} redacted, signed");
        let event = rooms.client_event(&id).unwrap().unwrap();
        assert_eq!(event["content"], json!({}), "v{n} content redacted");
        assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction_id.as_str());
        let redaction_event: Value = rooms.client_event(&redaction_id).unwrap().unwrap();
        assert_eq!(redaction_event["content"].get("redacts").is_some(), n >= 11, "v{n} redacts placement");
    }
}
