//! `X-Registry-Auth`: the credentials a client sends with a push or pull, base64url-encoded JSON
//! (`username`, `password`, `auth`, `serveraddress`, `identitytoken`, `registrytoken`), as the
//! docker CLI and docker-py write it.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// Decoded credentials for one registry.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// base64 of `username:password` (what config.json's `auth` holds).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serveraddress: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identitytoken: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub registrytoken: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RegistryAuth({}@{}, <redacted>)",
            self.username, self.serveraddress
        )
    }
}

impl RegistryAuth {
    /// The header's credentials; None when it carries none (`{}`, as clients send without a
    /// login). Tokens are refused by name: skiff signs in with a user and password only.
    pub fn decode(header: &str) -> Result<Option<RegistryAuth>, ApiError> {
        let header = header.trim();
        if header.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| ApiError::bad_request(format!("invalid X-Registry-Auth: {why}"));
        let raw = decode_base64(header).ok_or_else(|| bad("not base64"))?;
        let auth: RegistryAuth = serde_json::from_slice(&raw)
            .map_err(|e| bad(&format!("not the JSON expected: {e}")))?;
        auth.normalized("X-Registry-Auth")
    }

    /// `X-Registry-Config` (a build's): every registry's credentials the client holds, by
    /// config.json key. Entries holding only tokens are kept (refused if a build needs them).
    pub fn decode_config(header: &str) -> Result<BTreeMap<String, RegistryAuth>, ApiError> {
        let header = header.trim();
        if header.is_empty() {
            return Ok(BTreeMap::new());
        }
        let bad = |why: &str| ApiError::bad_request(format!("invalid X-Registry-Config: {why}"));
        let raw = decode_base64(header).ok_or_else(|| bad("not base64"))?;
        let map: BTreeMap<String, RegistryAuth> = serde_json::from_slice(&raw)
            .map_err(|e| bad(&format!("not the JSON expected: {e}")))?;
        let mut out = BTreeMap::new();
        for (key, auth) in map {
            let tokens = !auth.identitytoken.is_empty() || !auth.registrytoken.is_empty();
            match auth.clone().normalized("X-Registry-Config") {
                Ok(Some(a)) => drop(out.insert(key, a)),
                Ok(None) => {}
                Err(_) if tokens => drop(out.insert(key, auth)),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// `auth` split into user and password; None without a user or password; tokens alone are
    /// refused by name: skiff signs in with a user and password only.
    fn normalized(mut self, header: &str) -> Result<Option<RegistryAuth>, ApiError> {
        let bad = |why: &str| ApiError::bad_request(format!("invalid {header}: {why}"));
        if self.username.is_empty() && !self.auth.is_empty() {
            let pair = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .ok()
                .and_then(|p| String::from_utf8(p).ok())
                .ok_or_else(|| bad("\"auth\" is not base64 of user:password"))?;
            let (u, p) = pair
                .split_once(':')
                .ok_or_else(|| bad("\"auth\" is not user:password"))?;
            (self.username, self.password) = (u.to_string(), p.to_string());
        }
        if self.username.is_empty() && self.password.is_empty() {
            if !self.identitytoken.is_empty() || !self.registrytoken.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "{header}: identity and registry tokens are not supported by skiff; log in \
                     with a user name and password"
                )));
            }
            return Ok(None);
        }
        Ok(Some(self))
    }

    /// skiff_images' credentials for a registry client.
    pub fn credentials(&self) -> skiff_images::auth::Credentials {
        skiff_images::auth::Credentials {
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }

    /// The header value for these credentials (what the skiff CLI sends).
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        base64::engine::general_purpose::URL_SAFE.encode(json)
    }
}

/// Clients' base64: URL-safe (the docker CLI, docker-py) or standard, padded or not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let engines = [
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    engines.iter().find_map(|e| e.decode(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

    #[test]
    fn what_the_docker_clients_send() {
        // The docker CLI: URL-safe base64 with padding.
        let cli = URL_SAFE
            .encode(r#"{"username":"u","password":"p?>~","serveraddress":"127.0.0.1:5000"}"#);
        let a = RegistryAuth::decode(&cli).unwrap().unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p?>~"));
        assert_eq!(a.serveraddress, "127.0.0.1:5000");
        // docker-py's config.json `auth` entry only, without padding.
        let py = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"auth":"{}","serveraddress":"r"}}"#,
            STANDARD.encode("bob:s3cret:x")
        ));
        let a = RegistryAuth::decode(&py).unwrap().unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("bob", "s3cret:x")
        );
        // No login: `{}` and an empty header mean none.
        assert_eq!(RegistryAuth::decode("e30=").unwrap(), None);
        assert_eq!(RegistryAuth::decode("").unwrap(), None);
        // And back: what skiff sends decodes to the same.
        let mine = RegistryAuth {
            username: "u".into(),
            password: "p".into(),
            ..RegistryAuth::default()
        };
        assert_eq!(RegistryAuth::decode(&mine.encode()).unwrap(), Some(mine));
    }

    #[test]
    fn refusals_say_why() {
        let err = RegistryAuth::decode("%%%").unwrap_err();
        assert!(err.message.contains("not base64"), "{}", err.message);
        let err = RegistryAuth::decode(&URL_SAFE.encode("[1]")).unwrap_err();
        assert!(err.message.contains("JSON"), "{}", err.message);
        let token = URL_SAFE.encode(r#"{"identitytoken":"abc"}"#);
        let err = RegistryAuth::decode(&token).unwrap_err();
        assert!(err.message.contains("identity"), "{}", err.message);
        let bad = URL_SAFE.encode(r#"{"auth":"bm9jb2xvbg=="}"#);
        assert!(RegistryAuth::decode(&bad).is_err());
        // Debug never shows the password.
        let a = RegistryAuth {
            username: "u".into(),
            password: "hunter2".into(),
            ..RegistryAuth::default()
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[test]
    fn a_build_config_keeps_each_registry_and_tokens_for_later() {
        let header = URL_SAFE.encode(format!(
            r#"{{"https://index.docker.io/v1/":{{"auth":"{}"}},"127.0.0.1:5000":{{"username":"u","password":"p"}},"quay.io":{{"identitytoken":"t"}},"empty":{{}}}}"#,
            STANDARD.encode("hub:pw")
        ));
        let map = RegistryAuth::decode_config(&header).unwrap();
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            ["127.0.0.1:5000", "https://index.docker.io/v1/", "quay.io"]
        );
        assert_eq!(map["https://index.docker.io/v1/"].username, "hub");
        assert_eq!(map["127.0.0.1:5000"].credentials().password, "p");
        assert!(map["quay.io"].username.is_empty());
        assert!(RegistryAuth::decode_config("").unwrap().is_empty());
        let err = RegistryAuth::decode_config("%%%").unwrap_err();
        assert!(err.message.contains("X-Registry-Config"), "{}", err.message);
    }
}
