//! The room access rules of a ministry network (`im.vector.room.access_rules`): which servers'
//! users may enter a room, who may hold power in it, what a direct chat may be. Every node of the
//! network — Hemicycle or Synapse with Tchap's module — judges the same events the same way, so a
//! rule-breaking event is refused wherever it is built and wherever it arrives; a node that let in
//! what the others refuse would split the room.
//!
//! The functions here decide from an event and the state before it, nothing else: no storage, no
//! configuration beyond [`Policy`]. `docs/network.md` lists every rule with the reference's
//! behaviour.

use ruma::UserId;
use serde_json::Value;

/// The state event type carrying a room's rule, as Tchap's clients and servers name it.
pub const ACCESS_RULES: &str = "im.vector.room.access_rules";

/// A room's access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Users of external servers can neither be invited nor join (every room's default).
    Restricted,
    /// External users may be invited, and hold no power.
    Unrestricted,
    /// A conversation of two people: no more members, no name, topic or avatar.
    Direct,
}

impl Rule {
    pub fn parse(value: &str) -> Option<Rule> {
        match value {
            "restricted" => Some(Rule::Restricted),
            "unrestricted" => Some(Rule::Unrestricted),
            "direct" => Some(Rule::Direct),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Restricted => "restricted",
            Rule::Unrestricted => "unrestricted",
            Rule::Direct => "direct",
        }
    }
}

/// The rule a room's state gives. A room without a rules event, or with a rule we do not know, is
/// judged as restricted — the strictest — as the reference does; only publication tells an
/// unknown rule apart (it is not `restricted`, so the room cannot be published).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRule {
    pub rule: Rule,
    /// The rules event names something that is not a known rule.
    pub unknown: bool,
}

impl RoomRule {
    pub fn from_content(content: Option<&Value>) -> RoomRule {
        match content.and_then(|c| c.get("rule")).and_then(Value::as_str).filter(|r| !r.is_empty()) {
            None => RoomRule { rule: Rule::Restricted, unknown: false },
            Some(name) => match Rule::parse(name) {
                Some(rule) => RoomRule { rule, unknown: false },
                None => RoomRule { rule: Rule::Restricted, unknown: true },
            },
        }
    }

    /// Whether the room may be listed in the public directory: restricted rooms only.
    pub fn may_be_published(self) -> bool {
        self.rule == Rule::Restricted && !self.unknown
    }
}

/// What the rules need to read of the state before an event.
pub trait StateView {
    /// The sender and content of the state event `(kind, state_key)`, if there is one.
    fn event(&self, kind: &str, state_key: &str) -> Option<(String, Value)>;
    /// The state keys of `m.room.member` events and of `m.room.third_party_invite` events whose
    /// content is not empty (a revoked third-party invite has an empty content). Only the
    /// `direct` rule asks, in rooms of two.
    fn members_and_tokens(&self) -> (Vec<String>, Vec<String>);
}

/// The network's side of a decision: which servers are external, who is exempt, whether the room
/// is in this node's public directory.
pub struct Policy<'a> {
    pub is_external_server: &'a dyn Fn(&str) -> bool,
    /// Server admins of this node and the network's bypass list.
    pub bypasses: &'a dyn Fn(&str) -> bool,
    pub is_published: &'a dyn Fn() -> bool,
}

impl Policy<'_> {
    fn is_external_user(&self, user: &str) -> bool {
        UserId::parse(user).is_ok_and(|u| (self.is_external_server)(u.server_name().as_str()))
    }
}

/// The event being judged.
pub struct Candidate<'a> {
    pub kind: &'a str,
    pub state_key: Option<&'a str>,
    pub sender: &'a str,
    pub content: &'a Value,
}

/// Why an event was refused (for the logs and the federation transaction's answer; clients get
/// the reference's one message, [`REFUSED`]).
pub type Refusal = &'static str;

/// What Synapse answers when a module refuses an event, which Tchap's clients expect.
pub const REFUSED: &str = "This event is not allowed in this context";

/// Judges `event` against the state before it. Only state events are judged.
pub fn check(event: &Candidate<'_>, state: &dyn StateView, policy: &Policy<'_>) -> Result<(), Refusal> {
    let Some(state_key) = event.state_key else {
        return Ok(());
    };
    if (policy.bypasses)(event.sender) {
        return Ok(());
    }
    if event.kind == ACCESS_RULES {
        return check_rule_change(event, state, policy);
    }
    let rule = RoomRule::from_content(state.event(ACCESS_RULES, "").map(|(_, c)| c).as_ref()).rule;
    match event.kind {
        "m.room.power_levels" => power_levels_allowed(event.content, rule, policy),
        "m.room.member" | "m.room.third_party_invite" => check_membership(event, state_key, rule, state, policy),
        "m.room.join_rules" => check_join_rule(event, rule, state),
        "m.room.avatar" | "m.room.name" | "m.room.topic" if rule == Rule::Direct => {
            Err("a direct chat has no name, topic or avatar")
        }
        "m.room.encryption" if join_rule(state).as_deref() == Some("public") => {
            Err("a public room cannot be encrypted")
        }
        _ => Ok(()),
    }
}

