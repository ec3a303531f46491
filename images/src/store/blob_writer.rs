//! Blobs on their way into the store.

use std::io::Write;
use std::path::PathBuf;

use super::{check_digest, Store};
use crate::digest::{Digest, Hasher, HashingWriter};
use crate::error::{Error, IoContext, Result};

impl Store {
    pub fn blob_writer(&self, limit: u64, what: &str) -> Result<BlobWriter> {
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.tmp_dir())
            .at("cannot create temporary file in", self.tmp_dir())?;
        Ok(BlobWriter {
            out: HashingWriter {
                inner: file,
                hasher: Hasher::default(),
            },
            limit,
            what: what.to_string(),
            store_blobs: self.dir.join("blobs/sha256"),
        })
    }
}

/// A blob being written to tmp/: hashed and size-capped on the way, renamed into blobs/ only
/// when it matches what was expected. Dropped without `commit`, it leaves nothing behind.
pub struct BlobWriter {
    out: HashingWriter<tempfile::NamedTempFile>,
    limit: u64,
    what: String,
    store_blobs: PathBuf,
}

impl BlobWriter {
    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        if self.out.hasher.len() + buf.len() as u64 > self.limit {
            return Err(Error::TooLarge {
                what: format!("{} (more than its descriptor says)", self.what),
                limit: self.limit,
            });
        }
        let path = self.out.inner.path().to_path_buf();
        self.out.write_all(buf).at("cannot write", path)
    }

    pub fn written(&self) -> u64 {
        self.out.hasher.len()
    }

    /// Verifies size and digest against `expected` (if any) and moves the blob into place.
    /// `expected`: the digest and, when known, the size.
    pub fn commit(self, expected: Option<(&Digest, Option<u64>)>, what: &str) -> Result<Digest> {
        let len = self.out.hasher.len();
        let file = self.out.inner;
        let digest = self.out.hasher.finish();
        if let Some((want, size)) = expected {
            if let Some(size) = size.filter(|s| *s != len) {
                return Err(Error::SizeMismatch {
                    what: what.to_string(),
                    expected: size,
                    actual: len,
                });
            }
            check_digest(what, want, &digest)?;
        }
        // Stays 0600 as created: blobs are the store owner's alone.
        let dest = self.store_blobs.join(digest.hex());
        file.persist(&dest)
            .map_err(|e| e.error)
            .at("cannot move blob to", &dest)?;
        Ok(digest)
    }
}
