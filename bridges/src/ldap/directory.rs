//! The directory client: connects (URIs tried in order, each operation bounded by `timeout_ms`),
//! checks a user's password by binding as them, and reads entries and groups with paged searches.

use std::{collections::HashMap, sync::Arc, time::Duration};

use ldap3::{
    adapters::{Adapter, EntriesOnly, PagedResults},
    ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry,
};

use super::{
    config::{LdapConfig, Mode},
    localpart::{map_uid, MappingError},
};

/// An account as the directory describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    /// The uid attribute as the directory spells it.
    pub uid: String,
    /// The Matrix localpart [`map_uid`] makes of it.
    pub localpart: String,
    pub name: Option<String>,
    pub mail: Option<String>,
    pub admin: bool,
}

/// Why the directory did not sign a user in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password, several entries, an entry outside the filter: the caller
    /// answers all of them alike so nobody learns which names exist.
    #[error("invalid username or password")]
    Denied,
    /// The directory cannot be reached or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
}

/// A directory failure during a sync or a lookup.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DirectoryError(pub String);

impl From<ldap3::LdapError> for DirectoryError {
    fn from(e: ldap3::LdapError) -> Self {
        Self(e.to_string())
    }
}

/// What a sync reads from the directory.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub entries: Vec<Entry>,
    /// Entries whose uid makes no valid localpart (reported, never created).
    pub unmapped: Vec<(String, MappingError)>,
    /// Members of each configured group, by group DN: localparts of entries in `entries`.
    pub groups: HashMap<String, Vec<String>>,
}

