//! Strict parsing of query parameters: a value that does not parse is a 400 naming the parameter.

use std::str::FromStr;

use super::error::ApiError;
use super::options::Filters;

/// The decoded `?a=b&c=d` of a request; the last of repeated parameters counts, as in Go's
/// `r.Form.Get`… except repeated list parameters, read with `all`.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

fn bad(name: &str, value: &str, expected: &str) -> ApiError {
    ApiError::bad_request(format!(
        "invalid value for query parameter \"{name}\": \"{value}\" ({expected})"
    ))
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Query { pairs }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter (`names=a&names=b`).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A non-empty string value.
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).map(str::to_string)
    }

    /// Go's and Python's spellings of booleans (docker-py sends `True`); absent or empty: false.
    pub fn bool(&self, name: &str) -> Result<bool, ApiError> {
        self.bool_or(name, false)
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        match v.to_ascii_lowercase().as_str() {
            "" => Ok(default),
            "1" | "t" | "true" | "yes" => Ok(true),
            "0" | "f" | "false" | "no" | "none" => Ok(false),
            _ => Err(bad(name, v, "expected a boolean: 1, 0, true or false")),
        }
    }

    /// A number; absent or empty: None.
    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| bad(name, v, "expected a number")),
        }
    }

    /// `filters`: JSON `{"key": ["value", …]}`, or the older `{"key": {"value": true}}`.
    pub fn filters(&self) -> Result<Filters, ApiError> {
        let Some(text) = self.get("filters").filter(|t| !t.is_empty()) else {
            return Ok(Filters::new());
        };
        let expected = "expected a JSON object of lists of strings";
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| bad("filters", text, expected))?;
        let object = value
            .as_object()
            .ok_or_else(|| bad("filters", text, expected))?;
        let mut out = Filters::new();
        for (key, values) in object {
            let list = match values {
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>(),
                serde_json::Value::Object(set) => Some(
                    set.iter()
                        .filter(|(_, on)| on.as_bool() == Some(true))
                        .map(|(k, _)| k.clone())
                        .collect(),
                ),
                _ => None,
            };
            out.insert(
                key.clone(),
                list.ok_or_else(|| bad("filters", text, expected))?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_in_go_and_python_spellings() {
        let q = Query::parse(Some("a=1&b=True&c=false&d=&e=maybe"));
        assert_eq!(q.bool("a"), Ok(true));
        assert_eq!(q.bool("b"), Ok(true));
        assert_eq!(q.bool("c"), Ok(false));
        assert_eq!(q.bool_or("d", true), Ok(true));
        assert_eq!(q.bool("missing"), Ok(false));
        let err = q.bool("e").unwrap_err();
        assert_eq!(err.status, hyper::StatusCode::BAD_REQUEST);
        assert!(err.message.contains("\"e\""), "{}", err.message);
    }

    #[test]
    fn numbers_name_the_parameter() {
        let q = Query::parse(Some("t=5&tail=all"));
        assert_eq!(q.number::<i64>("t"), Ok(Some(5)));
        assert!(q
            .number::<usize>("tail")
            .unwrap_err()
            .message
            .contains("tail"));
    }

    #[test]
    fn filters_both_forms() {
        let q = Query::parse(Some(
            "filters=%7B%22status%22%3A%5B%22exited%22%5D%2C%22label%22%3A%7B%22k%3Dv%22%3Atrue%7D%7D",
        ));
        let f = q.filters().unwrap();
        assert_eq!(f["status"], vec!["exited"]);
        assert_eq!(f["label"], vec!["k=v"]);
        assert!(Query::parse(Some("filters=%5B1%5D")).filters().is_err());
    }
}
