//! Compute API microversions: negotiation and the response headers.
//!
//! Clients ask with `OpenStack-API-Version: compute 2.47` (or the legacy
//! `X-OpenStack-Nova-API-Version: 2.47`); no header means the minimum,
//! `latest` the maximum. Every v2.1 response echoes the version used in
//! both headers and sets `Vary` on them so caches keep versions apart.
//!
//! We stop at [`MAX`] = 2.79. Everything Synnefo can back is expressible by
//! then (2.47 embedded flavors, 2.73 lock reasons, 2.75 consistent server
//! bodies and `swap: 0`); 2.80–2.89 only touch APIs we do not serve, and
//! 2.90, 2.96, 2.98 and 2.100 add server attributes (hostname, pinned AZ,
//! image properties, scheduler hints) that would be invented data here.
//! Clients negotiate down, so python-openstackclient and openstacksdk work
//! unchanged.

use std::fmt;

use axum::http::{HeaderMap, HeaderValue, StatusCode};

use crate::error::ApiError;

/// A compute API microversion `2.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u16);

/// Lowest supported version (2.1).
pub const MIN: Version = Version(1);
/// Highest supported version (2.79).
pub const MAX: Version = Version(79);

impl Version {
    /// True when this version is at least `2.minor`.
    pub fn at_least(self, minor: u16) -> bool {
        self.0 >= minor
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "2.{}", self.0)
    }
}

fn parse_value(v: &str) -> Result<Version, ApiError> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("latest") {
        return Ok(MAX);
    }
    let bad = || {
        ApiError::bad_request(format!(
            "API Version String {v} is of invalid format. Must be of format MajorNum.MinorNum."
        ))
    };
    let (major, minor) = v.split_once('.').ok_or_else(bad)?;
    let major: u16 = major.parse().map_err(|_| bad())?;
    let minor: u16 = minor.parse().map_err(|_| bad())?;
    if major != 2 || !(MIN.0..=MAX.0).contains(&minor) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "notAcceptable",
            format!(
                "Version {v} is not supported by the API. Minimum is {MIN} and maximum is {MAX}."
            ),
        ));
    }
    Ok(Version(minor))
}

/// Negotiates the version from request headers.
pub fn negotiate(headers: &HeaderMap) -> Result<Version, ApiError> {
    for value in headers.get_all("openstack-api-version") {
        let s = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Invalid OpenStack-API-Version header."))?;
        for part in s.split(',') {
            let mut words = part.split_whitespace();
            if let (Some(service), Some(ver)) = (words.next(), words.next())
                && service.eq_ignore_ascii_case("compute")
            {
                return parse_value(ver);
            }
        }
    }
    if let Some(value) = headers.get("x-openstack-nova-api-version") {
        let s = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Invalid X-OpenStack-Nova-API-Version header."))?;
        return parse_value(s);
    }
    Ok(MIN)
}

/// Adds the negotiated version headers to a response.
pub fn echo(headers: &mut HeaderMap, v: Version) {
    if let Ok(h) = HeaderValue::from_str(&format!("compute {v}")) {
        headers.insert("openstack-api-version", h);
    }
    if let Ok(h) = HeaderValue::from_str(&v.to_string()) {
        headers.insert("x-openstack-nova-api-version", h);
    }
    headers.append(
        axum::http::header::VARY,
        HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(&h(&[])).unwrap(), MIN);
        assert_eq!(
            negotiate(&h(&[("openstack-api-version", "compute 2.47")])).unwrap(),
            Version(47)
        );
        assert_eq!(
            negotiate(&h(&[("openstack-api-version", "volume 3.5, compute 2.6")])).unwrap(),
            Version(6)
        );
        assert_eq!(
            negotiate(&h(&[("openstack-api-version", "compute latest")])).unwrap(),
            MAX
        );
        assert_eq!(
            negotiate(&h(&[("x-openstack-nova-api-version", "2.19")])).unwrap(),
            Version(19)
        );
        // The new header wins over the legacy one.
        assert_eq!(
            negotiate(&h(&[
                ("x-openstack-nova-api-version", "2.19"),
                ("openstack-api-version", "compute 2.3")
            ]))
            .unwrap(),
            Version(3)
        );
        // Another service's header alone means the default.
        assert_eq!(
            negotiate(&h(&[("openstack-api-version", "volume 3.5")])).unwrap(),
            MIN
        );
        assert_eq!(
            negotiate(&h(&[("openstack-api-version", "compute 2.999")]))
                .unwrap_err()
                .status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert_eq!(
            negotiate(&h(&[("openstack-api-version", "compute 3.0")]))
                .unwrap_err()
                .status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert_eq!(
            negotiate(&h(&[("openstack-api-version", "compute 2.x")]))
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            negotiate(&h(&[("openstack-api-version", "compute 2.0")]))
                .unwrap_err()
                .status,
            StatusCode::NOT_ACCEPTABLE
        );
    }
}
