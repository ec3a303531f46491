//! Dockerfile text into instruction lines, as BuildKit's `parser.Parse` reads it: parser
//! directives, comments, line continuations (also across comments and empty lines),
//! builder flags, heredocs. Each node keeps its first and last 1-based line.

use crate::error::Error;
use crate::shell::{Lexer, NoVars};

/// Docker's scanner refuses longer lines; so does this parser (a bound on hostile input).
pub const MAX_LINE: usize = 65535;

/// One instruction as written: the keyword, its `--flags` and the rest of the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub line: usize,
    pub end_line: usize,
    /// Lower case.
    pub keyword: String,
    /// `--name=value` or `--name`, quotes and escapes removed.
    pub flags: Vec<String>,
    /// The arguments after the flags, trimmed, with line continuations joined.
    pub rest: String,
    pub heredocs: Vec<Heredoc>,
    /// The whole instruction line, continuations joined.
    pub original: String,
    /// The Dockerfile's escape character.
    pub escape: char,
}

/// A here-document: `<<NAME` (expanded later) or `<<"NAME"` (taken as written); `<<-` strips
/// leading tabs of the content, done here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub content: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub escape: char,
    pub nodes: Vec<Node>,
    /// `# syntax=` (accepted, not acted on: skiff has one frontend).
    pub syntax: Option<String>,
    pub warnings: Vec<String>,
}

fn parse_error(line: usize, message: impl Into<String>) -> Error {
    Error::Parse {
        line,
        message: message.into(),
    }
}

/// Parses a Dockerfile. Invalid UTF-8 is refused with the line it is on.
pub fn parse(bytes: &[u8]) -> Result<Parsed, Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        parse_error(line, "the Dockerfile is not valid UTF-8")
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let raw: Vec<&str> = text.split_inclusive('\n').collect();
    if let Some(i) = raw.iter().position(|l| l.len() > MAX_LINE + 1) {
        return Err(parse_error(
            i + 1,
            format!("dockerfile line greater than max allowed size of {MAX_LINE}"),
        ));
    }
    let mut p = Parsed {
        escape: '\\',
        nodes: Vec::new(),
        syntax: None,
        warnings: Vec::new(),
    };
    let mut directives = Directives::default();
    let mut i = 0;
    while i < raw.len() {
        let first = trim_newline(raw[i]).trim_start();
        directives.line(first, i + 1, &mut p)?;
        i += 1;
        let start = i;
        let (mut line, mut end) = continuation(strip_comment(first), p.escape);
        if end && line.is_empty() {
            continue;
        }
        let mut empty_continuation = false;
        while !end && i < raw.len() {
            let next = trim_newline(raw[i]);
            directives.line(next, i + 1, &mut p)?;
            i += 1;
            if is_comment(next) {
                continue;
            }
            if next.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (more, e) = continuation(next, p.escape);
            line.push_str(&more);
            end = e;
        }
        if empty_continuation {
            p.warnings
                .push(format!("Empty continuation line found in: {line}"));
        }
        let mut node = node_from_line(&line, p.escape).map_err(|m| parse_error(start, m))?;
        node.line = start;
        if node.can_have_heredocs() && line.contains("<<") {
            for mut doc in heredocs_in(&line) {
                let mut terminated = false;
                while i < raw.len() {
                    let l = raw[i];
                    i += 1;
                    let mut candidate = trim_newline(l);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(if doc.chomp {
                        l.trim_start_matches('\t')
                    } else {
                        l
                    });
                }
                if !terminated {
                    return Err(parse_error(start, "unterminated heredoc"));
                }
                node.heredocs.push(doc);
            }
        }
        node.end_line = i;
        p.nodes.push(node);
    }
    if p.nodes.is_empty() {
        return Err(parse_error(raw.len(), "file with no instructions"));
    }
    Ok(p)
}

/// Parser directives: `# name=value` lines at the very top; the first other line ends them.
#[derive(Default)]
struct Directives {
    done: bool,
    seen: Vec<String>,
}

impl Directives {
    fn line(&mut self, line: &str, n: usize, p: &mut Parsed) -> Result<(), Error> {
        if self.done {
            return Ok(());
        }
        let Some(body) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(());
        };
        let body = body.trim_start();
        let Some((name, value)) = body.split_once('=') else {
            self.done = true;
            return Ok(());
        };
        let (name, value) = (name.trim_end(), value.trim());
        let valid_name = name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric());
        let name = name.to_ascii_lowercase();
        if !valid_name || value.is_empty() || !["syntax", "escape", "check"].contains(&&*name) {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&name) {
            return Err(parse_error(
                n,
                format!("only one {name} parser directive can be used"),
            ));
        }
        self.seen.push(name.clone());
        match name.as_str() {
            "escape" => {
                p.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(parse_error(
                            n,
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ))
                    }
                }
            }
            "syntax" => {
                p.warnings.push(format!(
                    "the syntax directive ({value}) is ignored: skiff has its own Dockerfile frontend"
                ));
                p.syntax = Some(value.to_string());
            }
            _ => {}
        }
        Ok(())
    }
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn strip_comment(line: &str) -> &str {
    if is_comment(line) {
        ""
    } else {
        line
    }
}

