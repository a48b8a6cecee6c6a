//! Authentication: the `[auth]` section, the tokens it lists, and the one check every request
//! passes before any frontend, which turns its credentials into a [`Caller`] or a 401.
//!
//! Only SHA-256 hashes of tokens are configured. A presented token is hashed and compared with
//! every configured hash in constant time; a token that matches none is refused, never treated
//! as anonymous, so a typo in a trusted job's secret cannot silently make it untrusted.

use std::path::PathBuf;

use anyhow::Context;
use base64::Engine as _;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use pmcache_proxy::{Caller, ReadMisses, Role};
use sha2::{Digest as _, Sha256};

/// The challenge sent with every 401, so clients (pip, Composer) know to send Basic credentials.
pub(crate) const CHALLENGE: &str = "Basic realm=\"pmcache\"";

/// The `[auth]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AuthConfig {
    /// The role of a request without credentials. Default `populate`.
    pub anonymous: Anonymous,
    /// What a read-role miss gets: `relay` or `refuse`. Default `relay`.
    pub read_misses: ReadMisses,
    /// A TOML file of `[[tokens]]` tables, added to `tokens` (a secret store can mount it).
    /// Default unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
    /// The tokens pmcache accepts, by hash. Default none.
    pub tokens: Vec<TokenConfig>,
}

/// The role of requests without credentials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Anonymous {
    /// Refused with 401: every request needs a token.
    None,
    /// Served from the cache; misses relayed or refused, never stored.
    Read,
    /// Pull-through, as before roles existed.
    #[default]
    Populate,
}

/// One `[[auth.tokens]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenConfig {
    /// Shown in the request log, never the token itself.
    pub name: String,
    /// The role the token grants.
    pub role: Role,
    /// SHA-256 of the token's UTF-8 bytes, 64 hex digits.
    pub sha256: String,
}

/// The shape of a `tokens_file`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenConfig>,
}

impl AuthConfig {
    /// Adds the tokens of `tokens_file`, if one is named.
    pub(crate) fn read_tokens_file(&mut self) -> anyhow::Result<()> {
        let Some(path) = &self.tokens_file else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read auth.tokens_file {}", path.display()))?;
        let file: TokensFile = toml::from_str(&text).with_context(|| {
            format!(
                "auth.tokens_file {} is not a TOML file of [[tokens]] tables",
                path.display()
            )
        })?;
        self.tokens.extend(file.tokens);
        Ok(())
    }

    /// Refuses tokens that could never match or be told apart, and a setup that refuses
    /// every request.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        for token in &self.tokens {
            anyhow::ensure!(
                !token.name.is_empty()
                    && token
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "auth.tokens name {:?} must be letters, digits, '.', '_' or '-' (it is a log field and a metric label)",
                token.name
            );
            anyhow::ensure!(
                names.insert(token.name.as_str()),
                "auth.tokens name {:?} is used twice: names must tell tokens apart",
                token.name
            );
            parse_hash(&token.sha256).with_context(|| format!("auth.tokens {:?}", token.name))?;
        }
        anyhow::ensure!(
            self.anonymous != Anonymous::None || !self.tokens.is_empty(),
            "auth.anonymous = \"none\" with no auth.tokens would refuse every request"
        );
        Ok(())
    }
}

/// A configured hash as bytes.
fn parse_hash(text: &str) -> anyhow::Result<[u8; 32]> {
    let mut hash = [0u8; 32];
    anyhow::ensure!(
        text.len() == 64,
        "sha256 must be 64 hex digits (the SHA-256 of the token), not {} characters",
        text.len()
    );
    hex::decode_to_slice(text, &mut hash).context("sha256 must be 64 hex digits")?;
    Ok(hash)
}

/// The checked `[auth]` rules, ready to judge requests.
pub(crate) struct Auth {
    /// The role of requests without credentials, None when they are refused.
    anonymous: Option<Role>,
    /// False when no tokens are configured and anonymous requests populate: authentication
    /// is off and credentials are ignored, as before roles existed (a client may carry some
    /// for another registry on the same host).
    enabled: bool,
    tokens: Vec<Known>,
}

struct Known {
    hash: [u8; 32],
    name: String,
    role: Role,
}

/// Why a request was refused 401. The reasons never quote what was presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No credentials, and `anonymous = "none"`.
    Missing,
    /// An `Authorization` header that is neither Bearer nor Basic with a password.
    Malformed,
    /// A token that matches no configured hash.
    Unknown,
}

impl Denied {
    /// The one-line reason the client gets.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Denied::Missing => {
                "pmcache needs a token: send Authorization: Bearer TOKEN, or the token as the password of HTTP Basic"
            }
            Denied::Malformed => {
                "the Authorization header is neither Bearer TOKEN nor HTTP Basic with the token as password"
            }
            Denied::Unknown => "the token presented is not one pmcache knows",
        }
    }
}