pub struct Directory {
    config: Arc<LdapConfig>,
    bind_password: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Directory {
    /// Reads the service password and the CA file once, so a missing file stops start-up.
    pub fn new(config: Arc<LdapConfig>) -> Result<Self, DirectoryError> {
        let bind_password = match &config.bind_password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    DirectoryError(format!("cannot read ldap.bind_password_file {}: {e}", path.display()))
                })?;
                Some(text.trim_end_matches(['\n', '\r']).to_owned())
            }
            None => None,
        };
        let tls = match &config.ca_file {
            Some(path) => Some(Arc::new(tls_config(path)?)),
            None => None,
        };
        Ok(Self { config, bind_password, tls })
    }

    pub fn config(&self) -> &LdapConfig {
        &self.config
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// A connection to the first URI that answers.
    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut last = String::from("no ldap.uri");
        for uri in &self.config.uri.0 {
            let mut settings =
                LdapConnSettings::new().set_conn_timeout(self.timeout()).set_starttls(self.config.start_tls);
            if let Some(tls) = &self.tls {
                settings = settings.set_config(tls.clone());
            }
            match tokio::time::timeout(self.timeout(), LdapConnAsync::with_settings(settings, uri)).await {
                Ok(Ok((conn, mut ldap))) => {
                    tokio::spawn(async move {
                        if let Err(error) = conn.drive().await {
                            tracing::debug!(%error, "LDAP connection closed");
                        }
                    });
                    ldap.with_timeout(self.timeout());
                    return Ok(ldap);
                }
                Ok(Err(e)) => last = format!("{uri}: {e}"),
                Err(_) => last = format!("{uri}: no answer within {} ms", self.config.timeout_ms),
            }
            tracing::warn!(uri, error = %last, "LDAP server unreachable, trying the next one");
        }
        Err(DirectoryError(format!("the directory cannot be reached ({last})")))
    }

    /// A connection bound as the service account (anonymous when none is configured).
    async fn service(&self) -> Result<Ldap, DirectoryError> {
        let mut ldap = self.connect().await?;
        if let (Some(dn), Some(password)) = (&self.config.bind_dn, &self.bind_password) {
            ldap.simple_bind(dn, password)
                .await?
                .success()
                .map_err(|e| DirectoryError(format!("the service account {dn} cannot bind: {e}")))?;
        }
        Ok(ldap)
    }

    fn attributes(&self) -> Vec<&str> {
        let a = &self.config.attributes;
        vec![a.uid.as_str(), a.name.as_str(), a.mail.as_str()]
    }

    /// Checks `password` for the login name `login` (a localpart or the uid as the directory
    /// spells it) and returns the entry. The whole exchange is bounded by `timeout_ms`.
    pub async fn authenticate(&self, login: &str, password: &str) -> Result<Entry, AuthError> {
        // An empty password makes an "unauthenticated bind" that many servers accept (RFC 4513
        // §5.1.2): it would sign anyone in.
        if password.is_empty() || login.is_empty() {
            return Err(AuthError::Denied);
        }
        match tokio::time::timeout(self.timeout(), self.authenticate_inner(login, password)).await {
            Ok(result) => result,
            Err(_) => Err(AuthError::Unavailable(format!(
                "the directory did not answer within {} ms",
                self.config.timeout_ms
            ))),
        }
    }

    async fn authenticate_inner(&self, login: &str, password: &str) -> Result<Entry, AuthError> {
        let unavailable = |e: DirectoryError| AuthError::Unavailable(e.0);
        let (mut ldap, dn) = match self.config.mode {
            Mode::Search => {
                let mut ldap = self.service().await.map_err(unavailable)?;
                let filter =
                    format!("(&{}({}={}))", self.config.filter, self.config.attributes.uid, ldap_escape(login));
                let (entries, _) = ldap
                    .search(&self.config.base, Scope::Subtree, &filter, self.attributes())
                    .await
                    .map_err(|e| AuthError::Unavailable(e.to_string()))?
                    .success()
                    .map_err(|e| AuthError::Unavailable(e.to_string()))?;
                let [entry] = entries.as_slice() else { return Err(AuthError::Denied) };
                let dn = SearchEntry::construct(entry.clone()).dn;
                (ldap, dn)
            }
            Mode::Simple => {
                let template = self.config.bind_dn_template.as_deref().unwrap_or_default();
                let dn = template.replace("{user}", &ldap3::dn_escape(login));
                (self.connect().await.map_err(unavailable)?, dn)
            }
        };
        let bound = ldap.simple_bind(&dn, password).await.map_err(|e| AuthError::Unavailable(e.to_string()))?;
        match bound.rc {
            0 => {}
            // invalidCredentials, inappropriateAuthentication, insufficientAccessRights, noSuchObject
            49 | 48 | 50 | 32 | 53 => return Err(AuthError::Denied),
            _ => return Err(AuthError::Unavailable(format!("bind refused: {bound}"))),
        }
        // Read the entry as the user (or the service again in search mode): it must still match
        // the filter, and its attributes make the profile.
        let entry = self.read_entry(&mut ldap, &dn).await.map_err(unavailable)?.ok_or(AuthError::Denied)?;
        let _ = ldap.unbind().await;
        match entry {
            Ok(entry) => Ok(entry),
            Err(error) => {
                tracing::warn!(%dn, %error, "directory entry has no usable uid; sign-in refused");
                Err(AuthError::Denied)
            }
        }
    }

    /// The entry whose uid attribute is `uid`, as the service account reads it (a profile
    /// refresh after a sign-in). `None` when no entry (or several) matches.
    pub async fn entry_for(&self, uid: &str) -> Result<Option<Entry>, DirectoryError> {
        let lookup = async {
            let mut ldap = self.service().await?;
            let filter = format!("(&{}({}={}))", self.config.filter, self.config.attributes.uid, ldap_escape(uid));
            let (found, _) = ldap.search(&self.config.base, Scope::Subtree, &filter, vec!["1.1"]).await?.success()?;
            let [found] = found.as_slice() else { return Ok(None) };
            let dn = SearchEntry::construct(found.clone()).dn;
            let entry = self.read_entry(&mut ldap, &dn).await?;
            let _ = ldap.unbind().await;
            Ok(entry.and_then(Result::ok))
        };
        tokio::time::timeout(self.timeout(), lookup)
            .await
            .unwrap_or_else(|_| Err(DirectoryError(format!("no answer within {} ms", self.config.timeout_ms))))
    }

    /// The entry at `dn` if it matches the filter, with its admin flag.
    async fn read_entry(
        &self,
        ldap: &mut Ldap,
        dn: &str,
    ) -> Result<Option<Result<Entry, MappingError>>, DirectoryError> {
        let (found, _) = ldap.search(dn, Scope::Base, &self.config.filter, self.attributes()).await?.non_error()?;
        let Some(found) = found.into_iter().next() else { return Ok(None) };
        let raw = SearchEntry::construct(found);
        let admin = match &self.config.admin_filter {
            Some(filter) => {
                let (hits, _) = ldap.search(dn, Scope::Base, filter, vec!["1.1"]).await?.non_error()?;
                !hits.is_empty()
            }
            None => false,
        };
        Ok(Some(self.entry(raw, admin)))
    }

    fn entry(&self, raw: SearchEntry, admin: bool) -> Result<Entry, MappingError> {
        let a = &self.config.attributes;
        let uid = first(&raw, &a.uid).ok_or(MappingError::NoUid)?;
        let localpart = map_uid(&uid)?;
        Ok(Entry {
            dn: raw.dn.clone(),
            uid,
            localpart,
            name: first(&raw, &a.name),
            mail: first(&raw, &a.mail).map(|m| m.trim().to_lowercase()),
            admin,
        })
    }

    /// Reads every entry of `base` + `filter` page by page, then the admin entries and the
    /// configured groups. Any directory error fails the whole read, so a sync never acts on half
    /// a directory.
    pub async fn snapshot(&self) -> Result<Snapshot, DirectoryError> {
        let mut ldap = self.service().await?;
        let mut snapshot = Snapshot::default();
        let raw = self.paged(&mut ldap, &self.config.filter, self.attributes()).await?;
        let admins: std::collections::HashSet<String> = match &self.config.admin_filter {
            Some(admin) => {
                let filter = format!("(&{}{admin})", self.config.filter);
                self.paged(&mut ldap, &filter, vec!["1.1"]).await?.into_iter().map(|e| normalize_dn(&e.dn)).collect()
            }
            None => Default::default(),
        };
        let mut by_dn = HashMap::new();
        let mut by_uid = HashMap::new();
        for raw in raw {
            let admin = admins.contains(&normalize_dn(&raw.dn));
            let dn = raw.dn.clone();
            match self.entry(raw, admin) {
                Ok(entry) => {
                    by_dn.insert(normalize_dn(&entry.dn), entry.localpart.clone());
                    by_uid.insert(entry.uid.to_lowercase(), entry.localpart.clone());
                    snapshot.entries.push(entry);
                }
                Err(error) => snapshot.unmapped.push((dn, error)),
            }
        }
        for group in &self.config.groups {
            if snapshot.groups.contains_key(&group.dn) {
                continue;
            }
            let (found, _) = ldap
                .search(&group.dn, Scope::Base, "(objectClass=*)", vec!["member", "uniqueMember", "memberUid"])
                .await?
                .success()
                .map_err(|e| DirectoryError(format!("cannot read the group {}: {e}", group.dn)))?;
            let Some(found) = found.into_iter().next() else {
                return Err(DirectoryError(format!("the group {} does not exist", group.dn)));
            };
            let raw = SearchEntry::construct(found);
            let mut members = Vec::new();
            for (attr, values) in &raw.attrs {
                let (index, key): (_, fn(&str) -> String) = match attr.to_ascii_lowercase().as_str() {
                    "member" | "uniquemember" => (&by_dn, normalize_dn),
                    "memberuid" => (&by_uid, str::to_lowercase),
                    _ => continue,
                };
                for value in values {
                    // Members outside the filter (disabled, other branches) are not accounts.
                    if let Some(localpart) = index.get(&key(value)) {
                        members.push(localpart.clone());
                    }
                }
            }
            members.sort();
            members.dedup();
            snapshot.groups.insert(group.dn.clone(), members);
        }
        let _ = ldap.unbind().await;
        Ok(snapshot)
    }

    async fn paged(&self, ldap: &mut Ldap, filter: &str, attrs: Vec<&str>) -> Result<Vec<SearchEntry>, DirectoryError> {
        let adapters: Vec<Box<dyn Adapter<_, _>>> =
            vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(self.config.page_size as i32))];
        let mut stream = ldap.streaming_search_with(adapters, &self.config.base, Scope::Subtree, filter, attrs).await?;
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(self.timeout(), stream.next()).await {
                Ok(Ok(Some(entry))) => out.push(SearchEntry::construct(entry)),
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    return Err(DirectoryError(format!(
                        "the directory stopped answering the search (no page within {} ms)",
                        self.config.timeout_ms
                    )))
                }
            }
        }
        stream
            .finish()
            .await
            .success()
            .map_err(|e| DirectoryError(format!("the search of {} failed: {e}", self.config.base)))?;
        Ok(out)
    }
}

