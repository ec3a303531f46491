//! The words of ARG, ENV and LABEL: `k=v` pairs (quotes kept for the expansion to remove)
//! and ENV's old `ENV k the value` form, as BuildKit's `parseNameVal` splits them.

use crate::instructions::at_least_one;
use crate::parser::{split_blank, Node};

/// BuildKit's `parseWords`: blank-separated words; quotes group but are kept, as is the
/// escape character with what it escapes (the expansion removes them later).
pub(crate) fn name_value_words(rest: &str, node: &Node) -> Vec<String> {
    let escape = node.escape;
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    match chars.next() {
                        Some(n) => {
                            word.push(c);
                            word.push(n);
                        }
                        None => continue,
                    }
                } else {
                    word.push(c);
                }
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    match chars.next() {
                        Some(n) => {
                            word.push(c);
                            word.push(n);
                        }
                        None => quote = None,
                    }
                } else {
                    word.push(c);
                }
            }
        }
    }
    if blank_ok || !word.is_empty() {
        words.push(word);
    }
    words
}

/// ENV and LABEL: `k=v ...`, or the old `ENV k the value` form.
pub(crate) fn name_values(
    rest: &str,
    node: &Node,
) -> std::result::Result<Vec<(String, String)>, String> {
    let kw = node.keyword.to_uppercase();
    let words = name_value_words(rest, node);
    if words.is_empty() {
        return Err(at_least_one(&kw));
    }
    let pairs: Vec<(String, String)> = if !words[0].contains('=') {
        let (k, v) = split_blank(rest);
        if v.is_empty() {
            return Err(format!("{kw} must have two arguments"));
        }
        vec![(k.to_string(), v.to_string())]
    } else {
        let mut pairs = Vec::new();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(format!(
                    "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
                ));
            };
            pairs.push((k.to_string(), v.to_string()));
        }
        pairs
    };
    if pairs.iter().any(|(k, _)| k.is_empty()) {
        return Err(format!("{kw} names can not be blank"));
    }
    Ok(pairs)
}