impl Auth {
    /// The rules of a checked `config`.
    pub(crate) fn new(config: &AuthConfig) -> anyhow::Result<Auth> {
        config.check()?;
        let tokens = config
            .tokens
            .iter()
            .map(|token| {
                Ok(Known {
                    hash: parse_hash(&token.sha256)?,
                    name: token.name.clone(),
                    role: token.role,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let anonymous = match config.anonymous {
            Anonymous::None => None,
            Anonymous::Read => Some(Role::Read),
            Anonymous::Populate => Some(Role::Populate),
        };
        Ok(Auth {
            anonymous,
            enabled: !tokens.is_empty() || anonymous != Some(Role::Populate),
            tokens,
        })
    }

    /// True when pmcache reads `Authorization` as its own credential: the header is then
    /// pmcache's token and must not travel on to any upstream.
    pub(crate) fn consumes_credentials(&self) -> bool {
        self.enabled
    }

    /// The caller a request's headers make, or why it is refused.
    pub(crate) fn resolve(&self, headers: &HeaderMap) -> Result<Caller, Denied> {
        if !self.enabled {
            return Ok(Caller::anonymous(Role::Populate));
        }
        match credentials(headers)? {
            None => self.anonymous.map(Caller::anonymous).ok_or(Denied::Missing),
            Some(token) => self.identify(&token).ok_or(Denied::Unknown),
        }
    }

    /// The configured token whose hash is `token`'s, compared with every one in constant time.
    fn identify(&self, token: &str) -> Option<Caller> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every hash is compared whole, with no early exit, whichever matches.
        let mut found = None;
        for known in &self.tokens {
            if hashes_equal(&presented, &known.hash) {
                found = Some(known);
            }
        }
        found.map(|known| Caller {
            role: known.role,
            token: Some(known.name.clone()),
        })
    }
}

/// Equality of two hashes in time independent of where they differ.
fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// The token a request presents: None without an `Authorization` header.
fn credentials(headers: &HeaderMap) -> Result<Option<String>, Denied> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Denied::Malformed);
    }
    let value = value.to_str().map_err(|_| Denied::Malformed)?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(Denied::Malformed)?;
    let rest = rest.trim();
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        basic_password(rest)?
    } else {
        return Err(Denied::Malformed);
    };
    if token.is_empty() {
        return Err(Denied::Malformed);
    }
    Ok(Some(token))
}

/// The password of HTTP Basic credentials (RFC 7617); the user name is whatever the client
/// needed to put there.
fn basic_password(encoded: &str) -> Result<String, Denied> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| Denied::Malformed)?;
    let text = String::from_utf8(decoded).map_err(|_| Denied::Malformed)?;
    let (_user, password) = text.split_once(':').ok_or(Denied::Malformed)?;
    Ok(password.to_owned())
}

/// A fresh token: 32 bytes from the OS RNG as 64 hex digits (256 bits).
pub(crate) fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("the OS random number generator failed: {error}"))?;
    Ok(hex::encode(bytes))
}