fn check_rule_change(event: &Candidate<'_>, state: &dyn StateView, policy: &Policy<'_>) -> Result<(), Refusal> {
    let Some(new) = event.content.get("rule").and_then(Value::as_str).and_then(Rule::parse) else {
        return Err("not a known access rule");
    };
    if new == Rule::Direct {
        let (members, tokens) = state.members_and_tokens();
        if members.len() > 2 || tokens.len() > 1 {
            return Err("a room of more than two people cannot become a direct chat");
        }
    }
    if new != Rule::Restricted && (policy.is_published)() {
        return Err("a room in the public directory stays restricted");
    }
    if new == Rule::Unrestricted && external_creator(state, policy) {
        return Err("an external user who created the room would hold power in it");
    }
    let Some((_, previous)) = state.event(ACCESS_RULES, "") else {
        return Ok(());
    };
    let previous = previous.get("rule").and_then(Value::as_str).and_then(Rule::parse);
    if previous == Some(Rule::Restricted) && new == Rule::Unrestricted {
        Ok(())
    } else {
        Err("the only change of access rule allowed is from restricted to unrestricted")
    }
}

/// Whether a creator of the room is an external user, where creators are above every power
/// level (room version 12 and later): such a room may not be opened to external users, who hold
/// no power there. (The reference predates these versions; this is its rule on power carried
/// over to them.)
fn external_creator(state: &dyn StateView, policy: &Policy<'_>) -> bool {
    let Some((creator, content)) = state.event("m.room.create", "") else { return false };
    let privileged = content
        .get("room_version")
        .and_then(Value::as_str)
        .and_then(|v| ruma::RoomVersionId::try_from(v).ok())
        .and_then(|v| v.rules())
        .is_some_and(|r| r.authorization.explicitly_privilege_room_creators);
    if !privileged {
        return false;
    }
    let additional = content.get("additional_creators").and_then(Value::as_array).into_iter().flatten();
    std::iter::once(creator.as_str())
        .chain(additional.filter_map(Value::as_str))
        .any(|user| policy.is_external_user(user))
}

/// Whether `creators` (a new room's creator and `additional_creators`) may create a room with
/// `rule` in a room version where creators are above every level: an external creator only in a
/// direct chat (where the reference makes both people admins anyway).
pub fn creators_allowed<'a>(mut creators: impl Iterator<Item = &'a str>, rule: Rule, policy: &Policy<'_>) -> bool {
    rule == Rule::Direct || !creators.any(|user| policy.is_external_user(user))
}

/// Under `unrestricted`, nobody gets power by default and external users get none at all. The
/// whole content is judged, not the change: a room's power levels never hold such a grant.
pub fn power_levels_allowed(content: &Value, rule: Rule, policy: &Policy<'_>) -> Result<(), Refusal> {
    if rule != Rule::Unrestricted {
        return Ok(());
    }
    if content.get("users_default").is_some_and(|d| !is_zero(d)) {
        return Err("users_default must stay 0 in a room open to external users");
    }
    let granted = content
        .get("users")
        .and_then(Value::as_object)
        .is_some_and(|users| users.iter().any(|(user, level)| policy.is_external_user(user) && !is_zero(level)));
    if granted {
        return Err("external users hold no power");
    }
    Ok(())
}

/// Python's truthiness of a JSON value, which is what the reference tests: `0`, `0.0`, `false`,
/// `null`, `""` are zero.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn membership_of(content: &Value) -> Option<&str> {
    content.get("membership").and_then(Value::as_str)
}

