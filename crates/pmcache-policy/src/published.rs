//! Publish times as registries write them: RFC 3339 date-times with any offset.

use std::time::{Duration, SystemTime};

/// An RFC 3339 date-time (`T` or a space between date and time, fractions of a second allowed)
/// with `Z` or a `±HH:MM` offset (npm's `time`, PEP 700 `upload-time`, Packagist's `time`,
/// RubyGems' `created_at`); none at all reads as UTC, as Composer reads a `time` in a
/// package's metadata. None for anything else, and for times before 1970: a time that cannot
/// be read is no known publish time (`unknown_release_time` decides).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (local, offset) = split_offset(text)?;
    // humantime reads the date and time, and only UTC: the offset is applied here.
    let local = humantime::parse_rfc3339_weak(local).ok()?;
    if offset >= 0 {
        local.checked_sub(Duration::from_secs(offset.unsigned_abs()))
    } else {
        local.checked_add(Duration::from_secs(offset.unsigned_abs()))
    }
}

/// The date-time without its offset, and the offset east of UTC in seconds.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    // `YYYY-MM-DDTHH:MM:SS` comes first; an offset can only follow it.
    const DATE_TIME: usize = "2018-02-14T00:28:07".len();
    if text.len() < DATE_TIME || !text.is_char_boundary(DATE_TIME) {
        return None;
    }
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return Some((local, 0));
    }
    let Some(start) = text
        .len()
        .checked_sub(6)
        .filter(|start| *start >= DATE_TIME)
    else {
        return Some((text, 0));
    };
    let (local, offset) = text.split_at_checked(start)?;
    let [sign, h1, h0, b':', m1, m0] = *offset.as_bytes() else {
        // No `±HH:MM` at the end: a fraction of a second, or nothing to read.
        return match offset.starts_with(['+', '-']) {
            true => None,
            false => Some((text, 0)),
        };
    };
    let sign = match sign {
        b'+' => 1,
        b'-' => -1,
        _ => return Some((text, 0)),
    };
    let (hours, minutes) = (two_digits(h1, h0)?, two_digits(m1, m0)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((local, sign * (hours * 3600 + minutes * 60)))
}

fn two_digits(tens: u8, ones: u8) -> Option<i64> {
    match (tens, ones) {
        (b'0'..=b'9', b'0'..=b'9') => Some(i64::from(tens - b'0') * 10 + i64::from(ones - b'0')),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn offsets_are_applied() {
        let instant = utc("2021-05-31T07:23:45Z");
        for text in [
            "2021-05-31T07:23:45+00:00",
            "2021-05-31T07:23:45Z",
            "2021-05-31T07:23:45-00:00",
            "2021-05-31T09:23:45+02:00",
            "2021-05-31T02:53:45-04:30",
            "2021-05-31 07:23:45",
            "2021-05-31T07:23:45",
            " 2021-05-31T07:23:45+00:00 ",
        ] {
            assert_eq!(parse_time(text), Some(instant), "{text}");
        }
        // Across a day boundary, with fractions.
        assert_eq!(
            parse_time("2021-06-01T01:00:00.250+05:30"),
            Some(utc("2021-05-31T19:30:00.250Z"))
        );
    }

    #[test]
    fn what_is_no_time_is_none() {
        for text in [
            "",
            "yesterday",
            "2021-05-31",
            "2021-05-31T07:23",
            "2021-05-31T07:23:45+0200",
            "2021-05-31T07:23:45+24:00",
            "2021-05-31T07:23:45+02:60",
            "2021-05-31T07:23:45+a2:00",
            "2021-13-31T07:23:45+00:00",
            "1969-12-31T23:59:59+00:00",
            "2021-05-31T07:23:45é",
        ] {
            assert_eq!(parse_time(text), None, "{text}");
        }
    }
}
