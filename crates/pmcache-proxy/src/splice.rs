//! Documents whose absolute URLs name the origin a client reached pmcache at (npm tarballs,
//! Composer dists). A frontend renders them once per upstream version with
//! [`ORIGIN_PLACEHOLDER`] where the origin goes; they are stored with one origin in those places
//! (the configured `public_url`, or the origin of the client whose request fetched them) beside
//! the offsets where it stands. That origin gets the stored bytes (and the stored gzip copy) as
//! they are; any other gets the stored bytes with its own origin spliced in while they stream
//! out. So one upstream fetch and one stored copy serve every `Host`, and a `Host` never seen
//! before costs neither an upstream request nor a byte of the store.
//!
//! Gzip cannot be spliced: another origin gets the identity body at first, and a gzip copy
//! derived for it once it asks again, kept in memory within fixed bounds (count and bytes,
//! least recently used out first), so that made-up `Host` values cost at most one derivation
//! at a time and never memory beyond the bounds.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream;
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use pmcache_store::{Access, Digest};

use crate::Proxy;
use crate::body::Body;
use crate::document::{self, Document, Serving, StoredVariant};
use crate::error::{Error, Result};
use crate::metrics::Answer;
use crate::serve::{self, BlobAnswer, ClientRequest, Ranges};

/// Where a rendering names the client's origin (`scheme://host[:port]`, no trailing slash).
/// `.invalid` is reserved (RFC 6761): no upstream document can hold it by chance.
pub const ORIGIN_PLACEHOLDER: &str = "http://pmcache-origin.invalid";

/// Stored bytes read, spliced and sent per frame.
const CHUNK: u64 = 256 * 1024;

/// Where the origin stands in a stored body.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredOrigin {
    /// The origin the stored body names.
    pub(crate) text: String,
    /// A blob of the offsets where `text` stands, ascending, as little-endian u64s: a 30 MB
    /// packument has thousands, too many for the index record read on every request.
    pub(crate) offsets: Digest,
}

/// `body` with every [`ORIGIN_PLACEHOLDER`] replaced by `origin`, and the offsets where
/// `origin` stands in the result.
pub(crate) fn place(body: &[u8], origin: &str) -> (Vec<u8>, Vec<u64>) {
    let grown = origin.len().saturating_sub(ORIGIN_PLACEHOLDER.len());
    let found: Vec<usize> = memchr::memmem::find_iter(body, ORIGIN_PLACEHOLDER).collect();
    let mut out = Vec::with_capacity(body.len() + grown * found.len());
    let mut offsets = Vec::with_capacity(found.len());
    let mut rest = 0;
    for at in found {
        out.extend_from_slice(&body[rest..at]);
        offsets.push(out.len() as u64);
        out.extend_from_slice(origin.as_bytes());
        rest = at + ORIGIN_PLACEHOLDER.len();
    }
    out.extend_from_slice(&body[rest..]);
    (out, offsets)
}

/// The offsets blob's bytes.
pub(crate) fn encode_offsets(offsets: &[u64]) -> Vec<u8> {
    offsets
        .iter()
        .flat_map(|offset| offset.to_le_bytes())
        .collect()
}

/// How a stored body becomes the body for one origin.
#[derive(Clone)]
pub(crate) struct Splice {
    /// Where the stored origin stands, ascending, never overlapping, within the stored body.
    offsets: Arc<[u64]>,
    /// The stored origin's length.
    stored: u64,
    /// The origin to put there.
    origin: Bytes,
}

impl Splice {
    /// Reads an offsets blob, checked against the stored body it belongs to: offsets that would
    /// cut outside it or overlap are a corrupt blob, never a panic.
    pub(crate) fn new(
        encoded: &[u8],
        placed: &StoredOrigin,
        size: u64,
        origin: &str,
    ) -> Result<Splice> {
        let corrupt = || Error::Internal(format!("offsets blob {} is corrupt", placed.offsets));
        if !encoded.len().is_multiple_of(8) {
            return Err(corrupt());
        }
        let stored = placed.text.len() as u64;
        let mut offsets = Vec::with_capacity(encoded.len() / 8);
        let mut free_from = 0u64;
        for word in encoded.chunks_exact(8) {
            let offset = u64::from_le_bytes(word.try_into().map_err(|_| corrupt())?);
            let end = offset.checked_add(stored).ok_or_else(corrupt)?;
            if offset < free_from || end > size {
                return Err(corrupt());
            }
            offsets.push(offset);
            free_from = end;
        }
        Ok(Splice {
            offsets: offsets.into(),
            stored,
            origin: Bytes::copy_from_slice(origin.as_bytes()),
        })
    }

