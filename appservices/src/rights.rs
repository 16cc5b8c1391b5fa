//! What a user may do, read from the room the way the homeserver and matrix-js-sdk read it. The
//! bot acts with its own power, so before acting for someone it checks that they could have
//! done it themselves: their membership and their power level in the room concerned (for a
//! library, the folder a path resolves to). Pure functions; the live reads are in
//! [`crate::service`].

use serde_json::Value;

/// A user's standing in a document library's folder, as matrix-js-sdk's
/// `MSC3089TreeSpace.getPermissions` reads it (viewer, editor, owner), below which is not being
/// joined to the folder at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Not joined to the folder: nothing at all.
    Outsider,
    /// Joined: may list and read (`users_default`, 0 in the tree template).
    Viewer,
    /// May file, move, lock, unlock and delete files, and make folders (`events_default`, 50).
    Editor,
    /// May change the folder's power levels (`events["m.room.power_levels"]`, 100).
    Owner,
}

/// Room versions where the room's creators (the `m.room.create` sender and
/// `additional_creators`) have infinite power and are not listed in the power levels.
pub fn creators_are_privileged(room_version: &str) -> bool {
    room_version.parse::<u32>().is_ok_and(|v| v >= 12) || room_version == "org.matrix.hydra.11"
}

/// The room's privileged creators, from its `m.room.create` event (empty before room version 12).
pub fn privileged_creators(create: &Value) -> Vec<String> {
    let version = create["content"]["room_version"].as_str().unwrap_or("1");
    if !creators_are_privileged(version) {
        return Vec::new();
    }
    let mut out: Vec<String> = create["sender"].as_str().map(str::to_owned).into_iter().collect();
    out.extend(
        create["content"]["additional_creators"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str())
            .map(str::to_owned),
    );
    out
}

