//! `commit --change`: the Dockerfile instructions that change an image's configuration
//! (`CMD`, `ENTRYPOINT`, `ENV`, `EXPOSE`, `LABEL`, `USER`, `VOLUME`, `WORKDIR`), in Docker's
//! syntax. Other instructions are refused by name. Variables (`$VAR`) are not expanded.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::manifest::HealthConfig;

/// One instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    Env(Vec<(String, String)>),
    /// `80/tcp`, … (ranges expanded).
    Expose(Vec<String>),
    Label(Vec<(String, String)>),
    User(String),
    Volume(Vec<String>),
    Workdir(String),
    // Set by Dockerfile builds (skiff-dockerfile), not by `commit --change`:
    Healthcheck(HealthConfig),
    Shell(Vec<String>),
    StopSignal(String),
    OnBuild(String),
}

const SUPPORTED: &str = "CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR";

impl Change {
    /// The changes as `docker commit` sends them: each may hold several lines.
    pub fn parse_all<S: AsRef<str>>(changes: &[S]) -> Result<Vec<Change>> {
        changes
            .iter()
            .flat_map(|c| c.as_ref().lines())
            .filter(|l| !l.trim().is_empty())
            .map(Change::parse)
            .collect()
    }

    pub fn parse(line: &str) -> Result<Change> {
        let line = line.trim();
        let bad = |reason: String| Error::InvalidChange {
            change: line.to_string(),
            reason,
        };
        let (word, rest) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(w, r)| (w, r.trim()));
        let instruction = word.to_ascii_uppercase();
        let need_args = || {
            if rest.is_empty() {
                Err(bad(format!("{instruction} needs arguments")))
            } else {
                Ok(())
            }
        };
        match instruction.as_str() {
            "CMD" | "ENTRYPOINT" => {
                let args = exec_or_shell(rest);
                if args.is_none() {
                    need_args()?;
                }
                let args = args.unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), rest.into()]);
                Ok(if instruction == "CMD" {
                    Change::Cmd(args)
                } else {
                    Change::Entrypoint(args)
                })
            }
            "ENV" | "LABEL" => {
                need_args()?;
                let words = split_words(rest).map_err(bad)?;
                let pairs = if words.first().is_some_and(|w| w.contains('=')) {
                    words
                        .into_iter()
                        .map(|w| match w.split_once('=') {
                            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                            _ => Err(bad(format!("{w:?} is not KEY=VALUE"))),
                        })
                        .collect::<Result<Vec<_>>>()?
                } else if instruction == "ENV" {
                    // The old form: `ENV KEY the value`.
                    let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                    vec![(k.to_string(), v.trim().to_string())]
                } else {
                    return Err(bad("LABEL takes KEY=VALUE pairs".into()));
                };
                Ok(if instruction == "ENV" {
                    Change::Env(pairs)
                } else {
                    Change::Label(pairs)
                })
            }
            "EXPOSE" => {
                need_args()?;
                let mut ports = Vec::new();
                for w in split_words(rest).map_err(bad)? {
                    ports.extend(expose(&w).map_err(bad)?);
                }
                Ok(Change::Expose(ports))
            }
            "USER" => {
                need_args()?;
                Ok(Change::User(rest.to_string()))
            }
            "VOLUME" => {
                need_args()?;
                let paths = match exec_or_shell(rest) {
                    Some(list) => list,
                    None => split_words(rest).map_err(bad)?,
                };
                if paths.iter().any(String::is_empty) {
                    return Err(bad("VOLUME names an empty path".into()));
                }
                Ok(Change::Volume(paths))
            }
            "WORKDIR" => {
                need_args()?;
                Ok(Change::Workdir(rest.to_string()))
            }
            _ => Err(bad(format!(
                "{instruction} cannot be applied by commit (only {SUPPORTED})"
            ))),
        }
    }

    /// Applies the changes in order to an image config's `config` object. As in a
    /// Dockerfile, an `ENTRYPOINT` clears the `CMD` the image had unless the changes set one.
    pub fn apply_all(changes: &[Change], config: &mut Map<String, Value>) {
        let sets_cmd = changes.iter().any(|c| matches!(c, Change::Cmd(_)));
        for c in changes {
            c.apply(config);
            if matches!(c, Change::Entrypoint(_)) && !sets_cmd {
                config.remove("Cmd");
            }
        }
    }

    /// Applies one change to an image config's `config` object.
    pub fn apply(&self, config: &mut Map<String, Value>) {
        let strings = |v: &[String]| Value::from(v.to_vec());
        let object = |config: &mut Map<String, Value>, key: &str| -> Map<String, Value> {
            match config.remove(key) {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            }
        };
        match self {
            Change::Cmd(args) => {
                config.insert("Cmd".into(), strings(args));
            }
            Change::Entrypoint(args) => {
                config.insert("Entrypoint".into(), strings(args));
            }
            Change::Env(pairs) => {
                let mut env: Vec<String> = match config.remove("Env") {
                    Some(Value::Array(a)) => a
                        .into_iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                for (k, v) in pairs {
                    let entry = format!("{k}={v}");
                    let key = format!("{k}=");
                    match env.iter_mut().find(|e| e.starts_with(&key) || *e == k) {
                        Some(e) => *e = entry,
                        None => env.push(entry),
                    }
                }
                config.insert("Env".into(), strings(&env));
            }
            Change::Expose(ports) => {
                let mut m = object(config, "ExposedPorts");
                for p in ports {
                    m.insert(p.clone(), Value::Object(Map::new()));
                }
                config.insert("ExposedPorts".into(), Value::Object(m));
            }
            Change::Label(pairs) => {
                let mut m = object(config, "Labels");
                for (k, v) in pairs {
                    m.insert(k.clone(), Value::from(v.clone()));
                }
                config.insert("Labels".into(), Value::Object(m));
            }
            Change::User(user) => {
                config.insert("User".into(), Value::from(user.clone()));
            }
            Change::Volume(paths) => {
                let mut m = object(config, "Volumes");
                for p in paths {
                    m.insert(p.clone(), Value::Object(Map::new()));
                }
                config.insert("Volumes".into(), Value::Object(m));
            }
            Change::Healthcheck(h) => {
                config.insert("Healthcheck".into(), serde_json::json!(h));
            }
            Change::Shell(args) => {
                config.insert("Shell".into(), strings(args));
            }
            Change::StopSignal(s) => {
                config.insert("StopSignal".into(), Value::from(s.clone()));
            }
            Change::OnBuild(trigger) => {
                let mut triggers = match config.remove("OnBuild") {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                triggers.push(Value::from(trigger.clone()));
                config.insert("OnBuild".into(), Value::Array(triggers));
            }
            Change::Workdir(dir) => {
                let base = config
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .filter(|d| !d.is_empty())
                    .unwrap_or("/");
                let joined = if dir.starts_with('/') {
                    dir.clone()
                } else {
                    format!("{}/{dir}", base.trim_end_matches('/'))
                };
                config.insert("WorkingDir".into(), Value::from(clean(&joined)));
            }
        }
    }
}

/// The JSON (exec) form `["a", "b"]`; `None` when `rest` is not one (then it is the shell
/// form, as Docker reads it).
fn exec_or_shell(rest: &str) -> Option<Vec<String>> {
    if !rest.starts_with('[') {
        return None;
    }
    serde_json::from_str(rest).ok()
}

/// Words separated by blanks; double quotes (with backslash escapes) and single quotes group,
/// a backslash outside quotes escapes the next character.
fn split_words(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().ok_or("a trailing backslash")?);
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next().ok_or("an unterminated single quote")? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next().ok_or("an unterminated double quote")? {
                        '"' => break,
                        '\\' => word.push(chars.next().ok_or("a trailing backslash")?),
                        c => word.push(c),
                    }
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// EXPOSE's port specs: `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, … .
pub fn expose(word: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = word.split_once('/').unwrap_or((word, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("{word:?}: the protocol must be tcp, udp or sctp"));
    }
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{word:?}: {p:?} is not a port number"))
    };
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if last < first {
        return Err(format!("{word:?}: the range ends before it starts"));
    }
    Ok((first..=last).map(|p| format!("{p}/{proto}")).collect())
}

/// `/a/./b/../c/` → `/a/c` (lexically, as Go's `filepath.Clean`).
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}
