//! Variable substitution in Dockerfile words, as BuildKit's `shell.Lex` does it: `$VAR`,
//! `${VAR}`, `${VAR:-w}`, `${VAR-w}`, `${VAR:+w}`, `${VAR+w}`, `${VAR:?msg}`, `${VAR?msg}`,
//! `${VAR#p}`, `${VAR##p}`, `${VAR%p}`, `${VAR%%p}`, `${VAR/p/r}`, `${VAR//p/r}`; single and
//! double quotes; the escape character. Nothing else of the shell (no command substitution,
//! no arithmetic): RUN, CMD and ENTRYPOINT are not expanded here but by the shell in the image.
//!
//! One deliberate difference: BuildKit's word splitter shares its buffer with nested `${..}`
//! words, so `ProcessWords("ab${X:-y}")` loses `ab`; here it gives `aby` as a shell would.

use crate::pattern::{Glob, Side};

/// Nested `${..}` deeper than this is refused (a hostile Dockerfile must not overflow the stack).
const MAX_DEPTH: usize = 64;

/// How words are lexed; [`Lexer::new`] gives the settings every instruction uses.
#[derive(Clone, Copy, Debug)]
pub struct Lexer {
    pub escape: char,
    /// Keep quote characters in the result (heredoc detection needs them).
    pub raw_quotes: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Leave references to unset variables as they are written.
    pub skip_unset: bool,
    /// Quotes are ordinary characters (COPY heredoc contents).
    pub skip_quotes: bool,
}

/// A substitution error, phrased as BuildKit phrases it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("failed to process \"{source_text}\": {reason}")]
pub struct ShellError {
    pub source_text: String,
    pub reason: String,
}

/// Variable lookup: the build's environment at this point.
pub trait Vars {
    fn var(&self, name: &str) -> Option<&str>;
}

/// No variables at all.
pub struct NoVars;

impl Vars for NoVars {
    fn var(&self, _: &str) -> Option<&str> {
        None
    }
}

impl Vars for [(String, String)] {
    fn var(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Vars for Vec<(String, String)> {
    fn var(&self, name: &str) -> Option<&str> {
        self.as_slice().var(name)
    }
}

impl Lexer {
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_quotes: false,
        }
    }

    /// One word with variables substituted and quotes removed; blanks are kept.
    pub fn word(&self, text: &str, vars: &dyn Vars) -> Result<String, ShellError> {
        self.run(text, vars).map(|(word, _)| word)
    }

    /// The words the text splits into after substitution (blanks outside quotes separate
    /// words, also blanks that a variable's value brings in).
    pub fn words(&self, text: &str, vars: &dyn Vars) -> Result<Vec<String>, ShellError> {
        self.run(text, vars).map(|(_, words)| words)
    }

    fn run(&self, text: &str, vars: &dyn Vars) -> Result<(String, Vec<String>), ShellError> {
        let mut scan = Scan {
            lex: *self,
            chars: text.chars().collect(),
            pos: 0,
            vars,
            depth: 0,
            raw_escapes: self.raw_escapes,
        };
        scan.until(None, self.raw_escapes)
            .map_err(|reason| ShellError {
                source_text: text.to_string(),
                reason,
            })
    }
}

/// Words being collected: blanks end a word, except blanks from quotes or escapes.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_str(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

struct Scan<'a> {
    lex: Lexer,
    chars: Vec<char>,
    pos: usize,
    vars: &'a dyn Vars,
    depth: usize,
    raw_escapes: bool,
}