/// The first value of an attribute, matched case-insensitively as LDAP names are.
fn first(entry: &SearchEntry, attr: &str) -> Option<String> {
    entry
        .attrs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(attr))
        .and_then(|(_, values)| values.first())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// DNs compared as the directory does for the usual cases: case and spaces around separators.
fn normalize_dn(dn: &str) -> String {
    dn.split(',').map(|rdn| rdn.trim().to_lowercase().replace(" = ", "=")).collect::<Vec<_>>().join(",")
}

fn tls_config(path: &std::path::Path) -> Result<rustls::ClientConfig, DirectoryError> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| DirectoryError(format!("cannot read ldap.ca_file {}: {e}", path.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| DirectoryError(format!("ldap.ca_file {}: {e}", path.display())))?;
        roots.add(cert).map_err(|e| DirectoryError(format!("ldap.ca_file {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(DirectoryError(format!("ldap.ca_file {} holds no certificate", path.display())));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::normalize_dn;

    #[test]
    fn dns_compare_without_case_or_spaces() {
        assert_eq!(normalize_dn("UID=Jean, OU=People,dc=Example"), "uid=jean,ou=people,dc=example");
        assert_ne!(normalize_dn("uid=jean,ou=people"), normalize_dn("uid=jeanne,ou=people"));
    }
}
