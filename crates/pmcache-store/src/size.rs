//! Byte sizes as operators write them in config: `512MiB`, `10GiB`, `1500000`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A size in bytes, parsed from a number with an optional binary (KiB…TiB) or decimal (KB…TB) unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

const UNITS: [(&str, u64); 9] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("B", 1),
];

impl FromStr for ByteSize {
    type Err = Error;

    fn from_str(text: &str) -> Result<ByteSize> {
        let trimmed = text.trim();
        let (number, multiplier) = UNITS
            .iter()
            .find_map(|(unit, multiplier)| {
                trimmed
                    .strip_suffix(unit)
                    .map(|number| (number.trim(), *multiplier))
            })
            .unwrap_or((trimmed, 1));
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .map(ByteSize)
            .ok_or_else(|| Error::BadSize(text.to_owned()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match UNITS[..4]
            .iter()
            .find(|(_, m)| self.0 >= *m && self.0.is_multiple_of(*m))
        {
            Some((unit, multiplier)) => write!(f, "{}{unit}", self.0 / multiplier),
            None => write!(f, "{}B", self.0),
        }
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ByteSize, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("10GiB".parse::<ByteSize>().unwrap(), ByteSize(10 << 30));
        assert_eq!("512 MiB".parse::<ByteSize>().unwrap(), ByteSize(512 << 20));
        assert_eq!("3MB".parse::<ByteSize>().unwrap(), ByteSize(3_000_000));
        assert_eq!("42".parse::<ByteSize>().unwrap(), ByteSize(42));
        assert!("ten".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn prints_the_largest_exact_unit() {
        assert_eq!(ByteSize(256 << 20).to_string(), "256MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }
}