    /// The spliced length of a stored body of `size` bytes.
    pub(crate) fn size(&self, size: u64) -> u64 {
        let count = self.offsets.len() as u64;
        size - count * self.stored + count * self.origin.len() as u64
    }

    /// A whole stored body, spliced.
    pub(crate) fn apply(&self, stored: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size(stored.len() as u64) as usize);
        self.splice_into(stored, 0, 0, &mut out);
        out
    }

    /// Appends `data`, the stored bytes from `start` on, with the origin spliced in; `index` is
    /// the first occurrence at or after `start`, and none straddles the end of `data`. Returns
    /// the first occurrence after `data`.
    fn splice_into(&self, data: &[u8], start: u64, mut index: usize, out: &mut Vec<u8>) -> usize {
        let end = start + data.len() as u64;
        let mut copied = 0;
        while let Some(&offset) = self.offsets.get(index) {
            if offset + self.stored > end {
                break;
            }
            let local = (offset - start) as usize;
            out.extend_from_slice(&data[copied..local]);
            out.extend_from_slice(&self.origin);
            copied = local + self.stored as usize;
            index += 1;
        }
        out.extend_from_slice(&data[copied..]);
        index
    }

    /// Where the frame of stored bytes that starts at `start` ends: [`CHUNK`] later, or at the
    /// end of an occurrence the chunk would cut.
    fn chunk_end(&self, start: u64, size: u64) -> u64 {
        let end = (start + CHUNK).min(size);
        let before = self.offsets.partition_point(|&offset| offset < end);
        match before
            .checked_sub(1)
            .map(|last| self.offsets[last] + self.stored)
        {
            Some(occurrence_end) if occurrence_end > end => occurrence_end,
            _ => end,
        }
    }
}

