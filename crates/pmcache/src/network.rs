//! Networks written as CIDRs (`10.0.0.0/8`, `fd00::/8`, or one address), as the operator lists
//! them in `server.trusted_networks`.

use std::net::IpAddr;

use anyhow::Context as _;

/// An address range: a network address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Reads `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128). Bits set past the
    /// prefix are refused: `10.1.2.3/8` is more likely a mistake than a way to write `10.0.0.0/8`.
    pub(crate) fn parse(text: &str) -> anyhow::Result<Network> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .with_context(|| format!("{text:?} is not a network such as 10.0.0.0/8 or fd00::/8"))?;
        let bits = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .with_context(|| format!("{text:?}: the prefix length must be 0 to {bits}"))?,
        };
        let network = Network { address, prefix };
        anyhow::ensure!(
            network.contains(address) && bits_of(address) & !network.mask() == 0,
            "{text:?} has bits set past its prefix /{prefix}"
        );
        Ok(network)
    }

    /// Whether `address` is in the network (an IPv4-mapped IPv6 address counts as IPv4).
    pub(crate) fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        let same_family = matches!(
            (self.address, address),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
        );
        same_family && bits_of(address) & self.mask() == bits_of(self.address) & self.mask()
    }

    fn mask(&self) -> u128 {
        let bits: u32 = match self.address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let host_bits = bits - u32::from(self.prefix);
        let all = if bits == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        all.checked_shl(host_bits).map_or(0, |mask| mask & all)
    }
}

fn bits_of(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let private = Network::parse("10.0.0.0/8").unwrap();
        assert!(private.contains(ip("10.200.3.4")));
        assert!(private.contains(ip("::ffff:10.1.1.1")));
        assert!(!private.contains(ip("11.0.0.1")));
        assert!(!private.contains(ip("fd00::1")));
        let one = Network::parse("127.0.0.9").unwrap();
        assert!(one.contains(ip("127.0.0.9")) && !one.contains(ip("127.0.0.8")));
        let v6 = Network::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fdab::1")) && !v6.contains(ip("fe80::1")));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("192.0.2.1"))
        );
    }

    #[test]
    fn malformed_networks_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "10.1.2.3/8",
            "ten/8",
            "10.0.0.0/",
            "::/129",
            "",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }
}
