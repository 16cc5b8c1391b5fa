//! The `[ldap]` section of the homeserver's configuration. Key names follow matrix-synapse-ldap3
//! and conduwuit/tuwunel where they exist, so operators moving from those find them.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    pub enabled: bool,
    /// `search`: bind as `bind_dn`, find the entry by its uid attribute, then bind as it; `simple`:
    /// bind directly as the DN made from `bind_dn_template`.
    pub mode: Mode,
    /// One URI or a list, tried in order when a server cannot be reached: `ldap://host:389`,
    /// `ldaps://host:636`.
    pub uri: Uris,
    /// Upgrade `ldap://` connections with StartTLS (refused if the server cannot).
    pub start_tls: bool,
    /// Accept `ldap://` without StartTLS: passwords then cross the network in clear and anyone
    /// on the path can forge the directory's answers (and so make themselves server admin).
    /// Refused at start-up unless this is set; for a directory on the same host or in tests.
    pub allow_insecure: bool,
    /// PEM file of the CA that signed the directory's certificate (ldaps:// and StartTLS); without
    /// it the system's roots are used.
    pub ca_file: Option<PathBuf>,
    /// Bound on every directory operation (connect, bind, search); past it a login answers 503.
    pub timeout_ms: u64,
    /// The service account of search mode.
    pub bind_dn: Option<String>,
    /// File holding the service account's password (kept out of the configuration file).
    pub bind_password_file: Option<PathBuf>,
    /// Simple mode: the DN of a user, `{user}` standing for the (escaped) login name.
    pub bind_dn_template: Option<String>,
    /// Where users are searched (subtree).
    pub base: String,
    /// Which entries are accounts; entries outside it cannot sign in and are deactivated by sync.
    pub filter: String,
    pub attributes: Attributes,
    /// Entries matching this filter (as well as `filter`) are server admins.
    pub admin_filter: Option<String>,
    /// Let local accounts that are not admins keep signing in with a local password (by default
    /// only admin accounts made with `hemicycle user create` do).
    pub local_password_fallback: bool,
    /// Seconds between directory syncs run by the server; 0: only `hemicycle ldap sync`.
    pub sync_interval_s: u64,
    /// A sync that would deactivate more than this share of the directory's active accounts is
    /// refused as a whole: an emptied search or a wrong filter must not lock everyone out.
    pub max_deactivate_ratio: f64,
    /// Entries per page of the sync's paged search (RFC 2696; Active Directory serves at most
    /// 1,000 a page).
    pub page_size: u32,
    /// Localpart of the bridge's own user, which invites and removes group members.
    pub bridge_user: String,
    /// Directory groups whose members belong to a room.
    pub groups: Vec<GroupMapping>,
}

impl Default for LdapConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: Mode::Search,
            uri: Uris::default(),
            start_tls: false,
            allow_insecure: false,
            ca_file: None,
            timeout_ms: 5_000,
            bind_dn: None,
            bind_password_file: None,
            bind_dn_template: None,
            base: String::new(),
            filter: "(objectClass=*)".to_owned(),
            attributes: Attributes::default(),
            admin_filter: None,
            local_password_fallback: false,
            sync_interval_s: 0,
            max_deactivate_ratio: 0.1,
            page_size: 500,
            bridge_user: "ldap".to_owned(),
            groups: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Search,
    Simple,
}

/// `uri = "ldap://a"` or `uri = ["ldap://a", "ldap://b"]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "OneOrMany")]
pub struct Uris(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for Uris {
    fn from(value: OneOrMany) -> Self {
        match value {
            OneOrMany::One(uri) => Uris(vec![uri]),
            OneOrMany::Many(uris) => Uris(uris),
        }
    }
}

/// Which attributes of an entry make the account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Attributes {
    /// The login name, mapped to the localpart (`uid`; `sAMAccountName` on Active Directory).
    pub uid: String,
    /// The display name (`cn`, `displayName`).
    pub name: String,
    /// The email address, added to the account as a third-party id.
    pub mail: String,
}

impl Default for Attributes {
    fn default() -> Self {
        Self { uid: "uid".to_owned(), name: "cn".to_owned(), mail: "mail".to_owned() }
    }
}

/// `[[ldap.groups]]`: the members of the group `dn` belong to `room`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMapping {
    /// DN of a group entry listing members by `member`, `uniqueMember` (DNs) or `memberUid` (uids).
    pub dn: String,
    /// A local room id or alias; a space to give the group its rooms too (with `space_children`).
    pub room: String,
    /// Join members directly instead of inviting them.
    #[serde(default)]
    pub join: bool,
    /// For a space: the rooms it lists (`m.space.child`) get the same members.
    #[serde(default)]
    pub space_children: bool,
}

