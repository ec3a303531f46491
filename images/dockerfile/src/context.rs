//! The build context: which files a COPY or ADD takes, and where they go.

use skiff_images::commit::clean;

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
