//! Checks on identifiers that arrive from outside (the plugin validates
//! them too, but the API can be called directly and these end up in store
//! keys and kernel names). The rules live in furrow_api::wire, shared with
//! the plugin and the fuzz targets.

use furrow_api::error::code;
use furrow_api::ApiError;

pub use furrow_api::wire::is_cni_identifier;

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
    match furrow_api::wire::ifname_problem(name) {
        None => Ok(()),
        Some(why) => Err(ApiError::new(
            code::INVALID_ENV,
            format!("CNI_IFNAME {name:?} is invalid: {why}"),
        )),
    }
}

pub fn network_name(name: &str) -> Result<(), ApiError> {
    furrow_api::wire::validate_network_name(name)
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
        assert!(ifname("e\u{b}0").is_err());
        assert!(network_name("mgmt-net.1").is_ok());
        assert!(network_name("a b").is_err());
    }
}
