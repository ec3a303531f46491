//! Registry credentials in Docker's `config.json` (`$DOCKER_CONFIG/config.json`, default
//! `~/.docker/config.json`): read for pulls, written by `skiff login`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use base64::Engine as _;

use crate::error::{Error, IoContext, Result};
use crate::reference::DOCKER_HUB;
use crate::user_files::read_small_file;

/// Docker's config.json holds credentials and settings: anything bigger is not one.
const MAX_DOCKER_CONFIG_BYTES: u64 = 4 << 20;

/// The key Docker uses for Docker Hub in `auths`.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// `https://host:port/v1/` → `host:port`: config keys come in several spellings.
fn normalize_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Whether a config.json key (any spelling) names `registry`.
pub fn registry_matches(key: &str, registry: &str) -> bool {
    let k = normalize_key(key);
    k == registry
        || (registry == DOCKER_HUB
            && matches!(k, "index.docker.io" | "registry-1.docker.io" | "docker.io"))
}

fn read_config() -> Result<Option<(PathBuf, serde_json::Value)>> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    let text = match read_small_file(&path, MAX_DOCKER_CONFIG_BYTES) {
        Ok(t) => t,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let v = serde_json::from_slice(&text).map_err(|e| Error::Malformed {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Some((path, v)))
}

/// Credentials stored for `registry` (as in `Reference::registry`), if any.
pub fn lookup(registry: &str) -> Result<Option<Credentials>> {
    let Some((path, cfg)) = read_config()? else {
        return Ok(None);
    };
    let Some(auths) = cfg.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    for (key, entry) in auths {
        if !registry_matches(key, registry) {
            continue;
        }
        if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            let bad = |reason: &str| Error::Malformed {
                what: format!("{} (auths.{key}.auth)", path.display()),
                reason: reason.to_string(),
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("not base64"))?;
            let raw = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
            let (u, p) = raw
                .split_once(':')
                .ok_or_else(|| bad("not user:password"))?;
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(|v| v.as_str()),
            entry.get("password").and_then(|v| v.as_str()),
        ) {
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
    }
    Ok(None)
}

/// Saves credentials for `registry`, keeping everything else in the file; written 0600 and
/// atomically (a crash leaves the old file).
pub fn store(registry: &str, creds: &Credentials) -> Result<PathBuf> {
    let path = docker_config_path().ok_or_else(|| Error::Malformed {
        what: "environment".into(),
        reason: "neither DOCKER_CONFIG nor HOME is set".into(),
    })?;
    let mut cfg = read_config()?
        .map(|(_, v)| v)
        .unwrap_or_else(|| serde_json::json!({}));
    let key = if registry == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY
    } else {
        registry
    };
    let raw = format!("{}:{}", creds.username, creds.password);
    let obj = cfg.as_object_mut().ok_or_else(|| Error::Malformed {
        what: path.display().to_string(),
        reason: "not a JSON object".into(),
    })?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let Some(auths) = auths.as_object_mut() else {
        return Err(Error::Malformed {
            what: path.display().to_string(),
            reason: "\"auths\" is not an object".into(),
        });
    };
    auths.insert(
        key.to_string(),
        serde_json::json!({ "auth": base64::engine::general_purpose::STANDARD.encode(raw) }),
    );
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    fs::create_dir_all(dir).at("cannot create", dir)?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).at("cannot create temporary file in", dir)?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600))
        .at("cannot chmod", tmp.path())?;
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| Error::Malformed {
        what: "credentials".into(),
        reason: e.to_string(),
    })?;
    tmp.write_all(text.as_bytes())
        .at("cannot write", tmp.path())?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .at("cannot write", &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_spellings() {
        assert!(registry_matches("https://index.docker.io/v1/", "docker.io"));
        assert!(registry_matches("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(registry_matches("https://127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(!registry_matches("127.0.0.1:5001", "127.0.0.1:5000"));
    }
}
