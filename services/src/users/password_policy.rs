//! Password rules (MSC2000, as Synapse's `password_config.policy`): what `[password_policy]`
//! demands of a new password, announced at `GET /password_policy` so clients check as the user
//! types, and enforced by the service itself on every way a password is set (registration, a
//! change, a reset by email, an admin's reset, the command line), so no path can skip them.
//! Passwords the directory owns are never set here, hence never checked.

use crate::{
    config::PasswordPolicyConfig,
    error::{Error, Result},
};

/// The configured rules.
#[derive(Debug, Clone, Default)]
pub struct PasswordPolicy {
    config: PasswordPolicyConfig,
}

impl PasswordPolicy {
    pub fn new(config: PasswordPolicyConfig) -> Self {
        Self { config }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The rules as `GET /password_policy` announces them: nothing when disabled (any password
    /// is accepted), else every rule with its MSC2000 name.
    pub fn announced(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut rules = serde_json::Map::new();
        if !self.config.enabled {
            return rules;
        }
        let c = &self.config;
        rules.insert("m.minimum_length".into(), c.minimum_length.into());
        rules.insert("m.require_digit".into(), c.require_digit.into());
        rules.insert("m.require_symbol".into(), c.require_symbol.into());
        rules.insert("m.require_lowercase".into(), c.require_lowercase.into());
        rules.insert("m.require_uppercase".into(), c.require_uppercase.into());
        rules
    }

    /// Refuses a password that breaks a rule, naming the first broken one with its MSC2000
    /// errcode. The classes are Synapse's (ASCII digits and letters; a symbol is anything else),
    /// so a password accepted by one server of the network is accepted by the others; the length
    /// counts characters, not bytes.
    pub fn check(&self, password: &str) -> Result<()> {
        let c = &self.config;
        if !c.enabled {
            return Ok(());
        }
        let refuse = |errcode, message: String| Err(Error::PasswordRefused { errcode, message });
        if password.chars().count() < c.minimum_length as usize {
            return refuse(
                "M_PASSWORD_TOO_SHORT",
                format!("the password must be at least {} characters long", c.minimum_length),
            );
        }
        if c.require_digit && !password.chars().any(|ch| ch.is_ascii_digit()) {
            return refuse("M_PASSWORD_NO_DIGIT", "the password must include at least one digit".into());
        }
        if c.require_symbol && password.chars().all(|ch| ch.is_ascii_alphanumeric()) {
            return refuse("M_PASSWORD_NO_SYMBOL", "the password must include at least one symbol".into());
        }
        if c.require_uppercase && !password.chars().any(|ch| ch.is_ascii_uppercase()) {
            return refuse("M_PASSWORD_NO_UPPERCASE", "the password must include at least one uppercase letter".into());
        }
        if c.require_lowercase && !password.chars().any(|ch| ch.is_ascii_lowercase()) {
            return refuse("M_PASSWORD_NO_LOWERCASE", "the password must include at least one lowercase letter".into());
        }
        Ok(())
    }

    /// A random password that keeps the rules, for the operator commands that make one up
    /// (`user create`, `user reset-password` without a password file).
    pub fn generate(&self) -> String {
        loop {
            let mut password = super::random_password();
            while password.chars().count() < self.config.minimum_length as usize {
                password.push_str(&super::random_password());
            }
            // The random alphabet has no symbol; one dash in the middle keeps it easy to copy.
            password.insert(password.len() / 2, '-');
            if self.check(&password).is_ok() {
                return password;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy::new(PasswordPolicyConfig {
            enabled: true,
            minimum_length: 10,
            require_digit: true,
            require_symbol: true,
            require_lowercase: true,
            require_uppercase: true,
        })
    }

    fn errcode(password: &str) -> Option<&'static str> {
        match policy().check(password) {
            Ok(()) => None,
            Err(Error::PasswordRefused { errcode, .. }) => Some(errcode),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn each_rule_has_its_errcode() {
        assert_eq!(errcode("Ab1-"), Some("M_PASSWORD_TOO_SHORT"));
        // Ten characters, not ten bytes: "é" is two bytes.
        assert_eq!(errcode("Abcdéfgh1"), Some("M_PASSWORD_TOO_SHORT"));
        assert_eq!(errcode("Abcdefghij-"), Some("M_PASSWORD_NO_DIGIT"));
        assert_eq!(errcode("Abcdefghij1"), Some("M_PASSWORD_NO_SYMBOL"));
        assert_eq!(errcode("abcdefghij1-"), Some("M_PASSWORD_NO_UPPERCASE"));
        assert_eq!(errcode("ABCDEFGHIJ1-"), Some("M_PASSWORD_NO_LOWERCASE"));
        assert_eq!(errcode("Abcdéfghij1"), None, "a non-ASCII letter counts as a symbol, as in Synapse");
        assert_eq!(errcode("Abcdefghij1-"), None);
    }

    #[test]
    fn disabled_accepts_anything_and_announces_nothing() {
        let off =
            PasswordPolicy::new(PasswordPolicyConfig { enabled: false, minimum_length: 50, ..Default::default() });
        assert!(off.check("a").is_ok());
        assert!(off.announced().is_empty());
    }

    #[test]
    fn generated_passwords_keep_the_rules() {
        let long = PasswordPolicy::new(PasswordPolicyConfig { minimum_length: 60, ..policy().config });
        for _ in 0..20 {
            assert!(long.check(&long.generate()).is_ok());
        }
    }
}
