//! Parsed lines into typed instructions, words still unexpanded (variables are substituted
//! later, when the evaluator knows the environment). Flags are checked here: the ones skiff
//! does not implement are refused by name.

use crate::error::{Error, Result};
use crate::healthcheck::parse_healthcheck;
use crate::key_values::{name_value_words, name_values};
use crate::parser::{heredoc_marker, json_array, split_blank, split_blanks, Heredoc, Node};
use skiff_images::manifest::HealthConfig;

/// One instruction, with the lines it spans and its text (for history and error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    pub end_line: usize,
    pub original: String,
    pub op: Op,
}

/// The exec (JSON) or shell form of RUN, CMD, ENTRYPOINT and HEALTHCHECK CMD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandLine {
    Exec(Vec<String>),
    Shell(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    From {
        image: String,
        /// Lower case, as BuildKit keeps stage names.
        name: Option<String>,
        platform: Option<String>,
    },
    /// Names with their optional defaults.
    Arg(Vec<(String, Option<String>)>),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    /// `None` for `HEALTHCHECK NONE`.
    Healthcheck(HealthConfig),
    Copy(Copy),
    Add(Copy),
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    StopSignal(String),
    Maintainer(String),
    /// The trigger as it will be stored in the image (`RUN echo hi`), and parsed.
    Onbuild {
        trigger: String,
        parsed: Box<Instruction>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub command: CommandLine,
    pub heredocs: Vec<Heredoc>,
    /// `--network=default|none`.
    pub network: Option<String>,
}

/// COPY and ADD.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Copy {
    pub sources: Vec<String>,
    /// `COPY <<EOF /dest`: files made from heredocs (named by their delimiter).
    pub inline: Vec<Heredoc>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub checksum: Option<String>,
}

/// Flags skiff will not implement, with why; refused by name.
const REFUSED: &[(&str, &str, &str)] = &[
    ("run", "mount", "RUN --mount is not supported by skiff"),
    (
        "run",
        "security",
        "RUN --security is not supported by skiff",
    ),
    ("run", "device", "RUN --device is not supported by skiff"),
    (
        "add",
        "keep-git-dir",
        "ADD --keep-git-dir is not supported by skiff (no git sources)",
    ),
    ("add", "unpack", "ADD --unpack is not supported by skiff"),
    ("add", "exclude", "ADD --exclude is not supported by skiff"),
    (
        "copy",
        "exclude",
        "COPY --exclude is not supported by skiff",
    ),
    (
        "copy",
        "parents",
        "COPY --parents is not supported by skiff",
    ),
];

/// The flags one instruction was given, checked against those it takes.
struct Flags {
    given: Vec<(String, Option<String>)>,
}

impl Flags {
    fn parse(node: &Node, known: &[&str]) -> std::result::Result<Flags, String> {
        let mut given: Vec<(String, Option<String>)> = Vec::new();
        for raw in &node.flags {
            let Some(body) = raw.strip_prefix("--") else {
                return Err(format!("arg should start with -- : {raw}"));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            if let Some((_, _, why)) = REFUSED
                .iter()
                .find(|(k, f, _)| *k == node.keyword && *f == name)
            {
                return Err((*why).to_string());
            }
            if !known.contains(&name.as_str()) {
                return Err(format!("unknown flag: {name}"));
            }
            if given.iter().any(|(n, _)| *n == name) {
                return Err(format!("duplicate flag specified: {name}"));
            }
            given.push((name, value));
        }
        Ok(Flags { given })
    }

    fn string(&self, name: &str) -> std::result::Result<Option<String>, String> {
        match self.given.iter().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, None)) => Err(format!("missing a value on flag: {name}")),
            Some((_, Some(v))) => Ok(Some(v.clone())),
        }
    }

    fn boolean(&self, name: &str) -> std::result::Result<bool, String> {
        match self.given.iter().find(|(n, _)| n == name) {
            None => Ok(false),
            Some((_, None)) => Ok(true),
            Some((_, Some(v))) => match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("expecting boolean value for flag {name}, not: {v}")),
            },
        }
    }
}

/// All instructions of a parsed Dockerfile; the first error stops.
pub fn instructions(nodes: &[Node]) -> Result<Vec<Instruction>> {
    nodes.iter().map(instruction).collect()
}

pub fn instruction(node: &Node) -> Result<Instruction> {
    let op = op(node).map_err(|m| Error::Parse {
        line: node.line,
        message: m,
    })?;
    Ok(Instruction {
        line: node.line,
        end_line: node.end_line,
        original: node.original.clone(),
        op,
    })
}

