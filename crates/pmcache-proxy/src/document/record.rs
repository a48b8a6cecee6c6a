//! What the index stores for a document: its validators, its variants' blobs and origin
//! offsets, and how a rendering's blobs get there.

use std::collections::BTreeMap;
use std::io::Write;

use pmcache_store::{Digest, Hold, Store, Table};

use super::relay::RelayedBlobs;
use super::{Rendering, Variant};
use crate::advertised::{self, Advertised};
use crate::error::Result;
use crate::splice::{self, StoredOrigin};

/// Bodies smaller than this are not worth a gzip copy.
const GZIP_THRESHOLD: usize = 1024;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct DocumentRecord {
    pub(crate) url: String,
    pub(crate) fetched_at: u64,
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
    /// When the rendered variants last changed (unix seconds; 0 in records written before
    /// this was kept): the `Last-Modified` served when the upstream sent none.
    #[serde(default)]
    pub(crate) changed_at: u64,
    /// sha256 of the upstream body this was rendered from, and the pmcache version that
    /// rendered it: an unchanged body is not rendered again, even from an upstream that sends
    /// no validators.
    #[serde(default)]
    pub(crate) rendered_from: Option<(Digest, String)>,
    pub(crate) variants: BTreeMap<String, StoredVariant>,
    /// When the first version the policy's age rule hid from this rendering comes of age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hidden_until: Option<std::time::SystemTime>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredVariant {
    pub(crate) content_type: String,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) gzip: Option<StoredBlob>,
    /// The entity tag the frontend chose, quoted; None means pmcache's (the blob's sha256).
    #[serde(default)]
    pub(crate) etag: Option<String>,
    /// Where the client's origin stands in the body, for variants rendered with one.
    #[serde(default)]
    pub(crate) origin: Option<StoredOrigin>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredBlob {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

impl DocumentRecord {
    /// The origin each variant is stored with, by variant name.
    pub(super) fn origins(&self) -> BTreeMap<String, String> {
        self.variants
            .iter()
            .filter_map(|(name, variant)| {
                Some((name.clone(), variant.origin.as_ref()?.text.clone()))
            })
            .collect()
    }
}

impl Rendering {
    /// Variants whose origin only came from the requesting client take the origin their earlier
    /// rendering was stored with (see [`Variant::with_client_origin`](super::Variant::with_client_origin)).
    pub(super) fn keep_stored_origins(&mut self, stored: &BTreeMap<String, String>) {
        for variant in &mut self.variants {
            if !variant.origin_from_client {
                continue;
            }
            if let Some(origin) = stored.get(variant.name) {
                variant.origin = Some(origin.clone());
            }
        }
    }
}

/// Stores a rendering's blobs and sources; the holds keep the blobs until their record is
/// written.
pub(super) fn store_rendering(
    store: &Store,
    ecosystem: &str,
    rendering: Rendering,
) -> Result<(BTreeMap<String, StoredVariant>, Vec<Hold>)> {
    let mut holds = Vec::new();
    let variants = place_variants(rendering.variants, |bytes| {
        let committed = store.put_bytes(&bytes)?;
        let blob = StoredBlob {
            digest: committed.digest,
            size: committed.size,
        };
        holds.push(committed.hold);
        Ok(blob)
    })?;
    let records = advertised::records(ecosystem, rendering.sources);
    let records = advertised::with_earlier_versions(store, records)?;
    store.put_all(Table::Sources, &records)?;
    Ok((variants, holds))
}

/// A rendering's blobs kept in memory instead (a read-role request's, see `relay`), and the
/// sources it advertised.
pub(super) fn relay_rendering(
    rendering: Rendering,
) -> Result<(
    BTreeMap<String, StoredVariant>,
    RelayedBlobs,
    Vec<Advertised>,
)> {
    let mut blobs = RelayedBlobs::new();
    let variants = place_variants(rendering.variants, |bytes| {
        let blob = StoredBlob {
            digest: Digest::of(&bytes),
            size: bytes.len() as u64,
        };
        blobs.insert(blob.digest, bytes.into());
        Ok(blob)
    })?;
    Ok((variants, blobs, rendering.sources))
}

/// Lays out each variant as the index records it: its origin put in place (offsets kept as a
/// blob of their own), its identity body, and a gzip copy where worth it, each handed to `put`.
fn place_variants(
    variants: Vec<Variant>,
    mut put: impl FnMut(Vec<u8>) -> Result<StoredBlob>,
) -> Result<BTreeMap<String, StoredVariant>> {
    let mut placed_variants = BTreeMap::new();
    for variant in variants {
        let (body, origin) = match &variant.origin {
            Some(origin) => place_origin(&variant.body, origin, &mut put)?,
            None => (variant.body, None),
        };
        let gzip = match variant.compress && body.len() >= GZIP_THRESHOLD {
            true => Some(put(gzip(&body))?),
            false => None,
        };
        let identity = put(body)?;
        let stored = StoredVariant {
            content_type: variant.content_type.to_owned(),
            digest: identity.digest,
            size: identity.size,
            gzip,
            etag: variant.etag,
            origin,
        };
        placed_variants.insert(variant.name.to_owned(), stored);
    }
    Ok(placed_variants)
}

/// `body` with `origin` in place of the placeholder, and its offsets, put as a blob, when it
/// holds any.
fn place_origin(
    body: &[u8],
    origin: &str,
    put: &mut impl FnMut(Vec<u8>) -> Result<StoredBlob>,
) -> Result<(Vec<u8>, Option<StoredOrigin>)> {
    let (placed, offsets) = splice::place(body, origin);
    if offsets.is_empty() {
        return Ok((placed, None));
    }
    let blob = put(splice::encode_offsets(&offsets))?;
    let stored = StoredOrigin {
        text: origin.to_owned(),
        offsets: blob.digest,
    };
    Ok((placed, Some(stored)))
}

/// The stored gzip copy. The fastest level: a cold page's render is mostly spent compressing,
/// and index pages (long runs of similar links) lose little ratio at it.
pub(crate) fn gzip(body: &[u8]) -> Vec<u8> {
    let output = Vec::with_capacity(body.len() / 4);
    let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::fast());
    encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .expect("compressing into memory cannot fail")
}

