//! What a cached token belongs to: [`CacheKey`], and the file name it hashes to.

/// The format's version, part of every key: a new format never reads an old file.
const VERSION: &str = "redis-entra token cache v1";

/// What a cached token belongs to: a credential kind and the non-secret facts that name the
/// identity (authority, tenant, client id, endpoint, ...) and the scope. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    parts: Vec<(String, String)>,
}

impl CacheKey {
    /// A key for credential `kind` (e.g. `client-secret`).
    pub fn new(kind: &str) -> Self {
        Self {
            parts: vec![("credential".into(), kind.into())],
        }
    }

    /// Adds a fact (`name=value`); `None` is recorded as absent, so that a tenant given and a
    /// tenant left out make two keys.
    pub fn with(mut self, name: &str, value: Option<&str>) -> Self {
        self.parts
            .push((name.into(), value.unwrap_or("(none)").to_string()));
        self
    }

    /// Adds a fingerprint of a secret (the first 128 bits of a SHA-256 of it, never the secret):
    /// a changed secret is another key, so a wrong new secret fails at once instead of being
    /// hidden by a token the old one got.
    pub fn with_secret(self, name: &str, secret: &str) -> Self {
        let mut input = b"redis-entra secret fingerprint\0".to_vec();
        input.extend_from_slice(secret.as_bytes());
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
        let hex: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.with(&format!("{name}_fingerprint"), Some(&hex))
    }

    /// The key's text, one `name=value` a line (newlines in values escaped).
    pub fn text(&self, scopes: &[&str]) -> String {
        let mut text = String::from(VERSION);
        let line = |text: &mut String, name: &str, value: &str| {
            text.push('\n');
            text.push_str(name);
            text.push('=');
            text.push_str(&value.replace('\\', "\\\\").replace('\n', "\\n"));
        };
        for (name, value) in &self.parts {
            line(&mut text, name, value);
        }
        line(&mut text, "scope", &scopes.join(" "));
        text
    }

    /// The file name for this key and `scopes`: `token-<first 128 bits of SHA-256, hex>.json`.
    pub fn file_name(&self, scopes: &[&str]) -> String {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.text(scopes).as_bytes());
        let hex: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("token-{hex}.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_every_part_and_scope() {
        let a = CacheKey::new("client-secret")
            .with("tenant", Some("t"))
            .with("client_id", Some("c"));
        let b = CacheKey::new("client-secret")
            .with("tenant", Some("t"))
            .with("client_id", Some("d"));
        let s = ["https://redis.azure.com/.default"];
        assert_ne!(a.file_name(&s), b.file_name(&s));
        assert_ne!(a.file_name(&s), a.file_name(&["other"]));
        assert_eq!(a.file_name(&s), a.clone().file_name(&s));
        assert_ne!(
            CacheKey::new("x").with("a", Some("b\nc=d")).text(&s),
            CacheKey::new("x")
                .with("a", Some("b"))
                .with("c", Some("d"))
                .text(&s)
        );
        assert!(a.file_name(&s).starts_with("token-") && a.file_name(&s).ends_with(".json"));
        let one = CacheKey::new("x").with_secret("secret", "hunter2");
        assert_ne!(one, CacheKey::new("x").with_secret("secret", "hunter3"));
        assert!(!one.text(&s).contains("hunter2"));
    }
}