type Step<T> = Result<T, String>;

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    /// Up to `stop` (consumed) or the end: the joined result and its words.
    fn until(&mut self, stop: Option<char>, raw_escapes: bool) -> Step<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let r = self.until_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn until_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let v = self.dollar()?;
                    result.push_str(&v);
                    words.add_str(&v);
                }
                '<' => {
                    let v = self.possible_heredoc();
                    result.push_str(&v);
                    words.add_raw_str(&v);
                }
                '\'' | '"' if !self.lex.skip_quotes => {
                    let v = if c == '\'' {
                        self.single_quoted()?
                    } else {
                        self.double_quoted()?
                    };
                    result.push_str(&v);
                    words.add_raw_str(&v);
                }
                _ => {
                    self.pos += 1;
                    let mut c = c;
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        match self.next() {
                            Some(n) => c = n,
                            None => break,
                        }
                        words.add_raw_char(c);
                    } else {
                        words.add_char(c);
                    }
                    result.push(c);
                }
            }
        }
        match stop {
            Some(s) => Err(format!(
                "unexpected end of statement while looking for matching {s}"
            )),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quoted(&mut self) -> Step<String> {
        let mut out = String::new();
        self.pos += 1;
        if self.lex.raw_quotes {
            out.push('\'');
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Step<String> {
        let mut out = String::new();
        self.pos += 1;
        if self.lex.raw_quotes {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(mut c) => {
                    self.pos += 1;
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.pos += 1;
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    /// `<<` and the blanks after it stay together (a heredoc marker is one word).
    fn possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.pos += 1;
        let mut out = String::from("<<");
        while let Some(c @ (' ' | '\t' | '\r')) = self.peek() {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.vars.var(name).map(str::to_string)
    }

    fn dollar(&mut self) -> Step<String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.lookup(&name) {
                None if self.lex.skip_unset => format!("${name}"),
                v => v.unwrap_or_default(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        if self.depth >= MAX_DEPTH {
            return Err(format!("substitutions nested deeper than {MAX_DEPTH}"));
        }
        self.depth += 1;
        let r = self.braced();
        self.depth -= 1;
        r
    }

    fn braced(&mut self) -> Step<String> {
        let name = self.name();
        let Some(mut op) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        let mut ops = op.to_string();
        match op {
            '}' => {
                return Ok(match self.lookup(&name) {
                    None if self.lex.skip_unset => format!("${{{name}}}"),
                    v => v.unwrap_or_default(),
                })
            }
            '/' => return self.replace(name),
            ':' | '+' | '-' | '?' | '#' | '%' => {}
            _ => return Err(format!("unsupported modifier ({ops}) in substitution")),
        }
        let null_is_unset = op == ':';
        if null_is_unset {
            op = self.next().unwrap_or('\0');
            ops.push(op);
            if !matches!(op, '+' | '-' | '?' | '#' | '%') {
                if op == '\0' {
                    ops.pop();
                }
                // BuildKit still reads the word before refusing the modifier.
                self.word_until_brace(false)?;
                return Err(format!("unsupported modifier ({ops}) in substitution"));
            }
        }
        let pattern_op = op == '#' || op == '%';
        if null_is_unset && pattern_op {
            return Err(format!("unsupported modifier ({ops}) in substitution"));
        }
        let word = self.word_until_brace(pattern_op)?;
        let value = self.lookup(&name);
        if self.lex.skip_unset && value.is_none() {
            return Ok(format!("${{{name}{ops}{word}}}"));
        }
        let empty = value
            .as_deref()
            .is_none_or(|v| null_is_unset && v.is_empty());
        match op {
            '-' => Ok(if empty {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if empty { String::new() } else { word }),
            '?' => match value {
                None => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    }
                )),
                Some(v) if null_is_unset && v.is_empty() => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        &word
                    }
                )),
                Some(v) => Ok(v),
            },
            _ => {
                let (greedy, pat) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let side = if op == '#' {
                    Side::Prefix
                } else {
                    Side::Suffix
                };
                let glob = Glob::parse(pat)
                    .map_err(|e| format!("invalid pattern ({pat}) in substitution: {e}"))?;
                glob.trim(&value.unwrap_or_default(), side, greedy)
            }
        }
    }

    fn word_until_brace(&mut self, raw_escapes: bool) -> Step<String> {
        match self.until(Some('}'), raw_escapes) {
            Ok((w, _)) => Ok(w),
            Err(_) if self.peek().is_none() => Err("syntax error: missing '}'".into()),
            Err(e) => Err(e),
        }
    }

    /// `${NAME/pattern/replacement}` and `${NAME//pattern/replacement}`.
    fn replace(&mut self, name: String) -> Step<String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = match self.until(Some('/'), true) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => {
                return Err("syntax error: missing '/' in ${}".into())
            }
            Err(e) => return Err(e),
        };
        let replacement = self.word_until_brace(true)?;
        let Some(value) = self.lookup(&name) else {
            if self.lex.skip_unset {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let glob = Glob::parse(&pattern)
            .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
        glob.replace(&value, &replacement, all)
    }

    /// A variable name: letters, digits and `_`; or all digits (positional); or one special
    /// parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_numeric() {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }
}

#[cfg(test)]
#[path = "tests/shell.rs"]
mod tests;
