//! History `created_by` texts as Docker's classic builder writes them (`docker history`
//! shows them; they are part of the build cache key).

use skiff_images::manifest::HealthConfig;

/// A metadata step: `/bin/sh -c #(nop)  ENV A=b` (the shell is the stage's SHELL).
pub fn nop(shell: &[String], text: &str) -> String {
    let mut parts: Vec<&str> = shell.iter().map(String::as_str).collect();
    parts.push("#(nop) ");
    parts.push(text);
    parts.join(" ")
}

/// RUN: the argv joined by blanks, after `|N K=V ...` when build args are in effect.
pub fn run(argv: &[String], build_args: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !build_args.is_empty() {
        parts.push(format!("|{}", build_args.len()));
        parts.extend(build_args.iter().cloned());
    }
    parts.extend(argv.iter().cloned());
    parts.join(" ")
}

/// Go's `%q` of a string slice: `["a" "b c"]`.
pub fn go_quoted(words: &[String]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| go_quote(w)).collect();
    format!("[{}]", quoted.join(" "))
}

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `HEALTHCHECK &{["CMD-SHELL" "curl x"] "30s" "3s" "0s" "0s" '\x03'}` (Go's `%q` of the
/// struct, as `docker history` shows it).
pub fn healthcheck(h: &HealthConfig) -> String {
    let d = |ns: i64| go_quote(&go_duration(ns));
    format!(
        "HEALTHCHECK &{{{} {} {} {} {} '\\x{:02x}'}}",
        go_quoted(&h.test),
        d(h.interval),
        d(h.timeout),
        d(h.start_period),
        d(h.start_interval),
        h.retries
    )
}

/// Go's `time.Duration.String` for the whole-millisecond-and-up values HEALTHCHECK allows.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.unsigned_abs();
    if ns < 1_000_000_000 {
        let (unit, div) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", fraction(ns, div));
    }
    let (h, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, s) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", fraction(s, 1_000_000_000)));
    out
}

/// `n / div` with the fraction's trailing zeros dropped (`1.5`, `2`).
fn fraction(n: u64, div: u64) -> String {
    let (whole, frac) = (n / div, n % div);
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_the_classic_builder() {
        let sh = ["/bin/sh".to_string(), "-c".to_string()];
        assert_eq!(nop(&sh, "ENV A=b"), "/bin/sh -c #(nop)  ENV A=b");
        let argv: Vec<String> = ["/bin/sh", "-c", "make"].map(String::from).to_vec();
        assert_eq!(run(&argv, &[]), "/bin/sh -c make");
        assert_eq!(run(&argv, &["V=1".into()]), "|1 V=1 /bin/sh -c make");
        let cmd: Vec<String> = ["nginx", "-g", "daemon off;"].map(String::from).to_vec();
        assert_eq!(go_quoted(&cmd), r#"["nginx" "-g" "daemon off;"]"#);
        assert_eq!(go_quoted(&["a\"b\\".to_string()]), r#"["a\"b\\"]"#);
        for (ns, s) in [
            (0, "0s"),
            (30_000_000_000, "30s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (1_500_000_000, "1.5s"),
            (250_000_000, "250ms"),
        ] {
            assert_eq!(go_duration(ns), s);
        }
        let h = HealthConfig {
            test: vec!["CMD-SHELL".into(), "curl x".into()],
            interval: 30_000_000_000,
            timeout: 3_000_000_000,
            retries: 3,
            ..HealthConfig::default()
        };
        assert_eq!(
            healthcheck(&h),
            r#"HEALTHCHECK &{["CMD-SHELL" "curl x"] "30s" "3s" "0s" "0s" '\x03'}"#
        );
    }
}
