//! The `skiff` command line: one module per group of subcommands.

pub mod build;
pub mod containers;
pub mod health;
pub mod images;
pub mod manifest;
pub mod networks;
pub mod push;
pub mod remote;
pub mod volumes;

/// `--label KEY=VALUE` flags as a map (a bare `KEY` has an empty value, as docker's).
pub(crate) fn labels_map(labels: &[String]) -> std::collections::BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Calls `call` for each of `names` in order, printing each failure on stderr as docker does;
/// returns what succeeded and the exit code (1 when any failed).
pub(crate) async fn each<T, E, F, Fut>(names: &[String], mut call: F) -> (Vec<T>, i32)
where
    E: std::fmt::Display,
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut done = Vec::new();
    let mut code = 0;
    for name in names {
        match call(name.clone()).await {
            Ok(t) => done.push(t),
            Err(e) => {
                eprintln!("{e}");
                code = 1;
            }
        }
    }
    (done, code)
}
