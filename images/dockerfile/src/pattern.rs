//! The shell patterns of `${VAR#p}`, `${VAR%p}` and `${VAR/p/r}`: `*` and `?` over one line,
//! `\*`, `\?`, `\\` literal. BuildKit turns them into a Go regular expression (`.*`, `.*?`, `.`;
//! `.` matching no newline) searched leftmost-first; a backtracking matcher that tries the
//! preferred length first finds the same match. A step budget bounds hostile patterns.

/// Steps one pattern operation may take before it is refused.
const MAX_STEPS: usize = 1_000_000;
/// Wildcards in one pattern (each is a level of backtracking).
const MAX_STARS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Prefix,
    Suffix,
}

#[derive(Clone, Debug)]
pub struct Glob(Vec<Tok>);

impl Glob {
    pub fn parse(pattern: &str) -> Result<Glob, String> {
        let mut toks = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            toks.push(match c {
                '*' => Tok::Star,
                '?' => Tok::Any,
                '\\' => match chars.peek() {
                    // `\}` and `\/` mean the character itself.
                    Some('}' | '/') => continue,
                    Some(&e @ ('*' | '?' | '\\')) => {
                        chars.next();
                        Tok::Lit(e)
                    }
                    Some(&e) => return Err(format!("invalid escape '\\{e}'")),
                    None => return Err("invalid escape '\\'".into()),
                },
                c => Tok::Lit(c),
            });
        }
        if toks.iter().filter(|t| **t == Tok::Star).count() > MAX_STARS {
            return Err(format!("more than {MAX_STARS} wildcards"));
        }
        Ok(Glob(toks))
    }

    /// `${V#p}` / `${V##p}` (prefix) and `${V%p}` / `${V%%p}` (suffix); `greedy` for the
    /// doubled form.
    pub fn trim(&self, value: &str, side: Side, greedy: bool) -> Result<String, String> {
        let mut chars: Vec<char> = value.chars().collect();
        let mut toks = self.0.clone();
        if side == Side::Suffix {
            chars.reverse();
            toks.reverse();
        }
        let mut m = Matcher::new(&toks, &chars, greedy);
        let end = m.at(0, 0).unwrap_or(0);
        m.check()?;
        let mut rest = chars[end..].to_vec();
        if side == Side::Suffix {
            rest.reverse();
        }
        Ok(rest.into_iter().collect())
    }

    /// The first match (or every one) replaced by `replacement`, as Go's `ReplaceAllString`
    /// walks a string (an empty match right after a match is not replaced).
    pub fn replace(&self, value: &str, replacement: &str, all: bool) -> Result<String, String> {
        let chars: Vec<char> = value.chars().collect();
        let mut m = Matcher::new(&self.0, &chars, true);
        let mut out = String::new();
        let (mut search, mut last_end) = (0, 0);
        while search <= chars.len() {
            let Some((a, b)) = m.find(search) else { break };
            out.extend(&chars[last_end..a]);
            if b > last_end || a == 0 {
                out.push_str(replacement);
            }
            last_end = b;
            if !all {
                break;
            }
            search = if search + 1 > b { search + 1 } else { b };
        }
        m.check()?;
        out.extend(&chars[last_end..]);
        Ok(out)
    }
}

struct Matcher<'a> {
    toks: &'a [Tok],
    chars: &'a [char],
    greedy: bool,
    steps: usize,
    /// (token, position) pairs known not to match: each is explored once.
    failed: std::collections::HashSet<(usize, usize)>,
}

impl<'a> Matcher<'a> {
    fn new(toks: &'a [Tok], chars: &'a [char], greedy: bool) -> Matcher<'a> {
        Matcher {
            toks,
            chars,
            greedy,
            steps: 0,
            failed: Default::default(),
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.steps > MAX_STEPS {
            return Err("the pattern is too costly to match".into());
        }
        Ok(())
    }

    /// The leftmost match starting at or after `from`: (start, end).
    fn find(&mut self, from: usize) -> Option<(usize, usize)> {
        (from..=self.chars.len()).find_map(|s| self.at(0, s).map(|e| (s, e)))
    }

    /// Where a match of `toks[ti..]` starting at `ci` ends, preferring what the regexp
    /// would (longest star first when greedy, shortest otherwise).
    fn at(&mut self, mut ti: usize, mut ci: usize) -> Option<usize> {
        let start = (ti, ci);
        loop {
            self.steps += 1;
            if self.steps > MAX_STEPS || self.failed.contains(&(ti, ci)) {
                return None;
            }
            match self.toks.get(ti) {
                None => return Some(ci),
                Some(Tok::Lit(c)) if self.chars.get(ci) == Some(c) => {}
                Some(Tok::Any) if self.chars.get(ci).is_some_and(|c| *c != '\n') => {}
                Some(Tok::Star) => {
                    let run = self.chars[ci..].iter().take_while(|c| **c != '\n').count();
                    let lens: Box<dyn Iterator<Item = usize>> = if self.greedy {
                        Box::new((0..=run).rev())
                    } else {
                        Box::new(0..=run)
                    };
                    for k in lens {
                        if let Some(end) = self.at(ti + 1, ci + k) {
                            return Some(end);
                        }
                        if self.steps > MAX_STEPS {
                            return None;
                        }
                    }
                    self.failed.insert(start);
                    return None;
                }
                Some(_) => {
                    self.failed.insert(start);
                    return None;
                }
            }
            ti += 1;
            ci += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_replaces_like_the_regexps() {
        let glob = |p: &str| Glob::parse(p).unwrap();
        struct G(Glob);
        impl G {
            fn trim(&self, v: &str, side: Side, greedy: bool) -> String {
                self.0.trim(v, side, greedy).unwrap()
            }
            fn replace(&self, v: &str, r: &str, all: bool) -> String {
                self.0.replace(v, r, all).unwrap()
            }
        }
        let g = |p: &str| G(glob(p));
        assert_eq!(g("*/").trim("a/b/c", Side::Prefix, false), "b/c");
        assert_eq!(g("*/").trim("a/b/c", Side::Prefix, true), "c");
        assert_eq!(g("/*").trim("a/b/c", Side::Suffix, false), "a/b");
        assert_eq!(g("/*").trim("a/b/c", Side::Suffix, true), "a");
        assert_eq!(g("x").trim("abc", Side::Prefix, false), "abc");
        assert_eq!(g("a?").trim("abc", Side::Prefix, false), "c");
        assert_eq!(g("\\*").trim("*x", Side::Prefix, false), "x");
        assert_eq!(g("o").replace("foo", "0", false), "f0o");
        assert_eq!(g("o").replace("foo", "0", true), "f00");
        assert_eq!(g("").replace("ab", "-", true), "-a-b-");
        assert_eq!(g("x*").replace("ab", "-", true), "ab");
        assert_eq!(g("*").replace("a\nb", "-", true), "-\n-");
        assert!(Glob::parse("\\q").is_err());
        assert!(Glob::parse(&"*".repeat(65)).is_err());
    }

    #[test]
    fn hostile_patterns_end() {
        let value = "a".repeat(5000);
        let g = Glob::parse(&"*a".repeat(60)).unwrap();
        assert_eq!(
            g.trim(&(value.clone() + "b"), Side::Prefix, true).unwrap(),
            "b"
        );
        let never = Glob::parse(&("*a".repeat(60) + "c")).unwrap();
        let costly = never.trim(&value, Side::Prefix, true);
        assert!(costly.unwrap_err().contains("too costly"));
        assert!(never.replace(&value, "x", true).is_err());
    }
}
