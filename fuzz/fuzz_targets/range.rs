//! `Range` headers against any blob size: a satisfiable range lies inside the blob and its
//! `Content-Range` arithmetic holds; the result matches RFC 9110's grammar read independently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmcache_proxy::fuzzing::{RangeRequest, parse_range};

fuzz_target!(|data: &[u8]| {
    let Some((size_bytes, header)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let wide = u64::from_le_bytes(*size_bytes);
    // Small sizes are where off-by-ones live; huge ones are where overflows live.
    for size in [wide, wide % 64] {
        let got = parse_range(Some(header), size);
        if let RangeRequest::Part { start, end } = got {
            assert!(
                start <= end && end < size,
                "{header:?} over {size}: {got:?}"
            );
            let length = end - start + 1;
            assert!(length <= size);
            let content_range = format!("bytes {start}-{end}/{size}");
            assert_eq!(reparse_content_range(&content_range), (start, end, size));
        }
        assert_eq!(got, reference(header, size), "{header:?} over {size}");
    }
    assert_eq!(parse_range(None, wide), RangeRequest::Whole);
});

fn reparse_content_range(text: &str) -> (u64, u64, u64) {
    let rest = text.strip_prefix("bytes ").expect("bytes unit");
    let (range, size) = rest.split_once('/').expect("a size");
    let (start, end) = range.split_once('-').expect("first-last");
    let number = |s: &str| s.parse::<u64>().expect("a number");
    (number(start), number(end), number(size))
}

/// RFC 9110 §14.1.2, one range only, tolerating whitespace around the parts as pmcache does.
fn reference(header: &str, size: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let number = |s: &str| {
        if digits(s) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    if first.is_empty() {
        return match number(last) {
            None => RangeRequest::Whole,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(suffix) => RangeRequest::Part {
                start: size - suffix.min(size),
                end: size - 1,
            },
        };
    }
    let Some(start) = number(first) else {
        return RangeRequest::Whole;
    };
    let end = match last {
        "" => u64::MAX,
        _ => match number(last) {
            Some(end) => end,
            None => return RangeRequest::Whole,
        },
    };
    if start > end {
        return RangeRequest::Whole;
    }
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part {
        start,
        end: end.min(size - 1),
    }
}