/// Streams the stored body in `file` (`size` bytes), spliced: each frame is one positional read
/// and one copy, on the blocking pool.
pub(crate) fn body(file: File, size: u64, splice: Splice) -> Body {
    let file = Arc::new(file);
    let frames = stream::try_unfold((0u64, 0usize), move |(start, index)| {
        let file = Arc::clone(&file);
        let splice = splice.clone();
        async move {
            if start >= size {
                return Ok(None);
            }
            let end = splice.chunk_end(start, size);
            let (frame, index) = tokio::task::spawn_blocking(move || {
                let mut stored = vec![0u8; (end - start) as usize];
                file.read_exact_at(&mut stored, start)?;
                let mut out = Vec::with_capacity(stored.len() + 4096);
                let index = splice.splice_into(&stored, start, index, &mut out);
                Ok::<_, io::Error>((Bytes::from(out), index))
            })
            .await
            .map_err(io::Error::other)??;
            Ok(Some((Frame::data(frame), (end, index))))
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

impl Proxy {
    /// Answers like [`Proxy::respond`] for a variant rendered [`Variant::with_origin`](crate::Variant::with_origin), to a
    /// client that reached pmcache at `origin` (`scheme://host[:port]`): the stored bytes when
    /// `origin` is the stored one, else those bytes with `origin` spliced in (ranges ignored;
    /// gzip once a copy for `origin` is derived). Entity tags name the origin, so a client's
    /// `If-None-Match` only matches what its own origin was given.
    pub async fn respond_for_origin(
        &self,
        document: &Document,
        variant: &str,
        client: ClientRequest<'_>,
        serving: Serving,
        origin: &str,
    ) -> Result<Response<Body>> {
        let stored = document.stored(variant)?;
        let Some(placed) = &stored.origin else {
            return self
                .respond_legacy(document, variant, client, serving, origin)
                .await;
        };
        if placed.text == origin {
            return self.respond(document, variant, client, serving);
        }
        // Derived copies are of stored documents only: a relayed one is gone after its TTL.
        let wants_gzip = stored.gzip.is_some() && client.accepts_gzip() && !document.is_relayed();
        let derived = wants_gzip
            .then(|| self.inner.derived.get(&stored.digest, origin.as_bytes()))
            .flatten();
        let mut answer = origin_answer(document, stored, origin, derived.is_some());
        let headers = document::document_headers(
            document,
            &stored.content_type,
            derived.is_some(),
            serving.vary,
        );
        // Composer revalidates every p2 file it has: answer those 304s without reading.
        if serve::not_modified(&answer, client) {
            let nothing = serve::Content::Bytes(Bytes::new());
            return serve::blob_response(nothing, &answer, client, headers);
        }
        let content = match derived {
            Some(gzip) => {
                answer.size = gzip.len() as u64;
                serve::Content::Bytes(gzip)
            }
            None => {
                if wants_gzip {
                    self.derive_gzip(stored, origin);
                }
                let splice = self.splice_for(document, stored, placed, origin, client)?;
                answer.size = splice.size(stored.size);
                match self.document_content(document, &stored.digest, client)? {
                    serve::Content::File(file) => {
                        serve::Content::Stream(body(file, stored.size, splice))
                    }
                    serve::Content::Bytes(bytes) => {
                        serve::Content::Bytes(splice.apply(&bytes).into())
                    }
                    stream @ serve::Content::Stream(_) => stream,
                }
            }
        };
        let response = serve::blob_response(content, &answer, client, headers)?;
        Ok(self.watch_abandon(response, Answer::document))
    }

    /// The bytes of a variant rendered [`Variant::with_origin`](crate::Variant::with_origin), naming `origin`: for the rare
    /// routes that answer with a part of a document.
    pub async fn variant_bytes_for_origin(
        &self,
        document: &Document,
        variant: &str,
        origin: &str,
    ) -> Result<Bytes> {
        let stored = document.stored(variant)?;
        let bytes = self.variant_bytes(document, variant).await?;
        match &stored.origin {
            Some(placed) if placed.text == origin => Ok(bytes),
            Some(placed) => {
                let encoded = self.variant_offsets(document, placed, Access::Quiet)?;
                Ok(Splice::new(&encoded, placed, stored.size, origin)?
                    .apply(&bytes)
                    .into())
            }
            None => Ok(place(&bytes, origin).0.into()),
        }
    }

    /// Records written before offsets were kept hold the placeholder itself: substituted as a
    /// whole, in memory, until the document is rendered again.
    async fn respond_legacy(
        &self,
        document: &Document,
        variant: &str,
        client: ClientRequest<'_>,
        serving: Serving,
        origin: &str,
    ) -> Result<Response<Body>> {
        let stored = document.stored(variant)?;
        let headers =
            document::document_headers(document, &stored.content_type, false, serving.vary);
        let mut answer = origin_answer(document, stored, origin, false);
        if serve::not_modified(&answer, client) {
            let nothing = serve::Content::Bytes(Bytes::new());
            return serve::blob_response(nothing, &answer, client, headers);
        }
        let body = Bytes::from(place(&self.variant_bytes(document, variant).await?, origin).0);
        answer.size = body.len() as u64;
        let response = serve::blob_response(serve::Content::Bytes(body), &answer, client, headers)?;
        Ok(self.watch_abandon(response, Answer::document))
    }

    /// The splice of `stored` for `origin`, its offsets read from their blob (one small read,
    /// from the page cache as a rule).
    fn splice_for(
        &self,
        document: &Document,
        stored: &StoredVariant,
        placed: &StoredOrigin,
        origin: &str,
        client: ClientRequest<'_>,
    ) -> Result<Splice> {
        let encoded = self.variant_offsets(document, placed, client.access())?;
        Splice::new(&encoded, placed, stored.size, origin)
    }

    /// The encoded offsets of a variant's origin.
    fn variant_offsets(
        &self,
        document: &Document,
        placed: &StoredOrigin,
        access: Access,
    ) -> Result<Bytes> {
        match document.relayed_blob(&placed.offsets) {
            Some(bytes) => Ok(bytes),
            None => self.read_offsets(placed, access),
        }
    }

    /// The encoded offsets of a stored variant's origin.
    fn read_offsets(&self, placed: &StoredOrigin, access: Access) -> Result<Bytes> {
        let digest = &placed.offsets;
        let mut file = document::open_blob(&self.inner.store, digest, access)?;
        let mut encoded = Vec::new();
        file.read_to_end(&mut encoded)
            .map_err(|e| Error::failed(format!("reading offsets blob {digest}"), e))?;
        Ok(encoded.into())
    }

    /// Derives, in the background on a render thread, the gzip copy of `stored` for `origin`,
    /// if [`Derived::claim`] allows it now.
    fn derive_gzip(&self, stored: &StoredVariant, origin: &str) {
        let derived = &self.inner.derived;
        if !derived.claim(&stored.digest, origin.as_bytes()) {
            return;
        }
        let (proxy, stored, origin) = (self.clone(), stored.clone(), origin.to_owned());
        tokio::spawn(async move {
            let identity = stored.digest;
            let source = proxy.clone();
            let origin_text = origin.clone();
            let pool = proxy.inner.render_pools.for_size(stored.size);
            let outcome = pool
                .run(move || {
                    let placed = stored.origin.as_ref().ok_or_else(|| {
                        Error::Internal("derived copy of a variant without origin".to_owned())
                    })?;
                    let quiet = Access::Quiet;
                    let encoded = source.read_offsets(placed, quiet)?;
                    let splice = Splice::new(&encoded, placed, stored.size, &origin_text)?;
                    let digest = &stored.digest;
                    let mut file = document::open_blob(&source.inner.store, digest, quiet)?;
                    let mut bytes = Vec::with_capacity(stored.size as usize);
                    file.read_to_end(&mut bytes)
                        .map_err(|e| Error::failed("reading document blob", e))?;
                    Ok(Bytes::from(document::gzip(&splice.apply(&bytes))))
                })
                .await;
            if let Err(error) = &outcome {
                tracing::warn!(%error, "deriving a gzip copy failed");
            }
            let origin = Bytes::from(origin);
            proxy.inner.derived.finish(identity, origin, outcome.ok());
        });
    }
}

/// The answer to a client of `origin` (its size set once the body is known): the entity tag
/// names the origin, and ranges are not served (offsets shift with the origin's length).
fn origin_answer(
    document: &Document,
    stored: &StoredVariant,
    origin: &str,
    gzip: bool,
) -> BlobAnswer {
    BlobAnswer {
        size: 0,
        etag: origin_etag(stored, origin, gzip),
        last_modified: Some(document::last_modified(&document.record)),
        ranges: Ranges::Ignore,
    }
}

/// The entity tag of `stored` spliced for `origin`: the stored one's, with the origin's hash.
fn origin_etag(stored: &StoredVariant, origin: &str, gzip: bool) -> String {
    let base = match &stored.etag {
        Some(etag) => etag.trim_matches('"').to_owned(),
        None => stored.digest.to_hex(),
    };
    let origin = Digest::of(origin.as_bytes()).to_hex();
    let coding = if gzip { "-gzip" } else { "" };
    format!("\"{base}-{}{coding}\"", &origin[..12])
}

/// Gzip copies of spliced bodies, by stored body and origin.
#[derive(Default)]
pub(crate) struct Derived {
    state: Mutex<DerivedState>,
    /// A derivation is under way: one at a time, whatever the number of origins.
    deriving: AtomicBool,
}

#[derive(Default)]
struct DerivedState {
    /// Least recently used first.
    copies: VecDeque<DerivedCopy>,
    bytes: usize,
    /// Origins that asked for a gzip body they did not get, most recent last.
    asked: VecDeque<(Digest, Bytes)>,
}

struct DerivedCopy {
    identity: Digest,
    origin: Bytes,
    gzip: Bytes,
}

/// How many derived copies are kept at most.
const COPIES: usize = 64;
/// How many bytes of derived copies are kept at most; a larger copy is not kept.
const BYTES: usize = 64 << 20;
/// How many unanswered gzip requests are remembered.
const ASKED: usize = 1024;

impl Derived {
    /// The gzip copy of `identity` spliced for `origin`, if one is kept.
    pub(crate) fn get(&self, identity: &Digest, origin: &[u8]) -> Option<Bytes> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let at = state
            .copies
            .iter()
            .position(|copy| copy.identity == *identity && copy.origin == origin)?;
        let copy = state.copies.remove(at)?;
        let gzip = copy.gzip.clone();
        state.copies.push_back(copy);
        Some(gzip)
    }

    /// True when a gzip copy for `origin` should be derived now: it asked before, and no
    /// derivation is under way (the caller then calls [`Derived::finish`]). Remembers the ask
    /// otherwise.
    pub(crate) fn claim(&self, identity: &Digest, origin: &[u8]) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let asked_before = state
            .asked
            .iter()
            .position(|(digest, asked)| digest == identity && asked == origin);
        match asked_before {
            Some(at) if !self.deriving.swap(true, Ordering::AcqRel) => {
                state.asked.remove(at);
                true
            }
            Some(_) => false,
            None => {
                if state.asked.len() >= ASKED {
                    state.asked.pop_front();
                }
                state
                    .asked
                    .push_back((*identity, Bytes::copy_from_slice(origin)));
                false
            }
        }
    }

    /// Ends the derivation [`Derived::claim`] allowed, keeping its copy if it fits.
    pub(crate) fn finish(&self, identity: Digest, origin: Bytes, gzip: Option<Bytes>) {
        if let Some(gzip) = gzip.filter(|gzip| gzip.len() <= BYTES) {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.bytes += gzip.len();
            state.copies.push_back(DerivedCopy {
                identity,
                origin,
                gzip,
            });
            while state.copies.len() > COPIES || state.bytes > BYTES {
                let Some(evicted) = state.copies.pop_front() else {
                    break;
                };
                state.bytes -= evicted.gzip.len();
            }
        }
        self.deriving.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(text: &str) -> StoredOrigin {
        StoredOrigin {
            text: text.to_owned(),
            offsets: Digest::of(b"offsets"),
        }
    }

    fn template(parts: usize, gap: usize) -> Vec<u8> {
        let mut body = Vec::new();
        for index in 0..parts {
            body.extend(std::iter::repeat_n(b'a' + (index % 26) as u8, gap));
            body.extend_from_slice(ORIGIN_PLACEHOLDER.as_bytes());
            body.extend_from_slice(b"/npm/x.tgz");
        }
        body.extend_from_slice(b"end");
        body
    }

    #[test]
    fn placing_then_splicing_equals_placing_the_other_origin() {
        let body = template(50, 7_000);
        let (stored, offsets) = place(&body, "http://stored:1");
        assert_eq!(offsets.len(), 50);
        let encoded = encode_offsets(&offsets);
        for origin in [
            "https://a-much-longer-origin.example:8443",
            "http://h",
            "http://stored:1",
        ] {
            let splice = Splice::new(
                &encoded,
                &placed("http://stored:1"),
                stored.len() as u64,
                origin,
            )
            .unwrap();
            let expected = place(&body, origin).0;
            assert_eq!(splice.apply(&stored), expected);
            assert_eq!(splice.size(stored.len() as u64), expected.len() as u64);
            // Chunk by chunk, as the body streams it, never cutting an occurrence.
            let (mut start, mut index, mut out) = (0, 0, Vec::new());
            while start < stored.len() as u64 {
                let end = splice.chunk_end(start, stored.len() as u64);
                let data = &stored[start as usize..end as usize];
                index = splice.splice_into(data, start, index, &mut out);
                start = end;
            }
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn corrupt_offsets_are_refused() {
        let text = placed("http://s");
        assert!(Splice::new(&[0; 7], &text, 100, "http://o").is_err());
        assert!(Splice::new(&encode_offsets(&[95]), &text, 100, "http://o").is_err());
        assert!(Splice::new(&encode_offsets(&[10, 12]), &text, 100, "http://o").is_err());
        assert!(Splice::new(&encode_offsets(&[u64::MAX]), &text, 100, "http://o").is_err());
        assert!(Splice::new(&encode_offsets(&[0, 8, 92]), &text, 100, "http://o").is_ok());
    }

    #[test]
    fn derived_copies_come_on_the_second_ask_and_stay_bounded() {
        let derived = Derived::default();
        let identity = Digest::of(b"doc");
        assert!(!derived.claim(&identity, b"http://a"));
        assert!(derived.claim(&identity, b"http://a"));
        // One derivation at a time.
        assert!(!derived.claim(&identity, b"http://b"));
        assert!(!derived.claim(&identity, b"http://b"));
        derived.finish(
            identity,
            Bytes::from_static(b"http://a"),
            Some(Bytes::from_static(b"gz")),
        );
        assert_eq!(
            derived.get(&identity, b"http://a").as_deref(),
            Some(&b"gz"[..])
        );
        assert_eq!(derived.get(&identity, b"http://b"), None);
        for index in 0..COPIES + 5 {
            let origin = Bytes::from(format!("http://o{index}"));
            assert!(!derived.claim(&identity, &origin));
            assert!(derived.claim(&identity, &origin));
            derived.finish(identity, origin, Some(Bytes::from_static(b"gz")));
        }
        assert_eq!(derived.state.lock().unwrap().copies.len(), COPIES);
        assert_eq!(derived.get(&identity, b"http://a"), None);
    }
}
