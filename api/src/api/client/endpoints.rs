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

/// `POST /_matrix/client/v3/search`, answering with every list the spec describes even when it
/// is empty (ruma 0.16 leaves out an empty `results`, which clients then fail to read).
pub mod search_events {
    use std::collections::BTreeMap;

    use ruma::{
        api::{
            auth_scheme::AccessToken,
            client::search::search_events::v3::{Categories, ResultGroup, SearchResult},
            metadata, request, response,
        },
        events::AnyStateEvent,
        serde::Raw,
        OwnedRoomId, UInt,
    };
    use serde::Serialize;

    metadata! {
        method: POST,
        rate_limited: true,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/search",
            1.1 => "/_matrix/client/v3/search",
        }
    }

    #[request]
    pub struct Request {
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub next_batch: Option<String>,
        pub search_categories: Categories,
    }

    #[response]
    pub struct Response {
        pub search_categories: ResultCategories,
    }

    #[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
    pub struct ResultCategories {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub room_events: Option<RoomEvents>,
    }

    #[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
    pub struct RoomEvents {
        pub count: UInt,
        pub highlights: Vec<String>,
        pub results: Vec<SearchResult>,
        /// Grouping key (`room_id`, `sender`) → group value → group.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        pub groups: BTreeMap<String, BTreeMap<String, ResultGroup>>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        pub state: BTreeMap<OwnedRoomId, Vec<Raw<AnyStateEvent>>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub next_batch: Option<String>,
    }
}
