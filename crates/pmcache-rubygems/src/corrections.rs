//! What `/versions` says of the gems whose served `/info` differs from the upstream's: the
//! line each filtered `/info` rendering calls for, remembered until the rules change or a version
//! it hides comes of age.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use pmcache_proxy::{Document, Role};

use crate::Frontend;
use crate::routes::{BODY, ECOSYSTEM, HIDDEN};
use crate::{compact, filter};

/// What one filtered `/info` rendering makes `/versions` say of its gem.
pub(crate) struct NotedCorrection {
    /// The sha256 of the rendering's record of it (see `routes`), to skip reading it again.
    pub(crate) digest: pmcache_proxy::Digest,
    /// The line, and the upstream `/info` it was made from.
    pub(crate) line: filter::Correction,
    /// When a version it hides comes of age: the line is stale from then.
    pub(crate) until: Option<SystemTime>,
    /// The rules it was made under: a line made under others is left out.
    pub(crate) policy: Arc<pmcache_policy::Policy>,
}

impl Frontend {
    /// Remembers the `/versions` line a served `/info` rendering calls for, or that it calls
    /// for none; when that changes, the stored `/versions` is made again at the next request
    /// (its lines must name the `/info` served now), unless `role` may not change the cache. A
    /// line that cannot be read is left out (Bundler then fetches that `/info` once more than
    /// needed).
    pub(crate) async fn note_correction(&self, gem: &str, document: &Document, role: Role) {
        let changed = self.remember_correction(gem, document).await;
        self.versions_changed(changed, role).await;
    }

    /// Remembers the `/versions` line of a gem a route takes, from the `/info` pmcache serves
    /// from the route (see [`filter::routed_line`]), as [`Self::note_correction`] does.
    pub(crate) async fn note_routed(&self, gem: &str, document: &Document, role: Role) {
        let changed = self.remember_routed(gem, document).await;
        self.versions_changed(changed, role).await;
    }

    /// Has the stored `/versions` made again at the next request when a line `changed`.
    async fn versions_changed(&self, changed: bool, role: Role) {
        if changed
            && role.may_populate()
            && let Err(error) = self.proxy.expire_rendering(ECOSYSTEM, "versions").await
        {
            tracing::warn!(%error, "the stored /versions could not be marked for a new rendering");
        }
    }

    /// Records what [`Self::note_routed`] is told: true when the line changed.
    async fn remember_routed(&self, gem: &str, document: &Document) -> bool {
        let policy = self.proxy.policy();
        let Some(digest) = document.digest(BODY) else {
            return self.corrections().remove(gem).is_some();
        };
        if self.already_noted(gem, &digest, &policy) {
            return false;
        }
        let body = match self.proxy.variant_bytes(document, BODY).await {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(gem, %error, "a routed /info is unreadable for its /versions line");
                return false;
            }
        };
        let versions: Vec<String> = compact::info_entries(&body)
            .into_iter()
            .map(|entry| entry.version)
            .collect();
        let line = filter::Correction {
            gem: gem.to_owned(),
            upstream_md5: None,
            line: filter::routed_line(gem, &versions, &compact::md5_hex(&body)),
        };
        self.note(
            gem,
            NotedCorrection {
                digest,
                line,
                until: None,
                policy,
            },
        )
    }

    /// Records what [`Self::note_correction`] is told: true when the line changed.
    async fn remember_correction(&self, gem: &str, document: &Document) -> bool {
        let policy = self.proxy.policy();
        let Some(digest) = document.digest(HIDDEN) else {
            return self.corrections().remove(gem).is_some();
        };
        if self.already_noted(gem, &digest, &policy) {
            return false;
        }
        let text = match self.proxy.variant_bytes(document, HIDDEN).await {
            Ok(text) => text,
            Err(error) => {
                tracing::warn!(gem, %error, "the /versions line of a filtered /info is unreadable");
                return false;
            }
        };
        let text = String::from_utf8_lossy(&text);
        let mut lines = text.lines();
        let (Some(line), Some(until), Some(upstream_md5)) =
            (lines.next(), lines.next(), lines.next())
        else {
            return false;
        };
        let until = until
            .parse::<u64>()
            .ok()
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        let line = filter::Correction {
            gem: gem.to_owned(),
            upstream_md5: Some(upstream_md5.to_owned()),
            line: line.to_owned(),
        };
        self.note(
            gem,
            NotedCorrection {
                digest,
                line,
                until,
                policy,
            },
        )
    }

    /// Whether the line noted for `gem` was made from the rendering record `digest` under
    /// `policy`: then there is nothing to read again.
    fn already_noted(
        &self,
        gem: &str,
        digest: &pmcache_proxy::Digest,
        policy: &Arc<pmcache_policy::Policy>,
    ) -> bool {
        self.corrections()
            .get(gem)
            .is_some_and(|known| known.digest == *digest && Arc::ptr_eq(&known.policy, policy))
    }

    /// Notes `correction` as `gem`'s line: true when `/versions` must be made again, because
    /// the line changed or the old one had expired (a `/versions` made since left it out).
    fn note(&self, gem: &str, correction: NotedCorrection) -> bool {
        let line = correction.line.clone();
        let now = SystemTime::now();
        let old = self.corrections().insert(gem.to_owned(), correction);
        old.is_none_or(|old| old.line != line || old.until.is_some_and(|until| until <= now))
    }

    fn corrections(&self) -> std::sync::MutexGuard<'_, HashMap<String, NotedCorrection>> {
        self.corrections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The `/versions` lines of the filtered `/info` renderings current now: made under the
    /// rules in force, hiding no version that has come of age since.
    pub(crate) fn current_corrections(&self) -> Vec<(filter::Correction, Option<SystemTime>)> {
        let policy = self.proxy.policy();
        let now = SystemTime::now();
        self.corrections()
            .values()
            .filter(|known| Arc::ptr_eq(&known.policy, &policy))
            .filter(|known| known.until.is_none_or(|until| now < until))
            .map(|known| (known.line.clone(), known.until))
            .collect()
    }
}