/// A power level as found in content (old rooms may carry numbers as strings).
fn number(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// `user`'s power level in a room with these `m.room.power_levels` contents (`None`: the room
/// has none) and privileged creators.
pub fn user_level(levels: Option<&Value>, creators: &[String], user: &str) -> i64 {
    if creators.iter().any(|c| c == user) {
        return i64::MAX;
    }
    let Some(levels) = levels else { return 0 };
    number(&levels["users"][user]).unwrap_or_else(|| number(&levels["users_default"]).unwrap_or(0))
}

/// The level needed to send the state event `kind`.
pub fn state_level(levels: Option<&Value>, kind: &str) -> i64 {
    let Some(levels) = levels else { return 0 };
    number(&levels["events"][kind]).unwrap_or_else(|| number(&levels["state_default"]).unwrap_or(50))
}

/// The level needed to send the message event `kind` (`events_default`, 0 when missing).
pub fn event_level(levels: Option<&Value>, kind: &str) -> i64 {
    let Some(levels) = levels else { return 0 };
    number(&levels["events"][kind]).unwrap_or_else(|| number(&levels["events_default"]).unwrap_or(0))
}

/// `user`'s role in a library folder, joined or not (`joined`): owner at the level that may
/// change the power levels (100 by default), editor at `events_default` (50 by default; like
/// matrix-js-sdk, which reads `events_default || 50`, a missing or zero level counts as 50),
/// viewer below. Someone not joined is an outsider whatever the power levels say.
pub fn tree_role(levels: Option<&Value>, creators: &[String], user: &str, joined: bool) -> Role {
    if !joined {
        return Role::Outsider;
    }
    let level = user_level(levels, creators, user);
    let positive = |v: &Value| number(v).filter(|n| *n > 0);
    let empty = Value::Null;
    let levels = levels.unwrap_or(&empty);
    let owner = positive(&levels["events"]["m.room.power_levels"]).unwrap_or(100);
    let editor = positive(&levels["events_default"]).unwrap_or(50);
    if level >= owner {
        Role::Owner
    } else if level >= editor {
        Role::Editor
    } else {
        Role::Viewer
    }
}

/// A Matrix user id the bot will write into room state and feeds and send messages to:
/// `@localpart:server`, the localpart of the user id grammar (with the historical upper case),
/// the server a host name, IPv4 or bracketed IPv6 address with an optional port; at most 255
/// bytes. Anything else (spaces, line breaks, quotes, `;`, `,`) is refused.
pub fn valid_user_id(user: &str) -> bool {
    let Some((local, server)) = user.strip_prefix('@').and_then(|u| u.split_once(':')) else { return false };
    let local_ok = !local.is_empty()
        && local.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
    user.len() <= 255 && local_ok && valid_server_name(server)
}

/// A server name: `host[:port]`, the host a DNS name, an IPv4 address or `[IPv6]`.
pub fn valid_server_name(server: &str) -> bool {
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("[v6]", Some(port)),
                None => return false,
            },
        }
    } else {
        match server.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (server, None),
        }
    };
    let host_ok = host == "[v6]"
        || (!host.is_empty()
            && host.len() <= 253
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// Compares two secrets in time independent of where they differ: both are hashed (so their
/// lengths do not matter either) and the digests compared without an early exit.
pub fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    let difference = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // `black_box` keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// matrix-js-sdk's tree template, with an owner, an editor and a viewer listed.
    fn template() -> Value {
        json!({
            "invite": 100, "kick": 100, "ban": 100, "redact": 50, "state_default": 50, "events_default": 50,
            "users_default": 0, "events": { "m.room.power_levels": 100 },
            "users": { "@owner:x": 100, "@editor:x": 50, "@viewer:x": 0 },
        })
    }

    #[test]
    fn roles_in_a_folder_follow_the_tree_template_and_membership() {
        let levels = template();
        let role = |user: &str, joined: bool| tree_role(Some(&levels), &[], user, joined);
        assert_eq!(role("@owner:x", true), Role::Owner);
        assert_eq!(role("@editor:x", true), Role::Editor);
        assert_eq!(role("@viewer:x", true), Role::Viewer);
        assert_eq!(role("@unlisted:x", true), Role::Viewer, "users_default");
        assert_eq!(role("@owner:x", false), Role::Outsider, "power without membership is nothing");
        assert!(Role::Viewer < Role::Editor && Role::Editor < Role::Owner && Role::Outsider < Role::Viewer);

        // A room whose events_default is 0 (or missing) still needs 50 to edit, as in matrix-js-sdk.
        let mut lax = template();
        lax["events_default"] = json!(0);
        assert_eq!(tree_role(Some(&lax), &[], "@viewer:x", true), Role::Viewer);
        // A stricter room needs more.
        let mut strict = template();
        strict["events_default"] = json!(75);
        assert_eq!(tree_role(Some(&strict), &[], "@editor:x", true), Role::Viewer);
        // Room version 12: the creator is owner without being listed.
        let create =
            json!({ "sender": "@maker:x", "content": { "room_version": "12", "additional_creators": ["@co:x"] } });
        let creators = privileged_creators(&create);
        assert_eq!(creators, ["@maker:x", "@co:x"]);
        assert_eq!(tree_role(Some(&levels), &creators, "@co:x", true), Role::Owner);
        assert!(privileged_creators(&json!({ "sender": "@maker:x", "content": { "room_version": "11" } })).is_empty());
        // Levels written as strings (old rooms).
        assert_eq!(user_level(Some(&json!({ "users": { "@s:x": "50" } })), &[], "@s:x"), 50);
    }

    #[test]
    fn the_level_to_send_a_state_event() {
        let levels = json!({ "state_default": 50, "events": { "org.hemicycle.library": 75 } });
        assert_eq!(state_level(Some(&levels), "org.hemicycle.library"), 75);
        assert_eq!(state_level(Some(&levels), "m.room.topic"), 50);
        assert_eq!(state_level(Some(&json!({})), "m.room.topic"), 50);
    }

    #[test]
    fn the_level_to_send_a_message() {
        let muted = json!({ "events_default": 50, "events": { "m.room.message": 20 } });
        assert_eq!(event_level(Some(&muted), "m.room.message"), 20);
        assert_eq!(event_level(Some(&muted), "m.room.encrypted"), 50);
        assert_eq!(event_level(Some(&json!({})), "m.room.message"), 0);
        assert_eq!(event_level(None, "m.room.message"), 0);
    }

    #[test]
    fn user_ids_that_could_inject_lines_or_parameters_are_refused() {
        for good in
            ["@alice:budget.gouv.fr", "@a.b_c=d-e/f+g:127.0.0.1:8448", "@Old:x", "@bob:[::1]:8448", "@b:[2001:db8::1]"]
        {
            assert!(valid_user_id(good), "{good}");
        }
        for bad in [
            "@a:b\r\nBEGIN:VALARM",
            "@a:b\nX",
            "@a b:c",
            "@a:b;PARTSTAT=ACCEPTED",
            "@a,b:c",
            "@\"a\":b",
            "@:b",
            "@a:",
            "a:b",
            "@a:b:",
            "@a:b:99999x",
            "@a:[::1",
            "@a:b c",
        ] {
            assert!(!valid_user_id(bad), "{bad:?}");
        }
        assert!(!valid_user_id(&format!("@{}:b", "a".repeat(260))));
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("workspace-hs-token", "workspace-hs-token"));
        assert!(!same_secret("workspace-hs-token", "workspace-hs-tokeN"));
        assert!(!same_secret("workspace-hs", "workspace-hs-token"), "a prefix");
        assert!(!same_secret("", "workspace-hs-token"));
    }
}
