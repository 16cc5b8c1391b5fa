//! User profiles: `displayname`, `avatar_url` and the extended fields of Matrix 1.16, kept as one
//! JSON object per user.

use std::{collections::BTreeMap, sync::Arc};

use ruma::UserId;
use serde_json::Value;

use crate::{
    db::{codec::Json, Batch, Database},
    error::{Error, Result},
};

/// The spec's cap on a whole profile's size.
const MAX_PROFILE_BYTES: usize = 64 * 1024;

pub struct Profiles {
    db: Arc<Database>,
}

/// The longest display name (Synapse's limit, so profiles travel between the two unchanged).
pub const MAX_DISPLAYNAME_CHARS: usize = 256;
/// The longest avatar URL (Synapse's limit).
pub const MAX_AVATAR_URL_CHARS: usize = 1000;

impl Profiles {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    pub fn get(&self, user: &UserId) -> Result<BTreeMap<String, Value>> {
        Ok(self.db.tables.users.userid_profile.get(&user.to_owned())?.map(|Json(p)| p).unwrap_or_default())
    }

    /// Sets (or with `None` removes) one field, checking the spec's rules for the known fields.
    pub fn set_field(&self, user: &UserId, field: &str, value: Option<Value>) -> Result<()> {
        // Clients from before extended profiles unset the display name or avatar by sending "".
        let value = value.filter(|v| !(matches!(field, "displayname" | "avatar_url") && v.as_str() == Some("")));
        if field.is_empty() || field.len() > 255 {
            return Err(Error::invalid_param("profile field names are 1 to 255 bytes"));
        }
        if let Some(value) = &value {
            match field {
                "displayname" if !value.is_string() => {
                    return Err(Error::BadJson("displayname must be a string".into()))
                }
                // Copied into every membership event of the user: capped as Synapse caps it.
                "displayname" if value.as_str().is_some_and(|s| s.chars().count() > MAX_DISPLAYNAME_CHARS) => {
                    return Err(Error::invalid_param(format!(
                        "display names are at most {MAX_DISPLAYNAME_CHARS} characters"
                    )));
                }
                "avatar_url" => {
                    let valid = value.as_str().is_some_and(|s| s.is_empty() || s.starts_with("mxc://"));
                    if !valid {
                        return Err(Error::BadJson("avatar_url must be an mxc:// URI".into()));
                    }
                    if value.as_str().is_some_and(|s| s.chars().count() > MAX_AVATAR_URL_CHARS) {
                        return Err(Error::invalid_param(format!(
                            "avatar URLs are at most {MAX_AVATAR_URL_CHARS} characters"
                        )));
                    }
                }
                _ => {}
            }
        }
        let mut profile = self.get(user)?;
        match value {
            Some(v) => profile.insert(field.to_owned(), v),
            None => profile.remove(field),
        };
        if serde_json::to_vec(&profile).map(|v| v.len()).unwrap_or(usize::MAX) > MAX_PROFILE_BYTES {
            return Err(Error::TooLarge("the profile would exceed 64 KiB".into()));
        }
        let mut batch = Batch::new();
        self.db.tables.users.userid_profile.insert(&mut batch, &user.to_owned(), &Json(profile));
        self.db.commit(batch)?;
        Ok(())
    }
}
