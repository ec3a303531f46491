//! `X-Registry-Auth`: the credentials a client sends with a push, base64url-encoded JSON
//! (`username`, `password`, `auth`, `serveraddress`, `identitytoken`, `registrytoken`), as the
//! docker CLI and docker-py write it.

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
        let engines = [
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
        ];
        let raw = engines
            .iter()
            .find_map(|e| e.decode(header).ok())
            .ok_or_else(|| bad("not base64"))?;
        let mut auth: RegistryAuth = serde_json::from_slice(&raw)
            .map_err(|e| bad(&format!("not the JSON expected: {e}")))?;
        if auth.username.is_empty() && !auth.auth.is_empty() {
            let pair = base64::engine::general_purpose::STANDARD
                .decode(auth.auth.trim())
                .ok()
                .and_then(|p| String::from_utf8(p).ok())
                .ok_or_else(|| bad("\"auth\" is not base64 of user:password"))?;
            let (u, p) = pair
                .split_once(':')
                .ok_or_else(|| bad("\"auth\" is not user:password"))?;
            (auth.username, auth.password) = (u.to_string(), p.to_string());
        }
        if auth.username.is_empty() && auth.password.is_empty() {
            if !auth.identitytoken.is_empty() || !auth.registrytoken.is_empty() {
                return Err(ApiError::bad_request(
                    "X-Registry-Auth: identity and registry tokens are not supported by skiff; \
                     log in with a user name and password",
                ));
            }
            return Ok(None);
        }
        Ok(Some(auth))
    }

    /// The header value for these credentials (what the skiff CLI sends).
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        base64::engine::general_purpose::URL_SAFE.encode(json)
    }
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
}
