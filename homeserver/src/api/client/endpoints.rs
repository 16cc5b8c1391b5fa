//! Request types of spec endpoints ruma 0.16 lacks or reads differently from the spec, declared
//! with ruma's own macros so handlers still take ruma types.

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`, with `include` optional as the spec has it
/// (ruma 0.16 refuses a request without it).
pub mod get_threads {
    use ruma::{
        api::{auth_scheme::AccessToken, metadata, request, response},
        events::AnyTimelineEvent,
        serde::Raw,
        OwnedRoomId, UInt,
    };

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        history: {
            unstable => "/_matrix/client/unstable/org.matrix.msc3856/rooms/{room_id}/threads",
            1.4 => "/_matrix/client/v1/rooms/{room_id}/threads",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub from: Option<String>,
        /// `all` (the default) or `participated`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub include: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub limit: Option<UInt>,
    }

    #[response]
    pub struct Response {
        pub chunk: Vec<Raw<AnyTimelineEvent>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub next_batch: Option<String>,
    }
}

/// `GET /_matrix/client/v1/mutual_rooms` (stable in the spec; ruma 0.16 has only MSC2666's unstable path).
pub mod mutual_rooms {
    use ruma::{
        api::{auth_scheme::AccessToken, metadata, request, response},
        OwnedRoomId, OwnedUserId,
    };

    metadata! {
        method: GET,
        rate_limited: true,
        authentication: AccessToken,
        history: {
            unstable => "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms",
            1.18 => "/_matrix/client/v1/mutual_rooms",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(query)]
        pub user_id: OwnedUserId,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub from: Option<String>,
        /// The unstable endpoint's name for `from`.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub batch_token: Option<String>,
    }

    #[response]
    pub struct Response {
        pub joined: Vec<OwnedRoomId>,
        pub count: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub next_batch: Option<String>,
    }
}
