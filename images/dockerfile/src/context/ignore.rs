//! `.dockerignore`, with Docker's semantics (moby's `patternmatcher`): one pattern a line,
//! lines starting with `#` are comments, blanks trimmed, each pattern cleaned as Go's
//! `filepath.Clean` does and a leading `/` dropped; `!` makes an exception; the last pattern
//! that matches a path (or one of its parent directories) decides. Within a path element `*`,
//! `?`, `[...]` (`^` negates, ranges) and `\` escapes are Go's `filepath.Match`; `**` as a
//! whole element matches any number of elements.

use skiff_images::commit::clean;

#[derive(Clone, Debug, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Clone, Debug)]
struct Pattern {
    elements: Vec<String>,
    exception: bool,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let raw = if n == 0 {
                raw.trim_start_matches('\u{feff}')
            } else {
                raw
            };
            if raw.starts_with('#') {
                continue;
            }
            let mut p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let exception = p.starts_with('!');
            if exception {
                p = p[1..].trim();
            }
            if p.is_empty() {
                continue;
            }
            let cleaned = clean(p);
            let cleaned = cleaned.strip_prefix('/').unwrap_or(&cleaned);
            if cleaned.is_empty() {
                continue;
            }
            patterns.push(Pattern {
                elements: cleaned.split('/').map(str::to_string).collect(),
                exception,
            });
        }
        Ignore { patterns }
    }

    /// Whether some pattern is an exception (a directory excluded as a whole may then still
    /// hold files to keep: its walk must go on).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether `path` (relative to the context, `/`-separated, clean) is excluded.
    pub fn excludes(&self, path: &str) -> bool {
        let elements: Vec<&str> = path.split('/').filter(|e| !e.is_empty()).collect();
        if elements.is_empty() {
            return false;
        }
        let mut excluded = false;
        for p in &self.patterns {
            // An exclusion cannot change an excluded path, nor an exception a kept one.
            if p.exception != excluded {
                continue;
            }
            // The path itself, or one of its parent directories.
            let hit = (1..=elements.len()).any(|n| match_elements(&p.elements, &elements[..n]));
            if hit {
                excluded = !p.exception;
            }
        }
        excluded
    }
}

/// Whether a pattern's elements match a path's, `**` spanning any number of elements (a
/// trailing `**` at least one, as moby's `a/**` regexp `^a/.*$` needs something after `a/`).
pub(crate) fn match_elements(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            if rest.is_empty() {
                !path.is_empty()
            } else {
                (0..=path.len()).any(|skip| match_elements(rest, &path[skip..]))
            }
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, tail)) => match_element(first, name) && match_elements(rest, tail),
            None => false,
        },
    }
}

/// Go's `filepath.Match` for one element (no `/` on either side). The two-pointer walk
/// (back to the last `*` on a mismatch) takes O(pattern × name) steps, hostile patterns too.
pub fn match_element(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // (pattern index after the last `*`, name index it was tried at)
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() && p[pi] == '*' {
            pi += 1;
            star = Some((pi, ni));
            continue;
        }
        if ni == n.len() && pi == p.len() {
            return true;
        }
        if let Some(used) = one(&p[pi..], n.get(ni)) {
            pi += used;
            ni += 1;
            continue;
        }
        match star {
            Some((sp, sn)) if sn < n.len() => {
                star = Some((sp, sn + 1));
                pi = sp;
                ni = sn + 1;
            }
            _ => return false,
        }
    }
}

/// Whether the pattern's next token (not a `*`) matches `c`: the characters it used.
fn one(p: &[char], c: Option<&char>) -> Option<usize> {
    let c = *c?;
    match *p.first()? {
        '?' => Some(1),
        '[' => match class(&p[1..], c) {
            Some((true, used)) => Some(used + 1),
            _ => None,
        },
        '\\' if p.len() > 1 => (p[1] == c).then_some(2),
        l => (l == c).then_some(1),
    }
}

/// A `[...]` class (after the `[`) against `c`: (matched, characters up to the `]`), None when
/// it is not closed (Go: a bad pattern, which matches nothing).
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = p.first() == Some(&'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = if p[i] == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            p[i]
        };
        i += 1;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|h| *h != ']') {
            i += 1;
            let h = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
            h
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    None
}

/// Whether a COPY source has wildcards (unescaped `*`, `?` or `[`).
pub fn has_wildcards(source: &str) -> bool {
    let mut escaped = false;
    for c in source.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_match_like_go_filepath_match() {
        assert!(match_element("*.txt", "a.txt"));
        assert!(!match_element("*.txt", "a.txd"));
        assert!(match_element("a?c", "abc"));
        assert!(match_element("[a-c]x", "bx"));
        assert!(!match_element("[^a-c]x", "bx"));
        assert!(match_element("[^a-c]x", "dx"));
        assert!(match_element("\\*", "*"));
        assert!(!match_element("\\*", "a"));
        assert!(!match_element("[ab", "a"));
        assert!(match_element("*", ""));
        assert!(!match_element(&"*a".repeat(100), &"a".repeat(50)));
        assert!(has_wildcards("a*") && has_wildcards("[x]") && !has_wildcards("a\\*"));
    }

    #[test]
    fn dockerignore_semantics() {
        let ig = Ignore::parse(
            "\u{feff}# comment\n  *.log \n/build\n./tmp/*\n!keep.log\n**/secret\nnode_modules\n \
             #notacomment\ndocs/**\n!docs/README.md\n",
        );
        assert!(ig.excludes("a.log"));
        assert!(!ig.excludes("keep.log"));
        assert!(!ig.excludes("dir/a.log"), "* does not cross /");
        assert!(ig.excludes("build"));
        assert!(ig.excludes("build/x/y"), "a parent directory matches");
        assert!(ig.excludes("tmp/x"));
        assert!(!ig.excludes("tmp"));
        assert!(ig.excludes("secret"));
        assert!(ig.excludes("a/b/secret"));
        assert!(ig.excludes("a/b/secret/inner"));
        assert!(ig.excludes("node_modules/x/y.js"));
        assert!(!ig.excludes("src/node_modules"), "anchored at the root");
        assert!(
            ig.excludes("#notacomment"),
            "only a # in column 0 starts a comment"
        );
        assert!(ig.excludes("docs/a/b"));
        assert!(!ig.excludes("docs/README.md"));
        assert!(!ig.excludes("docs"), "docs/** needs something below docs");
        assert!(ig.has_exceptions());
        let all = Ignore::parse("**\n!src\n");
        assert!(all.excludes("x"));
        assert!(!all.excludes("src"));
        assert!(
            !all.excludes("src/a"),
            "the exception holds for what is below src"
        );
        let later = Ignore::parse("*\n!a\na\n");
        assert!(later.excludes("a"), "the last matching pattern wins");
        assert!(!Ignore::parse("").excludes("x"));
        let dots = Ignore::parse("a/../b\n!\n/\n.\n");
        assert!(dots.excludes("b") && !dots.excludes("a"));
    }
}