/// The blobs a stored record refers to, for `verify` and garbage collection.
pub(crate) fn referenced(bytes: &[u8]) -> Vec<Digest> {
    serde_json::from_slice::<DocumentRecord>(bytes)
        .map(|record| blobs_of(&record))
        .unwrap_or_default()
}

pub(super) fn blobs_of(record: &DocumentRecord) -> Vec<Digest> {
    record
        .variants
        .values()
        .flat_map(|variant| {
            let gzip = variant.gzip.as_ref().map(|gzip| gzip.digest);
            let offsets = variant.origin.as_ref().map(|origin| origin.offsets);
            std::iter::once(variant.digest).chain(gzip).chain(offsets)
        })
        .collect()
}

/// Holds every blob `record` names (see [`Hold`]) for writing it again; None when one is gone.
pub(super) fn hold_blobs(store: &Store, record: &DocumentRecord) -> Option<Vec<Hold>> {
    let digests = blobs_of(record);
    let holds: Vec<Hold> = digests.iter().map(|digest| store.hold(*digest)).collect();
    // Checked under the holds: no deletion of these can be under way now.
    digests
        .iter()
        .all(|digest| store.blob_path(digest).is_some())
        .then_some(holds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Variant;

    fn rendering(variant: Variant) -> Rendering {
        Rendering {
            variants: vec![variant],
            sources: Vec::new(),
            hidden_until: None,
        }
    }

    #[test]
    fn a_client_origin_gives_way_to_the_stored_one_and_a_fixed_origin_does_not() {
        let stored = BTreeMap::from([("full".to_owned(), "http://fleet:8080".to_owned())]);
        let mut from_client = rendering(
            Variant::new("full", "application/json", Vec::new()).with_client_origin("http://stray"),
        );
        from_client.keep_stored_origins(&stored);
        assert_eq!(
            from_client.variants[0].origin.as_deref(),
            Some("http://fleet:8080")
        );

        let mut fixed = rendering(
            Variant::new("full", "application/json", Vec::new()).with_origin("https://public"),
        );
        fixed.keep_stored_origins(&stored);
        assert_eq!(fixed.variants[0].origin.as_deref(), Some("https://public"));

        let mut new_variant = rendering(
            Variant::new("abbreviated", "application/json", Vec::new())
                .with_client_origin("http://first"),
        );
        new_variant.keep_stored_origins(&stored);
        assert_eq!(
            new_variant.variants[0].origin.as_deref(),
            Some("http://first")
        );
    }
}
