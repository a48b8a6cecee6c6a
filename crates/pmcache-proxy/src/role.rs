//! Who is asking: the role a request was granted (trust tiers, issue 13) and the name of the
//! token that granted it. The binary resolves it once, before any frontend, and attaches a
//! [`Caller`] to the request's extensions; the core reads it back with [`Caller::of`].

use http::request::Parts;

/// What a request may do to the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Hits are served; nothing the request does may change the store.
    Read,
    /// Pull-through: misses are fetched and stored (pmcache's behaviour before roles).
    Populate,
    /// Populate, plus the admin API.
    Admin,
}

impl Role {
    /// The lowercase label, as in the config, the log and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Populate => "populate",
            Role::Admin => "admin",
        }
    }

    /// True when requests of this role may store what they fetch.
    pub fn may_populate(self) -> bool {
        matches!(self, Role::Populate | Role::Admin)
    }
}

/// What a read-role request that misses gets (`[auth] read_misses`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMisses {
    /// Fetched, verified and streamed to the client, never stored.
    #[default]
    Relay,
    /// Refused with 403 and the reason.
    Refuse,
}

/// The role a request was granted, and the configured name of the token that granted it (never
/// the token itself). `token` is None for a request without credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The role granted.
    pub role: Role,
    /// The name of the matching `[[auth.tokens]]` entry, if credentials were presented.
    pub token: Option<String>,
}

impl Caller {
    /// A caller without credentials, granted `role`.
    pub fn anonymous(role: Role) -> Caller {
        Caller { role, token: None }
    }

    /// The caller attached to a request. A request nobody authenticated (a unit test driving a
    /// frontend directly) is treated as anonymous populate: pmcache's behaviour before roles.
    pub fn of(parts: &Parts) -> Caller {
        Caller::attached(parts).clone()
    }

    /// As [`Caller::of`], borrowed from the request.
    pub fn attached(parts: &Parts) -> &Caller {
        parts
            .extensions
            .get::<Caller>()
            .unwrap_or(&ANONYMOUS_POPULATE)
    }
}

/// Who a request nobody authenticated is.
pub static ANONYMOUS_POPULATE: Caller = Caller {
    role: Role::Populate,
    token: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_a_caller_keeps_todays_behaviour_and_an_attached_one_is_read_back() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        assert_eq!(Caller::of(&parts), Caller::anonymous(Role::Populate));
        let caller = Caller {
            role: Role::Read,
            token: Some("review".to_owned()),
        };
        parts.extensions.insert(caller.clone());
        assert_eq!(Caller::of(&parts), caller);
        assert!(!Role::Read.may_populate() && Role::Admin.may_populate());
    }
}
