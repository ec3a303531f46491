//! Files read from places a user named (OCI layout directories, Docker's config.json): regular
//! files only, read with a cap, as the same documents inside an archive are.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Opens `path` for reading, refusing anything but a regular file (symlinks are followed to
/// what they name): a FIFO would hang the read, a device such as /dev/zero never end it.
/// O_NONBLOCK keeps the open itself from waiting on a FIFO.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// A small document: a regular file of at most `max` bytes.
pub fn read_small_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = open_regular(path).at("cannot read", path)?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .at("cannot read", path)?;
    if bytes.len() as u64 > max {
        return Err(Error::TooLarge {
            what: path.display().to_string(),
            limit: max,
        });
    }
    Ok(bytes)
}