pub(crate) fn at_least_one(keyword: &str) -> String {
    format!("{} requires at least one argument", keyword.to_uppercase())
}

fn exactly_one(node: &Node) -> std::result::Result<String, String> {
    if node.rest.is_empty() {
        return Err(format!(
            "{} requires exactly one argument",
            node.keyword.to_uppercase()
        ));
    }
    Ok(node.rest.clone())
}

/// A JSON array of strings, or `None` when the text is not a JSON array.
fn json_strings(rest: &str) -> std::result::Result<Option<Vec<String>>, String> {
    let Some(values) = json_array(rest) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(
                "when using JSON array syntax, arrays must be comprised of strings only"
                    .to_string(),
            ),
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Some)
}

fn command_line(rest: &str) -> std::result::Result<CommandLine, String> {
    Ok(match json_strings(rest)? {
        Some(args) => CommandLine::Exec(args),
        None => CommandLine::Shell(rest.to_string()),
    })
}

fn list(rest: &str) -> std::result::Result<Vec<String>, String> {
    Ok(match json_strings(rest)? {
        Some(words) => words,
        None => split_blanks(rest),
    })
}

fn op(node: &Node) -> std::result::Result<Op, String> {
    let kw = node.keyword.as_str();
    let rest = node.rest.as_str();
    let no_flags = || Flags::parse(node, &[]);
    Ok(match kw {
        "from" => {
            let flags = Flags::parse(node, &["platform"])?;
            let args = split_blanks(rest);
            let name = match args.as_slice() {
                [_] => None,
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    let lower = name.to_lowercase();
                    let valid = lower.starts_with(|c: char| c.is_ascii_lowercase())
                        && lower.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)
                        });
                    if !valid {
                        return Err(format!("invalid name for build stage: {name:?}, name can't start with a number or contain symbols"));
                    }
                    Some(lower)
                }
                _ => return Err("FROM requires either one or three arguments".into()),
            };
            Op::From {
                image: args[0].clone(),
                name,
                platform: flags.string("platform")?,
            }
        }
        "arg" => {
            no_flags()?;
            let words = name_value_words(rest, node);
            if words.is_empty() {
                return Err(at_least_one(kw));
            }
            let mut args = Vec::new();
            for w in words {
                let (k, v) = match w.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (w, None),
                };
                if k.is_empty() {
                    return Err("ARG names can not be blank".into());
                }
                args.push((k, v));
            }
            Op::Arg(args)
        }
        "env" | "label" => {
            no_flags()?;
            let pairs = name_values(rest, node)?;
            if kw == "env" {
                Op::Env(pairs)
            } else {
                Op::Label(pairs)
            }
        }
        "run" => {
            let flags = Flags::parse(node, &["network"])?;
            let network = flags.string("network")?;
            if let Some(n) = network
                .as_deref()
                .filter(|n| !matches!(*n, "default" | "none"))
            {
                return Err(format!(
                    "RUN --network={n} is not supported by skiff (only default and none)"
                ));
            }
            if rest.is_empty() {
                return Err(at_least_one(kw));
            }
            Op::Run(Run {
                command: command_line(rest)?,
                heredocs: node.heredocs.clone(),
                network,
            })
        }
        "cmd" | "entrypoint" => {
            no_flags()?;
            if rest.is_empty() {
                return Err(at_least_one(kw));
            }
            let c = command_line(rest)?;
            if kw == "cmd" {
                Op::Cmd(c)
            } else {
                Op::Entrypoint(c)
            }
        }
        "shell" => {
            no_flags()?;
            match json_strings(rest)? {
                Some(args) if !args.is_empty() => Op::Shell(args),
                Some(_) => return Err(at_least_one(kw)),
                None if rest.is_empty() => return Err(at_least_one(kw)),
                None => return Err("SHELL requires the arguments to be in JSON form".into()),
            }
        }
        "healthcheck" => Op::Healthcheck(healthcheck(node)?),
        "copy" | "add" => {
            let copy = if kw == "copy" {
                let flags = Flags::parse(node, &["from", "chown", "chmod", "link"])?;
                Copy {
                    from: flags.string("from")?,
                    chown: flags.string("chown")?,
                    chmod: flags.string("chmod")?,
                    link: flags.boolean("link")?,
                    ..sources_and_dest(node)?
                }
            } else {
                let flags = Flags::parse(node, &["chown", "chmod", "link", "checksum"])?;
                Copy {
                    chown: flags.string("chown")?,
                    chmod: flags.string("chmod")?,
                    link: flags.boolean("link")?,
                    checksum: flags.string("checksum")?,
                    ..sources_and_dest(node)?
                }
            };
            if kw == "copy" {
                Op::Copy(copy)
            } else {
                Op::Add(copy)
            }
        }
        "expose" => {
            no_flags()?;
            let mut ports = split_blanks(rest);
            if ports.is_empty() {
                return Err(at_least_one(kw));
            }
            ports.sort();
            Op::Expose(ports)
        }
        "volume" => {
            no_flags()?;
            let vols: Vec<String> = list(rest)?.iter().map(|v| v.trim().to_string()).collect();
            if vols.is_empty() {
                return Err(at_least_one(kw));
            }
            if vols.iter().any(String::is_empty) {
                return Err("VOLUME specified can not be an empty string".into());
            }
            Op::Volume(vols)
        }
        "user" => {
            no_flags()?;
            Op::User(exactly_one(node)?)
        }
        "workdir" => {
            no_flags()?;
            Op::Workdir(exactly_one(node)?)
        }
        "stopsignal" => {
            no_flags()?;
            Op::StopSignal(exactly_one(node)?)
        }
        "maintainer" => {
            no_flags()?;
            Op::Maintainer(exactly_one(node)?)
        }
        "onbuild" => onbuild(node)?,
        _ => {
            return Err(format!(
                "unknown instruction: {}",
                node.keyword.to_uppercase()
            ))
        }
    })
}

