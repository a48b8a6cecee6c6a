//! Properties of `Range` handling, over any blob size: a satisfiable range lies inside the blob,
//! the served bytes are exactly the slice that `Content-Range` names, and a malformed or
//! unsatisfiable header is answered without a panic.

use std::io::Write as _;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use http_body_util::BodyExt as _;
use proptest::prelude::*;

use crate::serve::{BlobAnswer, ClientRequest, RangeRequest, Ranges, blob_response, parse_range};

/// Sizes where off-by-ones live (0, 1, small) and where overflows live (near `u64::MAX`).
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..16u64,
        0..100_000u64,
        (u64::MAX - 16)..=u64::MAX,
        any::<u64>()
    ]
}

/// Positions near the size as often as anywhere else.
fn position(size: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        0..=size.saturating_add(2),
        size.saturating_sub(3)..=size.saturating_add(3),
        any::<u64>(),
    ]
}

fn assert_inside(range: RangeRequest, size: u64) -> Option<(u64, u64)> {
    match range {
        RangeRequest::Part { start, end } => {
            assert!(start <= end && end < size, "{range:?} over {size}");
            Some((start, end))
        }
        _ => None,
    }
}

proptest! {
    #[test]
    fn a_first_last_range_is_clamped_or_unsatisfiable(
        (size, first, last) in size().prop_flat_map(|s| (Just(s), position(s), position(s)))
    ) {
        let got = parse_range(Some(&format!("bytes={first}-{last}")), size);
        let expected = if first > last {
            RangeRequest::Whole
        } else if first >= size {
            RangeRequest::Unsatisfiable
        } else {
            RangeRequest::Part { start: first, end: last.min(size - 1) }
        };
        prop_assert_eq!(got, expected);
        assert_inside(got, size);
    }

    #[test]
    fn an_open_range_runs_to_the_end(
        (size, first) in size().prop_flat_map(|s| (Just(s), position(s)))
    ) {
        let got = parse_range(Some(&format!("bytes={first}-")), size);
        let expected = if first >= size {
            RangeRequest::Unsatisfiable
        } else {
            RangeRequest::Part { start: first, end: size - 1 }
        };
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn a_suffix_range_is_the_last_bytes(
        (size, suffix) in size().prop_flat_map(|s| (Just(s), position(s)))
    ) {
        let got = parse_range(Some(&format!("bytes=-{suffix}")), size);
        let expected = if suffix == 0 || size == 0 {
            RangeRequest::Unsatisfiable
        } else {
            RangeRequest::Part { start: size - suffix.min(size), end: size - 1 }
        };
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn any_header_is_answered_without_a_panic(
        header in prop_oneof![
            ".*",
            "bytes=[0-9+ ,-]{0,24}",
            "[bB][yY][tT][eE][sS] ?= ?-?[0-9]{0,22}-?[0-9]{0,22}",
        ],
        size in size(),
    ) {
        let got = parse_range(Some(&header), size);
        assert_inside(got, size);
        let digits_and_dash = header
            .trim()
            .strip_prefix("bytes=")
            .is_some_and(|spec| spec.trim().bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b' '));
        if !digits_and_dash {
            // Another unit, a list, a sign, a letter: the header is ignored, never misread.
            prop_assert_eq!(got, RangeRequest::Whole, "{:?}", header);
        }
    }
}

/// Serves a blob of `size` bytes for one `Range` header, as the artifact path does.
fn serve(content: &[u8], range: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut file = tempfile::tempfile().expect("a temp file");
    file.write_all(content).expect("written");
    let answer = BlobAnswer {
        size: content.len() as u64,
        etag: "\"e\"".to_owned(),
        last_modified: None,
        ranges: Ranges::Honour,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::RANGE,
        HeaderValue::from_str(range).expect("a header value"),
    );
    let request = ClientRequest {
        head: false,
        headers: &headers,
        caller: &crate::role::ANONYMOUS_POPULATE,
    };
    let response = blob_response(file, &answer, request, HeaderMap::new()).expect("a response");
    let (parts, body) = response.into_parts();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let bytes = runtime
        .block_on(body.collect())
        .expect("the body reads")
        .to_bytes();
    (parts.status, parts.headers, bytes.to_vec())
}

proptest! {
    // Each case writes and reads a file: fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn served_bytes_are_the_slice_content_range_names(
        (content, first, last) in proptest::collection::vec(any::<u8>(), 0..300)
            .prop_flat_map(|c| { let n = c.len() as u64; (Just(c), position(n), position(n)) }),
        form in 0..3u8,
    ) {
        let size = content.len() as u64;
        let header = match form {
            0 => format!("bytes={first}-{last}"),
            1 => format!("bytes={first}-"),
            _ => format!("bytes=-{last}"),
        };
        let (status, headers, body) = serve(&content, &header);
        let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
        let length: u64 = text(header::CONTENT_LENGTH).map_or(0, |v| v.parse().expect("a number"));
        match parse_range(Some(&header), size) {
            RangeRequest::Part { start, end } => {
                prop_assert_eq!(status, StatusCode::PARTIAL_CONTENT);
                prop_assert_eq!(text(header::CONTENT_RANGE), Some(format!("bytes {start}-{end}/{size}")));
                prop_assert_eq!(length, end - start + 1);
                prop_assert_eq!(&body[..], &content[start as usize..=end as usize]);
            }
            RangeRequest::Unsatisfiable => {
                prop_assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
                prop_assert_eq!(text(header::CONTENT_RANGE), Some(format!("bytes */{size}")));
                prop_assert!(body.is_empty());
            }
            RangeRequest::Whole => {
                prop_assert_eq!(status, StatusCode::OK);
                prop_assert_eq!(length, size);
                prop_assert_eq!(body, content);
            }
        }
    }
}
