//! Import (`docker save` tarballs, OCI archives, OCI layout directories) and export (OCI
//! archives).

use std::path::Path;

use crate::error::Result;
use crate::store::{ImageRecord, Store};

pub fn load(_store: &Store, _path: &Path) -> Result<Vec<ImageRecord>> {
    todo!()
}

pub fn save(_store: &Store, _rec: &ImageRecord, _path: &Path) -> Result<()> {
    todo!()
}