fn check_membership(
    event: &Candidate<'_>,
    state_key: &str,
    rule: Rule,
    state: &dyn StateView,
    policy: &Policy<'_>,
) -> Result<(), Refusal> {
    let is_member = event.kind == "m.room.member";
    let membership = if is_member { membership_of(event.content) } else { None };
    let previous = if is_member { state.event("m.room.member", state_key) } else { None };
    // Taking up an invite of an exempt user, or inviting one, is exempt too.
    if membership == Some("join") {
        if let Some((inviter, content)) = &previous {
            if membership_of(content) == Some("invite") && (policy.bypasses)(inviter) {
                return Ok(());
            }
        }
    }
    if membership == Some("invite") && (policy.bypasses)(state_key) {
        return Ok(());
    }
    match rule {
        Rule::Restricted => {
            // Third-party invites are judged when asked for (by the address's node).
            if !is_member {
                return Ok(());
            }
            // Anyone may leave, be kicked or banned: an external user who got in before the
            // rules must still be able to go.
            if !matches!(membership, Some("join" | "invite")) {
                return Ok(());
            }
            if policy.is_external_user(state_key) {
                return Err("users of external servers cannot enter a restricted room");
            }
            Ok(())
        }
        Rule::Unrestricted => {
            if membership == Some("join") && policy.is_external_user(state_key) {
                let current = previous.as_ref().and_then(|(_, c)| membership_of(c));
                // The reference also refuses a joined external user's profile change (a join
                // over a join); that lets nobody in, so it is allowed here.
                if !matches!(current, Some("invite" | "join")) {
                    return Err("external users need an invite to join");
                }
            }
            Ok(())
        }
        Rule::Direct => check_direct(event, state_key, state),
    }
}

fn check_direct(event: &Candidate<'_>, state_key: &str, state: &dyn StateView) -> Result<(), Refusal> {
    let (members, tokens) = state.members_and_tokens();
    let is_third_party = event.kind == "m.room.third_party_invite";
    if tokens.len() == 1 && is_third_party {
        // A revocation is a third-party invite with the same token and an empty content.
        return if tokens[0] == state_key { Ok(()) } else { Err("a direct chat has one pending third-party invite") };
    }
    if members.len() == 2 {
        if is_third_party || !members.iter().any(|m| m == state_key) {
            return Err("a direct chat is for its two people only");
        }
        return Ok(());
    }
    if members.len() == 1 && tokens.len() == 1 {
        let token = event
            .content
            .get("third_party_invite")
            .and_then(|t| t.get("signed"))
            .and_then(|s| s.get("token"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if token == tokens[0] || members[0] == state_key {
            return Ok(());
        }
        return Err("a direct chat is for its two people only");
    }
    Ok(())
}

fn join_rule(state: &dyn StateView) -> Option<String> {
    state
        .event("m.room.join_rules", "")
        .and_then(|(_, c)| c.get("join_rule").and_then(Value::as_str).map(str::to_owned))
}

fn check_join_rule(event: &Candidate<'_>, rule: Rule, state: &dyn StateView) -> Result<(), Refusal> {
    let new = event.content.get("join_rule").and_then(Value::as_str);
    if new == Some("public") {
        return if rule == Rule::Direct { Err("a direct chat cannot be public") } else { Ok(()) };
    }
    // A public room is not encrypted (see `m.room.encryption`); it may not turn into a private
    // room that is not encrypted either.
    if join_rule(state).as_deref() == Some("public") && state.event("m.room.encryption", "").is_none() {
        return Err("a public room becomes private only once encrypted");
    }
    Ok(())
}

/// The power levels a new room gets when its creator does not give them (Tchap's module: only
/// admins change state, moderators invite, everyone shares live locations and joins calls).
pub fn default_power_levels(creator: Option<&str>) -> Value {
    let mut users = serde_json::Map::new();
    if let Some(creator) = creator {
        users.insert(creator.to_owned(), 100.into());
    }
    serde_json::json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
            "m.beacon_info": 0,
            "org.matrix.msc3672.beacon_info": 0,
            "m.call.member": 0,
            "org.matrix.msc3401.call.member": 0,
        },
        "events_default": 0,
        "state_default": 100,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50,
    })
}

/// Fills the keys `defaults` has and `content` lacks, object by object.
pub fn fill_missing(content: &mut serde_json::Map<String, Value>, defaults: &Value) {
    let Some(defaults) = defaults.as_object() else { return };
    for (key, value) in defaults {
        match (content.get_mut(key), value) {
            (Some(Value::Object(inner)), Value::Object(_)) => fill_missing(inner, value),
            (Some(_), _) => {}
            (None, _) => {
                content.insert(key.clone(), value.clone());
            }
        }
    }
}

/// A creator's power levels may not let people below moderator invite, nor below admin change
/// state (at creation only: admins may loosen them later), and under `unrestricted` they follow
/// [`power_levels_allowed`].
pub fn creation_power_levels_allowed(content: &Value, rule: Rule, policy: &Policy<'_>) -> bool {
    let below = |key: &str, floor: f64| content.get(key).and_then(Value::as_f64).is_some_and(|v| v < floor);
    !below("invite", 50.0) && !below("state_default", 100.0) && power_levels_allowed(content, rule, policy).is_ok()
}