fn sources_and_dest(node: &Node) -> std::result::Result<Copy, String> {
    let kw = node.keyword.to_uppercase();
    let mut args = list(&node.rest)?;
    if args.len() < 2 {
        return Err(format!("{kw} requires at least two arguments, but only one was provided. Destination could not be determined"));
    }
    let dest = args.pop().unwrap_or_default();
    if heredoc_marker(&dest).is_some() {
        return Err(format!("{kw} cannot accept a heredoc as a destination"));
    }
    let mut copy = Copy {
        dest,
        ..Copy::default()
    };
    for src in args {
        match heredoc_marker(&src) {
            Some(marker) => {
                let doc = node
                    .heredocs
                    .iter()
                    .find(|d| d.name == marker.name)
                    .cloned()
                    .unwrap_or(marker);
                copy.inline.push(doc);
            }
            None => copy.sources.push(src),
        }
    }
    Ok(copy)
}

fn healthcheck(node: &Node) -> std::result::Result<HealthConfig, String> {
    let (typ, args) = split_blank(&node.rest);
    if typ.is_empty() {
        return Err(at_least_one("HEALTHCHECK"));
    }
    let typ = typ.to_ascii_uppercase();
    if typ == "NONE" {
        if !args.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        no_flags_at_all(node)?;
        return Ok(HealthConfig {
            test: vec!["NONE".into()],
            ..HealthConfig::default()
        });
    }
    let flags = Flags::parse(
        node,
        &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
    )?;
    if typ != "CMD" {
        return Err(format!("Unknown type {typ:?} in HEALTHCHECK (try CMD)"));
    }
    let get = |n: &str| flags.string(n);
    parse_healthcheck(
        command_line(args)?,
        [
            get("interval")?,
            get("timeout")?,
            get("start-period")?,
            get("start-interval")?,
        ],
        get("retries")?,
    )
}

fn no_flags_at_all(node: &Node) -> std::result::Result<(), String> {
    Flags::parse(node, &[]).map(|_| ())
}

fn onbuild(node: &Node) -> std::result::Result<Op, String> {
    Flags::parse(node, &[])?;
    if node.rest.is_empty() {
        return Err(at_least_one("ONBUILD"));
    }
    let child = crate::parser::node_from_line(&node.rest, node.escape)?;
    match child.keyword.as_str() {
        "onbuild" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
        "maintainer" | "from" => {
            return Err(format!(
                "{} isn't allowed as an ONBUILD trigger",
                child.keyword.to_uppercase()
            ))
        }
        _ => {}
    }
    let mut trigger = node.rest.clone();
    for doc in &node.heredocs {
        trigger.push('\n');
        trigger.push_str(&doc.content);
        trigger.push_str(&doc.name);
    }
    let child = Node {
        line: node.line,
        end_line: node.end_line,
        heredocs: node.heredocs.clone(),
        ..child
    };
    let parsed = instruction(&child).map_err(|e| match e {
        Error::Parse { message, .. } => message,
        other => other.to_string(),
    })?;
    Ok(Op::Onbuild {
        trigger,
        parsed: Box::new(parsed),
    })
}

#[cfg(test)]
#[path = "tests/instructions.rs"]
mod tests;
