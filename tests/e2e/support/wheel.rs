//! Pure-Python wheels built in memory: the package's files plus `METADATA`, `WHEEL` and a `RECORD`
//! with every file's hash (the binary distribution format spec), in a zip archive whose entries
//! are stored uncompressed with fixed timestamps, so the same input gives the same bytes.

use base64::Engine as _;
use bytes::Bytes;
use sha2::Digest as _;

/// The `WHEEL` file of a pure-Python, any-platform wheel.
const WHEEL_FILE: &str =
    "Wheel-Version: 1.0\nGenerator: pmcache-e2e 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n";

/// A built wheel and its core metadata (what PEP 658 serves next to it).
pub struct Wheel {
    pub bytes: Bytes,
    pub metadata: Bytes,
}

/// The wheel of `distribution` (the filename's escaped name, `demo_lib`) at `version`, holding
/// `files` (path, content) and `metadata` as its `METADATA`.
pub fn build(
    distribution: &str,
    version: &str,
    files: &[(String, Vec<u8>)],
    metadata: &str,
) -> Wheel {
    let dist_info = format!("{distribution}-{version}.dist-info");
    let mut entries: Vec<(String, Vec<u8>)> = files.to_vec();
    entries.push((
        format!("{dist_info}/METADATA"),
        metadata.as_bytes().to_vec(),
    ));
    entries.push((format!("{dist_info}/WHEEL"), WHEEL_FILE.as_bytes().to_vec()));
    let mut record = String::new();
    for (path, data) in &entries {
        record.push_str(&format!("{path},{},{}\n", record_digest(data), data.len()));
    }
    // RECORD lists itself without a hash.
    record.push_str(&format!("{dist_info}/RECORD,,\n"));
    entries.push((format!("{dist_info}/RECORD"), record.into_bytes()));
    Wheel {
        bytes: Bytes::from(zip_stored(&entries)),
        metadata: Bytes::from(metadata.to_owned()),
    }
}

/// `sha256=` and the urlsafe, unpadded base64 of the digest, as `RECORD` writes hashes.
fn record_digest(data: &[u8]) -> String {
    let digest = sha2::Sha256::digest(data);
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

/// Signatures and constants of the zip format (APPNOTE.TXT §4.3).
const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
/// Version 2.0: what a stored or deflated entry needs.
const VERSION_NEEDED: u16 = 20;
/// Made by Unix (high byte 3), spec version 2.0, so the external attributes are Unix modes.
const VERSION_MADE_BY: u16 = (3 << 8) | 20;
/// 1980-01-01 00:00:00 in MS-DOS form, the earliest a zip can say.
const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (1 << 5) | 1;
/// `-rw-r--r--`, in the high half of the external attributes.
const UNIX_MODE: u32 = 0o100_644 << 16;

/// A zip archive of `entries`, each stored (method 0). Sizes are far below the zip64 limits.
fn zip_stored(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut archive = Vec::new();
    let mut central = Vec::new();
    for (path, data) in entries {
        let offset = archive.len() as u32;
        let crc = crc32fast::hash(data);
        let size = data.len() as u32;
        let name = path.as_bytes();

        put32(&mut archive, LOCAL_HEADER);
        put16(&mut archive, VERSION_NEEDED);
        common_fields(&mut archive, crc, size, name.len());
        put16(&mut archive, 0); // extra field length
        archive.extend_from_slice(name);
        archive.extend_from_slice(data);

        put32(&mut central, CENTRAL_HEADER);
        put16(&mut central, VERSION_MADE_BY);
        put16(&mut central, VERSION_NEEDED);
        common_fields(&mut central, crc, size, name.len());
        put16(&mut central, 0); // extra field length
        put16(&mut central, 0); // comment length
        put16(&mut central, 0); // disk number
        put16(&mut central, 0); // internal attributes
        put32(&mut central, UNIX_MODE);
        put32(&mut central, offset);
        central.extend_from_slice(name);
    }
    let central_offset = archive.len() as u32;
    let central_size = central.len() as u32;
    archive.extend_from_slice(&central);
    let count = entries.len() as u16;
    put32(&mut archive, END_OF_CENTRAL_DIRECTORY);
    put16(&mut archive, 0); // this disk
    put16(&mut archive, 0); // disk with the central directory
    put16(&mut archive, count);
    put16(&mut archive, count);
    put32(&mut archive, central_size);
    put32(&mut archive, central_offset);
    put16(&mut archive, 0); // comment length
    archive
}

/// The fields local and central headers share, from the flags to the name length.
fn common_fields(out: &mut Vec<u8>, crc: u32, size: u32, name_length: usize) {
    put16(out, 0); // flags
    put16(out, 0); // method: stored
    put16(out, DOS_TIME);
    put16(out, DOS_DATE);
    put32(out, crc);
    put32(out, size); // compressed size
    put32(out, size); // uncompressed size
    put16(out, name_length as u16);
}

fn put16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}