/// The hex SHA-256 of `token`, as `[[auth.tokens]] sha256` takes it.
pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The `[[auth.tokens]]` block that grants `role` to the token hashing to `sha256`.
pub(crate) fn config_block(name: &str, role: Role, sha256: &str) -> String {
    format!(
        "[[auth.tokens]]\nname = \"{name}\"\nrole = \"{}\"\nsha256 = \"{sha256}\"\n",
        role.as_str()
    )
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const TOKEN: &str = "s3cret-token";

    fn config(anonymous: Anonymous, tokens: &[(&str, Role, &str)]) -> AuthConfig {
        AuthConfig {
            anonymous,
            tokens: tokens
                .iter()
                .map(|(name, role, token)| TokenConfig {
                    name: (*name).to_owned(),
                    role: *role,
                    sha256: token_hash(token),
                })
                .collect(),
            ..AuthConfig::default()
        }
    }

    fn headers(authorization: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in authorization {
            headers.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn basic(user_and_password: &str) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_and_password);
        format!("Basic {encoded}")
    }

    #[test]
    fn bearer_and_basic_with_any_user_carry_the_token() {
        let bearer = format!("Bearer {TOKEN}");
        let lower = format!("bearer  {TOKEN} ");
        for value in [
            bearer,
            lower,
            basic(&format!("ci:{TOKEN}")),
            basic(&format!(":{TOKEN}")),
            basic(&format!("__token__:{TOKEN}")),
        ] {
            assert_eq!(
                credentials(&headers(&[&value])),
                Ok(Some(TOKEN.to_owned())),
                "{value}"
            );
        }
        assert_eq!(credentials(&headers(&[])), Ok(None));
    }

    #[test]
    fn malformed_credentials_are_refused() {
        let not_base64 = "Basic !!!".to_owned();
        for value in [
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            "Digest abc".to_owned(),
            TOKEN.to_owned(),
            not_base64,
            basic("no-colon"),
            basic("user:"),
        ] {
            assert_eq!(
                credentials(&headers(&[&value])),
                Err(Denied::Malformed),
                "{value}"
            );
        }
        let two = format!("Bearer {TOKEN}");
        assert_eq!(credentials(&headers(&[&two, &two])), Err(Denied::Malformed));
    }

    #[test]
    fn tokens_grant_their_role_and_wrong_ones_never_fall_back_to_anonymous() {
        let auth = Auth::new(&config(
            Anonymous::Read,
            &[
                ("post-merge", Role::Populate, TOKEN),
                ("ops", Role::Admin, "other"),
            ],
        ))
        .unwrap();
        let bearer = format!("Bearer {TOKEN}");
        assert_eq!(
            auth.resolve(&headers(&[&bearer])),
            Ok(Caller {
                role: Role::Populate,
                token: Some("post-merge".to_owned())
            })
        );
        assert_eq!(
            auth.resolve(&headers(&[&basic("x:other")])).map(|c| c.role),
            Ok(Role::Admin)
        );
        assert_eq!(
            auth.resolve(&headers(&[])),
            Ok(Caller::anonymous(Role::Read))
        );
        assert_eq!(
            auth.resolve(&headers(&["Bearer wrong"])),
            Err(Denied::Unknown)
        );
        assert_eq!(auth.resolve(&headers(&["Bearer"])), Err(Denied::Malformed));
    }

    #[test]
    fn anonymous_none_refuses_requests_without_credentials() {
        let auth = Auth::new(&config(Anonymous::None, &[("gate", Role::Read, TOKEN)])).unwrap();
        assert_eq!(auth.resolve(&headers(&[])), Err(Denied::Missing));
        assert!(!Denied::Missing.reason().contains(TOKEN));
    }

    #[test]
    fn the_default_ignores_credentials_as_before_roles() {
        let auth = Auth::new(&AuthConfig::default()).unwrap();
        for value in ["Bearer anything", "Digest whatever"] {
            assert_eq!(
                auth.resolve(&headers(&[value])),
                Ok(Caller::anonymous(Role::Populate))
            );
        }
    }

    #[test]
    fn hashes_compare_whole() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(hashes_equal(&a, &b));
        b[31] ^= 1;
        assert!(!hashes_equal(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!hashes_equal(&a, &b));
    }

    #[test]
    fn token_lists_are_checked() {
        let good = config(Anonymous::Populate, &[("a", Role::Read, TOKEN)]);
        good.check().unwrap();
        let mut twice = good.clone();
        twice.tokens.push(twice.tokens[0].clone());
        let mut short = good.clone();
        short.tokens[0].sha256.pop();
        let mut not_hex = good.clone();
        not_hex.tokens[0].sha256 = "g".repeat(64);
        let mut bad_name = good.clone();
        bad_name.tokens[0].name = "a b".to_owned();
        let nobody = config(Anonymous::None, &[]);
        for (broken, expected) in [
            (twice, "used twice"),
            (short, "64 hex digits"),
            (not_hex, "64 hex digits"),
            (bad_name, "letters, digits"),
            (nobody, "refuse every request"),
        ] {
            let error = broken.check().unwrap_err();
            assert!(format!("{error:#}").contains(expected), "{error:#}");
        }
    }

    #[test]
    fn tokens_file_adds_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            format!(
                "[[tokens]]\nname = \"gate\"\nrole = \"populate\"\nsha256 = \"{}\"\n",
                token_hash(TOKEN)
            ),
        )
        .unwrap();
        let mut config = AuthConfig {
            tokens_file: Some(path),
            ..AuthConfig::default()
        };
        config.read_tokens_file().unwrap();
        assert_eq!(config.tokens.len(), 1);
        assert_eq!(config.tokens[0].role, Role::Populate);
    }

    #[test]
    fn new_tokens_are_fresh_and_hash_to_what_the_block_says() {
        let (one, two) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(one.len(), 64);
        assert_ne!(one, two);
        let block = config_block("ci", Role::Read, &token_hash(&one));
        let parsed: toml::Table = toml::from_str(&block).unwrap();
        let entry = &parsed["auth"]["tokens"][0];
        assert_eq!(entry["sha256"].as_str(), Some(token_hash(&one).as_str()));
        // SHA-256 of "test", the example in the issue.
        assert_eq!(
            token_hash("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn a_wrong_token_is_refused_even_when_anonymous_may_populate() {
        let auth = Auth::new(&config(
            Anonymous::Populate,
            &[("post-merge", Role::Populate, TOKEN)],
        ))
        .unwrap();
        assert_eq!(
            auth.resolve(&headers(&["Bearer not-the-token"])),
            Err(Denied::Unknown)
        );
        assert_eq!(
            auth.resolve(&headers(&[])),
            Ok(Caller::anonymous(Role::Populate))
        );
    }
}