impl LdapConfig {
    /// Checks what serde cannot: returns the dotted key at fault and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !self.enabled {
            return Ok(());
        }
        let err = |key: &str, reason: &str| Err((format!("ldap.{key}"), reason.to_owned()));
        if self.uri.0.is_empty() {
            return err("uri", "at least one ldap:// or ldaps:// URI is needed");
        }
        for uri in &self.uri.0 {
            if !(uri.starts_with("ldap://") || uri.starts_with("ldaps://")) {
                return err("uri", &format!("{uri} is neither ldap:// nor ldaps://"));
            }
            if self.start_tls && uri.starts_with("ldaps://") {
                return err("start_tls", "StartTLS is for ldap:// URIs; ldaps:// is TLS already");
            }
        }
        if self.timeout_ms == 0 {
            return err("timeout_ms", "must be above 0");
        }
        if self.base.trim().is_empty() {
            return err("base", "the search base is needed (e.g. ou=people,dc=example,dc=gouv,dc=fr)");
        }
        for (key, filter) in [("filter", Some(&self.filter)), ("admin_filter", self.admin_filter.as_ref())] {
            if let Some(filter) = filter {
                if !(filter.starts_with('(') && filter.ends_with(')')) {
                    return err(key, "an LDAP filter is written in parentheses, e.g. (objectClass=person)");
                }
            }
        }
        match self.mode {
            Mode::Search => {
                if self.bind_dn.is_some() != self.bind_password_file.is_some() {
                    return err("bind_password_file", "bind_dn and bind_password_file go together");
                }
            }
            Mode::Simple => match &self.bind_dn_template {
                Some(template) if template.contains("{user}") => {}
                _ => return err("bind_dn_template", "simple mode needs a template containing {user}"),
            },
        }
        if self.attributes.uid.is_empty() || self.attributes.name.is_empty() || self.attributes.mail.is_empty() {
            return err("attributes", "attribute names cannot be empty");
        }
        if !(0.0..=1.0).contains(&self.max_deactivate_ratio) {
            return err("max_deactivate_ratio", "a share between 0 and 1");
        }
        if self.page_size == 0 || self.page_size > i32::MAX as u32 {
            return err("page_size", "must be above 0");
        }
        if self.bridge_user.is_empty() {
            return err("bridge_user", "the bridge's localpart cannot be empty");
        }
        for (i, group) in self.groups.iter().enumerate() {
            if group.dn.trim().is_empty() {
                return err(&format!("groups[{i}].dn"), "the group's DN is needed");
            }
            if !(group.room.starts_with('!') || group.room.starts_with('#')) {
                return err(&format!("groups[{i}].room"), "a room id (!…) or alias (#…)");
            }
        }
        if !self.start_tls && !self.allow_insecure {
            if let Some(uri) = self.uri.0.iter().find(|u| u.starts_with("ldap://")) {
                return err(
                    "uri",
                    &format!(
                        "{uri} is plain ldap:// without StartTLS: directory passwords would cross the network in \
                         clear and a forged answer could make anyone a server admin. Use ldaps://, or set \
                         ldap.start_tls = true, or (a directory on this host, tests) ldap.allow_insecure = true"
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> LdapConfig {
        LdapConfig {
            enabled: true,
            uri: Uris(vec!["ldaps://127.0.0.1:636".into()]),
            base: "ou=people,dc=example".into(),
            ..Default::default()
        }
    }

    fn key_of(config: LdapConfig) -> String {
        config.validate().expect_err("refused").0
    }

    #[test]
    fn a_complete_section_passes_and_a_disabled_one_is_not_checked() {
        enabled().validate().unwrap();
        LdapConfig::default().validate().unwrap();
    }

    #[test]
    fn each_mistake_names_its_key() {
        assert_eq!(key_of(LdapConfig { uri: Uris(vec![]), ..enabled() }), "ldap.uri");
        assert_eq!(key_of(LdapConfig { uri: Uris(vec!["http://x".into()]), ..enabled() }), "ldap.uri");
        let plain = Uris(vec!["ldaps://a".into(), "ldap://b".into()]);
        assert_eq!(key_of(LdapConfig { uri: plain.clone(), ..enabled() }), "ldap.uri");
        LdapConfig { uri: plain.clone(), allow_insecure: true, ..enabled() }.validate().unwrap();
        LdapConfig { uri: Uris(vec!["ldap://b".into()]), start_tls: true, ..enabled() }.validate().unwrap();
        let ldaps = Uris(vec!["ldaps://x".into()]);
        assert_eq!(key_of(LdapConfig { uri: ldaps, start_tls: true, ..enabled() }), "ldap.start_tls");
        assert_eq!(key_of(LdapConfig { base: " ".into(), ..enabled() }), "ldap.base");
        assert_eq!(key_of(LdapConfig { filter: "uid=x".into(), ..enabled() }), "ldap.filter");
        assert_eq!(key_of(LdapConfig { timeout_ms: 0, ..enabled() }), "ldap.timeout_ms");
        assert_eq!(key_of(LdapConfig { bind_dn: Some("cn=x".into()), ..enabled() }), "ldap.bind_password_file");
        assert_eq!(key_of(LdapConfig { mode: Mode::Simple, ..enabled() }), "ldap.bind_dn_template");
        assert_eq!(key_of(LdapConfig { max_deactivate_ratio: 1.5, ..enabled() }), "ldap.max_deactivate_ratio");
        let group = GroupMapping { dn: "cn=g".into(), room: "dsi".into(), join: false, space_children: false };
        assert_eq!(key_of(LdapConfig { groups: vec![group], ..enabled() }), "ldap.groups[0].room");
    }
}
