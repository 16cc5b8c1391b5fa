//! Which node an email address lives on: the network's email-domain map (`network.domains_file`),
//! the same file on every node, edited by operators and taken up without a restart — each use
//! looks at the file's modification time and size and reads it again when they changed (no
//! watcher thread, no polling: a map nobody asks about costs nothing).
//!
//! ```toml
//! # Addresses with a node of their own (checked first).
//! [addresses]
//! "jean.dupont@partenaire.fr" = "agents.interieur.example"
//! # Domains, exact or `*.`-prefixed for every subdomain; the longest match wins.
//! [domains]
//! "interieur.gouv.fr" = "agents.interieur.example"
//! "*.gouv.fr" = "agents.finances.example"
//! # Everyone else: the externals' node (on which an invite is required).
//! [fallback]
//! server = "externes.example"
//! ```

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    addresses: BTreeMap<String, String>,
    #[serde(default)]
    domains: BTreeMap<String, String>,
    #[serde(default)]
    fallback: Option<Fallback>,
    #[serde(default)]
    shadow: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fallback {
    server: String,
}

/// The map as last read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainMap {
    addresses: BTreeMap<String, String>,
    /// Exact domains.
    exact: BTreeMap<String, String>,
    /// `*.suffix` entries, by suffix (without the `*.`).
    suffixes: BTreeMap<String, String>,
    fallback: Option<String>,
    /// Node → the name it has for callers outside the network's own ranges.
    shadow: BTreeMap<String, String>,
}

impl DomainMap {
    pub fn parse(text: &str) -> Result<DomainMap, String> {
        let shape: FileShape = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut map =
            DomainMap { fallback: shape.fallback.map(|f| f.server.to_ascii_lowercase()), ..Default::default() };
        for (address, server) in shape.addresses {
            if !address.contains('@') {
                return Err(format!("addresses.\"{address}\" is not an email address"));
            }
            map.addresses.insert(address.to_lowercase(), server.to_ascii_lowercase());
        }
        for (server, shadow) in shape.shadow {
            map.shadow.insert(server.to_ascii_lowercase(), shadow.to_ascii_lowercase());
        }
        for (domain, server) in shape.domains {
            let domain = domain.to_ascii_lowercase();
            match domain.strip_prefix("*.") {
                Some(suffix) => map.suffixes.insert(suffix.to_owned(), server.to_ascii_lowercase()),
                None => map.exact.insert(domain, server.to_ascii_lowercase()),
            };
        }
        Ok(map)
    }

    /// The name `server` is given under to callers outside the network's ranges, if any.
    pub fn shadow_of(&self, server: &str) -> Option<&str> {
        self.shadow.get(&server.to_ascii_lowercase()).map(String::as_str)
    }

    /// Whether the map sends any address to `server`: the map names the network's nodes.
    pub fn names(&self, server: &str) -> bool {
        let server = server.to_ascii_lowercase();
        self.fallback.as_deref() == Some(server.as_str())
            || self.addresses.values().chain(self.exact.values()).chain(self.suffixes.values()).any(|s| *s == server)
    }

    /// The node an address belongs to, if the map says.
    pub fn server_of(&self, address: &str) -> Option<&str> {
        let address = address.to_lowercase();
        if let Some(server) = self.addresses.get(&address) {
            return Some(server);
        }
        let (_, domain) = address.rsplit_once('@')?;
        if let Some(server) = self.exact.get(domain) {
            return Some(server);
        }
        // The longest suffix first: `*.finances.gouv.fr` before `*.gouv.fr`.
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(server) = self.suffixes.get(parent) {
                return Some(server);
            }
            rest = parent;
        }
        self.fallback.as_deref()
    }
}

/// The map file and its last reading.
pub struct DomainsFile {
    path: PathBuf,
    cached: Mutex<Option<(Stamp, DomainMap)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok(Stamp { modified: meta.modified().ok(), len: meta.len() })
}

impl DomainsFile {
    /// Reads the file once, so that a wrong file stops the start instead of the first request.
    pub fn open(path: &Path) -> Result<DomainsFile, String> {
        let file = DomainsFile { path: path.to_owned(), cached: Mutex::new(None) };
        file.current()?;
        Ok(file)
    }

    /// The map as the file says now. A file that became unreadable or invalid keeps the last good
    /// map (an operator's typo must not send every address to the fallback), logged once per
    /// change of the file.
    pub fn current(&self) -> Result<DomainMap, String> {
        let mut cached = self.cached.lock().expect("domains map lock");
        let now = stamp(&self.path).map_err(|e| format!("{}: {e}", self.path.display()));
        if let (Ok(now), Some((seen, map))) = (&now, cached.as_ref()) {
            if now == seen {
                return Ok(map.clone());
            }
        }
        let read = now.and_then(|now| {
            let text = std::fs::read_to_string(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
            let map = DomainMap::parse(&text).map_err(|e| format!("{}: {e}", self.path.display()))?;
            Ok((now, map))
        });
        match read {
            Ok((now, map)) => {
                if cached.as_ref().is_some_and(|(_, old)| *old != map) {
                    tracing::info!(path = %self.path.display(), "the email-domain map was read again");
                }
                *cached = Some((now, map.clone()));
                Ok(map)
            }
            Err(e) => match cached.as_mut() {
                Some((seen, map)) => {
                    tracing::error!(error = %e, "the email-domain map cannot be read; the last good one stays");
                    // Remember this state of the file, so the error is logged once, not per request.
                    if let Ok(now) = stamp(&self.path) {
                        *seen = now;
                    }
                    Ok(map.clone())
                }
                None => Err(e),
            },
        }
    }
}
