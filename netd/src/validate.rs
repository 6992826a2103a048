//! Checks on identifiers that arrive from outside (the plugin validates
//! them too, but the API can be called directly and these end up in store
//! keys and kernel names).

use furrow_api::error::code;
use furrow_api::ApiError;

/// The CNI spec's rule for container IDs and network names.
pub fn is_cni_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

pub fn container_id(id: &str) -> Result<(), ApiError> {
    if is_cni_identifier(id) {
        Ok(())
    } else {
        Err(ApiError::new(
            code::INVALID_ENV,
            format!("CNI_CONTAINERID {id:?} is invalid: expected letters, digits, '_', '.' or '-', starting with a letter or digit"),
        ))
    }
}

pub fn ifname(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            code::INVALID_ENV,
            format!("CNI_IFNAME {name:?} is invalid: expected 1-15 characters, not \".\" or \"..\", without '/', ':' or whitespace"),
        ))
    }
}

pub fn network_name(name: &str) -> Result<(), ApiError> {
    if is_cni_identifier(name) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "name",
            format!("{name:?} is not a valid network name: expected letters, digits, '_', '.' or '-', starting with a letter or digit"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(container_id("abc-123_x.y").is_ok());
        assert!(container_id("-abc").is_err());
        assert!(container_id("").is_err());
        assert!(container_id("a/b").is_err());
        assert!(ifname("eth0").is_ok());
        assert!(ifname("a234567890123456").is_err());
        assert!(ifname("..").is_err());
        assert!(ifname("e th").is_err());
        assert!(ifname("e:0").is_err());
        assert!(network_name("mgmt-net.1").is_ok());
        assert!(network_name("a b").is_err());
    }
}
