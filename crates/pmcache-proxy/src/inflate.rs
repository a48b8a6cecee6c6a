//! Gzip decoding of upstream documents as they arrive, bounded in size and in expansion.
//!
//! Decoding while receiving (rather than after) lets the decoded bytes go through the body
//! budget like any other (into memory while it has room, to a temp file beyond it), so a gzip
//! bomb costs disk rather than memory, and is refused once it expands further than any real
//! index does.

use std::io::Write;

use bytes::Bytes;
use flate2::write::MultiGzDecoder;

/// The most a document may expand, decoded size over encoded size. Real indexes expand 19- to
/// 32-fold with gzip (the largest packuments measured: 21 MB for 720 KB, 25 MB for 1.1 MB); a
/// block of zeros expands about 1,000-fold.
pub(crate) const MAX_RATIO: u64 = 200;
/// Decoded bytes allowed beyond the ratio, so that a small, very regular document passes.
const RATIO_ALLOWANCE: u64 = 1 << 20;
/// Encoded bytes decoded at a time: what one step may expand to is bounded by this times the
/// format's own limit (about 1,000), whatever size the upstream's chunks are.
pub(crate) const STEP: usize = 4 << 10;
/// Decoded bytes of one step past which the decoding task yields (a real index's step decodes
/// to about 130 KiB at most).
pub(crate) const YIELD_AFTER: usize = 256 << 10;

/// Decodes one gzip body, chunk by chunk.
pub(crate) struct Inflater {
    decoder: MultiGzDecoder<Vec<u8>>,
    encoded: u64,
    decoded: u64,
    limit: u64,
}

/// Why a body could not be decoded.
#[derive(Debug)]
pub(crate) enum InflateError {
    /// It decoded to more than the size limit.
    TooLarge,
    /// It expanded more than [`MAX_RATIO`]-fold.
    Ratio,
    /// It is not valid gzip, or it ended before its trailer.
    Corrupt(std::io::Error),
}

impl Inflater {
    /// A decoder refusing more than `limit` decoded bytes.
    pub(crate) fn new(limit: u64) -> Inflater {
        Inflater {
            decoder: MultiGzDecoder::new(Vec::new()),
            encoded: 0,
            decoded: 0,
            limit,
        }
    }

    /// Decodes the next piece of the body (at most [`STEP`] bytes, so the output stays small)
    /// and returns what it decoded to.
    pub(crate) fn step(&mut self, encoded: &[u8]) -> Result<Bytes, InflateError> {
        debug_assert!(encoded.len() <= STEP);
        self.decoder
            .write_all(encoded)
            .map_err(InflateError::Corrupt)?;
        self.encoded += encoded.len() as u64;
        self.take_output()
    }

    /// Decodes what the decoder still holds, once the body has ended; an error when the gzip
    /// stream is incomplete.
    pub(crate) fn finish(mut self) -> Result<Bytes, InflateError> {
        self.decoder.try_finish().map_err(InflateError::Corrupt)?;
        self.take_output()
    }

    fn take_output(&mut self) -> Result<Bytes, InflateError> {
        let output = std::mem::take(self.decoder.get_mut());
        self.decoded += output.len() as u64;
        if self.decoded > self.limit {
            return Err(InflateError::TooLarge);
        }
        if self.decoded > self.encoded.saturating_mul(MAX_RATIO) + RATIO_ALLOWANCE {
            return Err(InflateError::Ratio);
        }
        Ok(Bytes::from(output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).expect("encode");
        encoder.finish().expect("encode")
    }

    fn inflate(encoded: &[u8], limit: u64) -> Result<Vec<u8>, InflateError> {
        let mut inflater = Inflater::new(limit);
        let mut out = Vec::new();
        for piece in encoded.chunks(STEP) {
            out.extend_from_slice(&inflater.step(piece)?);
        }
        out.extend_from_slice(&inflater.finish()?);
        Ok(out)
    }

    /// A JSON-like document of the regularity of a real packument.
    fn document(bytes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut n = 0u64;
        while out.len() < bytes {
            let line = format!(
                "\"1.{n}.0\":{{\"dist\":{{\"shasum\":\"{:016x}\",\"tarball\":\"https://registry.example/p/-/p-1.{n}.0.tgz\"}}}},",
                n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            );
            out.extend_from_slice(line.as_bytes());
            n += 1;
        }
        out
    }

    #[test]
    fn documents_decode_whole_in_steps() {
        let original = document(3 << 20);
        let decoded = inflate(&gzip(&original), 64 << 20).expect("decodes");
        assert_eq!(decoded, original);
        // Two gzip members one after the other are one body (RFC 1952).
        let mut two = gzip(b"first ");
        two.extend(gzip(b"second"));
        assert_eq!(inflate(&two, 100).expect("decodes"), b"first second");
    }

    #[test]
    fn bombs_are_refused_by_ratio_before_the_size_limit() {
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(matches!(inflate(&bomb, 1 << 30), Err(InflateError::Ratio)));
        assert!(matches!(
            inflate(&gzip(&document(2 << 20)), 1 << 20),
            Err(InflateError::TooLarge)
        ));
    }

    #[test]
    fn small_regular_documents_pass_the_ratio() {
        let zeros = vec![0u8; 512 << 10];
        assert_eq!(inflate(&gzip(&zeros), 1 << 20).expect("decodes"), zeros);
    }

    #[test]
    fn cut_or_invalid_gzip_is_refused() {
        let encoded = gzip(&document(1 << 20));
        let cut = &encoded[..encoded.len() - 100];
        assert!(matches!(
            inflate(cut, 64 << 20),
            Err(InflateError::Corrupt(_))
        ));
        assert!(matches!(
            inflate(b"not gzip at all", 100),
            Err(InflateError::Corrupt(_))
        ));
    }
}
