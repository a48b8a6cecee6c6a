//! npm tarballs made in-process, as `npm pack` lays them out: a gzip'd ustar archive whose
//! entries live under `package/`, with a fixed owner and timestamp so the same files always give
//! the same bytes, and the digests a packument publishes for them (`integrity`, `shasum`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use base64::Engine as _;
use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use sha2::Digest as _;

use super::sha256_hex;

/// ustar's block size: headers and padded contents come in blocks of this many bytes.
const BLOCK: usize = 512;
/// `npm pack` stamps every entry with this instant (1985-10-26T08:15:00Z) for reproducible
/// tarballs; so do we.
const TAR_EPOCH: u64 = 499_162_500;
const ZEROS: [u8; BLOCK] = [0; BLOCK];

/// A packed tarball and what a registry says about it.
pub struct Packed {
    pub bytes: Bytes,
    /// `dist.integrity`: `sha512-<base64>`.
    pub integrity: String,
    /// `dist.shasum`: hex sha1.
    pub shasum: String,
    pub sha256: String,
    pub file_count: u64,
    pub unpacked_size: u64,
    /// sha256 of each file inside `package/`, by its path there.
    pub contents: BTreeMap<String, String>,
}

/// Packs `files` (paths relative to `package/`, in archive order) into a `.tgz`.
pub fn pack(files: &[(&str, Vec<u8>)]) -> Result<Packed> {
    let mut archive = Vec::new();
    for (path, data) in files {
        archive.extend_from_slice(&header(path, data.len())?);
        archive.extend_from_slice(data);
        let padding = data.len().next_multiple_of(BLOCK) - data.len();
        archive.extend_from_slice(&ZEROS[..padding]);
    }
    // Two zero blocks end a tar archive.
    archive.extend_from_slice(&ZEROS);
    archive.extend_from_slice(&ZEROS);
    let bytes = Bytes::from(gzip(&archive)?);
    Ok(Packed {
        integrity: format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&bytes))
        ),
        shasum: hex::encode(sha1::Sha1::digest(&bytes)),
        sha256: sha256_hex(&bytes),
        file_count: files.len() as u64,
        unpacked_size: files.iter().map(|(_, data)| data.len() as u64).sum(),
        contents: files
            .iter()
            .map(|(path, data)| ((*path).to_owned(), sha256_hex(data)))
            .collect(),
        bytes,
    })
}

/// The ustar header of the regular file `package/<path>` (at most 100 bytes: no prefix field
/// needed) of `size` bytes, mode 644, owned by 0:0.
fn header(path: &str, size: usize) -> Result<[u8; BLOCK]> {
    const PREFIX: &[u8] = b"package/";
    ensure!(
        PREFIX.len() + path.len() <= 100,
        "tar entry name package/{path} is longer than 100 bytes"
    );
    let mut block = [0u8; BLOCK];
    block[..PREFIX.len()].copy_from_slice(PREFIX);
    block[PREFIX.len()..PREFIX.len() + path.len()].copy_from_slice(path.as_bytes());
    octal(&mut block[100..108], 0o644);
    octal(&mut block[108..116], 0);
    octal(&mut block[116..124], 0);
    octal(&mut block[124..136], size as u64);
    octal(&mut block[136..148], TAR_EPOCH);
    block[156] = b'0';
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    // The checksum is the byte sum of the header with its own field read as spaces; past the
    // version field every byte is zero (no owner names, device numbers or prefix).
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block[..265].iter().map(|&byte| u32::from(byte)).sum();
    octal(&mut block[148..155], u64::from(sum));
    Ok(block)
}

/// Writes `value` in octal, zero-padded, into all but the last byte of `field`, which stays NUL.
fn octal(field: &mut [u8], mut value: u64) {
    let digits = field.len() - 1;
    for slot in field[..digits].iter_mut().rev() {
        *slot = b'0' + (value & 7) as u8;
        value >>= 3;
    }
    field[digits] = 0;
}

/// gzip with no file name and a zero timestamp, as `npm pack` writes it, at the fastest level.
/// Each thread reuses one compressor: a new one zeroes hundreds of kilobytes of tables, which
/// was most of the cost of packing thousands of small tarballs.
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    thread_local! {
        static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    }
    // RFC 1952: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    DEFLATE.with_borrow_mut(|deflate| -> Result<()> {
        deflate.reset();
        loop {
            out.reserve(data.len() / 2 + 1024);
            let consumed = usize::try_from(deflate.total_in())?;
            let status =
                deflate.compress_vec(&data[consumed..], &mut out, FlushCompress::Finish)?;
            if status == Status::StreamEnd {
                return Ok(());
            }
        }
    })?;
    let mut crc = Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&u32::try_from(data.len())?.to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archive reads back with the standard layout: names, sizes, contents and checksums.
    #[test]
    fn packs_a_readable_ustar() -> Result<()> {
        let files = [
            ("package.json", b"{\"name\":\"x\"}\n".to_vec()),
            ("index.js", vec![b'a'; 700]),
        ];
        let packed = pack(&files)?;
        let archive = crate::support::gunzip(&packed.bytes)?;
        ensure!(archive.len() % BLOCK == 0, "archive not block-aligned");
        let mut offset = 0;
        for (path, data) in &files {
            let block = &archive[offset..offset + BLOCK];
            let name_end = block.iter().position(|&b| b == 0).unwrap_or(100);
            ensure!(&block[..name_end] == format!("package/{path}").as_bytes());
            let size = usize::from_str_radix(std::str::from_utf8(&block[124..135])?, 8)?;
            ensure!(size == data.len(), "size {size} for {path}");
            let stored = u32::from_str_radix(std::str::from_utf8(&block[148..154])?, 8)?;
            let mut blank = block.to_vec();
            blank[148..156].copy_from_slice(b"        ");
            let sum: u32 = blank.iter().map(|&b| u32::from(b)).sum();
            ensure!(stored == sum, "checksum {stored} != {sum}");
            offset += BLOCK;
            ensure!(&archive[offset..offset + size] == data.as_slice());
            offset += size.next_multiple_of(BLOCK);
        }
        ensure!(archive[offset..].iter().all(|&b| b == 0) && archive.len() - offset == 2 * BLOCK);
        ensure!(packed.file_count == 2 && packed.unpacked_size == 713);
        ensure!(
            pack(&files)?.bytes == packed.bytes,
            "packing is not deterministic"
        );
        Ok(())
    }
}
