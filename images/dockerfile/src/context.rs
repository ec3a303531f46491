//! The build context: which files a COPY or ADD takes, and where they go.

/// The destination of a COPY/ADD, absolute: relative ones are taken from WORKDIR; a trailing
/// `/` is kept (it says "a directory").
pub fn join_dest(workdir: &str, dest: &str) -> String {
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    let dir = dest.ends_with('/') || dest.ends_with("/.") || dest == ".";
    let mut clean = clean(&joined);
    if dir && !clean.ends_with('/') {
        clean.push('/');
    }
    clean
}

/// Lexical cleaning as Go's `path.Clean` for absolute paths.
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
