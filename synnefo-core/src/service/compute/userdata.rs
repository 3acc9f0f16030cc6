//! Nova's `user_data` on create: validated as Nova's schema has it (a
//! base64 string of at most `api.max_user_data_bytes` characters, Nova's
//! `maxLength` 65535 by default), stored with the server (Nova serves it
//! back to operators as `OS-EXT-SRV-ATTR:user_data` from 2.3) and sent to
//! snf-image as its `cloud_userdata` OS parameter, which snf-image (0.22
//! and later) writes as cloud-init's NoCloud `user-data`; Synnefo's
//! `logic/servers.py` passes it the same way.

use super::Compute;
use crate::error::ServiceError;

/// snf-image's OS parameter for cloud-init user data (base64).
pub const USER_DATA_OSPARAM: &str = "cloud_userdata";

impl Compute {
    /// Checks `user_data` and returns what to store and send: `None` when
    /// absent or empty; the base64 text without the line breaks and
    /// blanks a client may have wrapped it in (Nova's decoder skips them;
    /// snf-image's `base64 -d` needs none). Too long: 400 before any
    /// decoding; not base64: 400.
    pub(super) fn user_data(&self, given: Option<&str>) -> Result<Option<String>, ServiceError> {
        check_user_data(given, self.config.max_user_data_bytes)
    }
}

/// [`Compute::user_data`] with the bound given.
fn check_user_data(given: Option<&str>, max: u32) -> Result<Option<String>, ServiceError> {
    use base64::Engine as _;
    {
        let Some(given) = given else {
            return Ok(None);
        };
        let bound = max as usize;
        if given.len() > bound {
            return Err(ServiceError::BadRequest(format!(
                "Invalid input for field/attribute user_data. Value is too long: {} characters, at most {bound}",
                given.len()
            )));
        }
        let text: String = given.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        if text.is_empty() {
            return Ok(None);
        }
        if base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .is_err()
        {
            let shown: String = given.chars().take(64).collect();
            return Err(ServiceError::BadRequest(format!(
                "Invalid input for field/attribute user_data. Value: {shown}. It is not a 'base64'"
            )));
        }
        Ok(Some(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(max: u32, given: Option<&str>) -> Result<Option<String>, ServiceError> {
        check_user_data(given, max)
    }

    #[test]
    fn base64_within_the_bound_is_kept() {
        assert_eq!(check(100, None).unwrap(), None);
        assert_eq!(check(100, Some("")).unwrap(), None);
        assert_eq!(
            check(100, Some("I2Nsb3VkLWNvbmZpZwo=")).unwrap().as_deref(),
            Some("I2Nsb3VkLWNvbmZpZwo=")
        );
        // wrapped lines, as `base64` prints them
        assert_eq!(
            check(100, Some("I2Nsb3Vk\nLWNvbmZp\r\nZwo=\n"))
                .unwrap()
                .as_deref(),
            Some("I2Nsb3VkLWNvbmZpZwo=")
        );
        // exactly at the bound
        assert!(check(8, Some("YWJjZGVm")).unwrap().is_some());
    }

    #[test]
    fn bad_or_too_long_user_data_is_a_400_naming_the_field() {
        for bad in ["not base64!", "YWJj=", "YWJjZA", "////\u{e9}"] {
            match check(100, Some(bad)) {
                Err(ServiceError::BadRequest(m)) => {
                    assert!(m.contains("user_data") && m.contains("base64"), "{m}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        match check(7, Some("YWJjZGVm")) {
            Err(ServiceError::BadRequest(m)) => {
                assert!(m.contains("too long") && m.contains("at most 7"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