/// The line without its continuation mark (the escape character, then only blanks), and
/// whether the instruction ends here. An escaped escape character is no mark.
fn continuation(line: &str, escape: char) -> (String, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    if let Some(before) = body.strip_suffix(escape) {
        if !before.ends_with(escape) {
            return (before.to_string(), false);
        }
    }
    (line.to_string(), true)
}

impl Node {
    fn can_have_heredocs(&self) -> bool {
        let (keyword, rest) = if self.keyword == "onbuild" {
            let (k, r) = split_blank(&self.rest);
            (k.to_ascii_lowercase(), r)
        } else {
            (self.keyword.clone(), self.rest.as_str())
        };
        matches!(keyword.as_str(), "add" | "copy" | "run") && json_array(rest).is_none()
    }
}

/// Splits at the first run of blanks (Go's `[\t\v\f\r ]+`).
pub(crate) fn split_blank(s: &str) -> (&str, &str) {
    let blank = |c: char| matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r');
    match s.find(blank) {
        Some(i) => (&s[..i], s[i..].trim_start_matches(blank)),
        None => (s, ""),
    }
}

/// Words separated by blank runs (Go's `reWhitespace.Split`).
pub(crate) fn split_blanks(s: &str) -> Vec<String> {
    s.split([' ', '\t', '\u{b}', '\u{c}', '\r'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The JSON (exec) form: `Some` when `rest` is a JSON array (of anything); the caller then
/// checks that it holds strings only.
pub(crate) fn json_array(rest: &str) -> Option<Vec<serde_json::Value>> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return None;
    }
    serde_json::from_str(rest).ok()
}

pub(crate) fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let (keyword, rest) = split_blank(line.trim());
    let (rest, flags) = builder_flags(rest, escape);
    Ok(Node {
        line: 0,
        end_line: 0,
        keyword: keyword.to_ascii_lowercase(),
        flags,
        rest: rest.trim().to_string(),
        heredocs: Vec::new(),
        original: line.to_string(),
        escape,
    })
}

/// Leading `--flag[=value]` words (quotes and escapes removed); `--` alone ends them.
fn builder_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut rest = line;
    loop {
        let trimmed = rest.trim_start();
        if !trimmed.starts_with("--") {
            return (trimmed, flags);
        }
        let (word, after) = flag_word(trimmed, escape);
        rest = after;
        if word == "--" {
            return (rest, flags);
        }
        flags.push(word);
        if rest.is_empty() {
            return ("", flags);
        }
    }
}

/// One flag word and what follows it.
fn flag_word(s: &str, escape: char) -> (String, &str) {
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            None if c.is_whitespace() => return (word, &s[i..]),
            None if c == '\'' || c == '"' => quote = Some(c),
            Some(q) if c == q => quote = None,
            _ if c == escape => {
                if let Some((_, n)) = chars.next() {
                    word.push(n);
                }
            }
            _ => word.push(c),
        }
    }
    (word, "")
}

/// The heredocs a line opens, in order (`<<EOF`, `<<-EOF`, `<<'EOF'`, `3<<EOF`).
fn heredocs_in(line: &str) -> Vec<Heredoc> {
    let raw = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
        ..Lexer::new('\\')
    };
    raw.words(line, &NoVars)
        .unwrap_or_default()
        .iter()
        .filter_map(|w| heredoc_marker(w))
        .collect()
}

/// `^(\d*)<<(-?)\s*([^<]*)$` with a name that lexes to one word.
pub(crate) fn heredoc_marker(word: &str) -> Option<Heredoc> {
    let after_fd = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let marker = after_fd.strip_prefix("<<")?;
    let (chomp, name) = match marker.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, marker),
    };
    let name = name.trim_start();
    if name.is_empty() || name.contains('<') {
        return None;
    }
    let plain = Lexer {
        skip_unset: true,
        ..Lexer::new('\\')
    };
    let words = plain.words(name, &NoVars).ok()?;
    let [word] = words.as_slice() else {
        return None;
    };
    let raw = Lexer {
        raw_quotes: true,
        ..plain
    };
    let raw_word = raw.words(name, &NoVars).ok()?.join("");
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Some(Heredoc {
        name: word.clone(),
        expand: quotes(word) == quotes(&raw_word),
        chomp,
        content: String::new(),
    })
}

#[cfg(test)]
#[path = "tests/parser.rs"]
mod tests;
