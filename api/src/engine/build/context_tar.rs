//! The build context as the client sends it: a tar, plain or gzip, spooled to the store's
//! private tmp/ and unpacked by the image unpacker with the same care as a layer (no absolute
//! names, no `..`, no link leading out, device nodes skipped, sizes and entries capped). A
//! name starting with `.wh.` is read as a whiteout there, as in a layer.

use std::io::Read;
use std::path::Path;

use futures_util::StreamExt;
use skiff_images::manifest::Compression;
use skiff_images::store::Store;
use skiff_images::unpack::{apply_layer, DevicePolicy, ImageBudget, UnpackOptions, Whiteouts};
use tokio::io::AsyncWriteExt;

use crate::daemon::options::ByteStream;

/// Spools `body` and unpacks it into `dir` (an empty directory).
pub async fn unpack(mut body: ByteStream, dir: &Path, store: &Store) -> Result<(), String> {
    let unpack = UnpackOptions {
        devices: DevicePolicy::Skip,
        ..store.config.unpack
    };
    let cap = unpack.limits.max_bytes;
    let tmp = tempfile::NamedTempFile::new_in(store.tmp_dir()).map_err(|e| e.to_string())?;
    let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(|e| e.to_string())?);
    let mut spooled: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("reading the build context: {e}"))?;
        spooled += chunk.len() as u64;
        if spooled > cap {
            return Err(format!("the build context is larger than {cap} bytes"));
        }
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    file.flush().await.map_err(|e| e.to_string())?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = tmp.reopen().map_err(|e| e.to_string())?;
        let mut magic = [0u8; 2];
        let n = f.read(&mut magic).map_err(|e| e.to_string())?;
        if n == 0 {
            // An empty body: an empty context (`docker build - < Dockerfile` sends the file).
            return Ok(());
        }
        let compression = if magic == [0x1f, 0x8b] {
            Compression::Gzip
        } else {
            Compression::None
        };
        let f = tmp.reopen().map_err(|e| e.to_string())?;
        let budget = ImageBudget::new(&unpack.limits);
        apply_layer(f, compression, &dir, Whiteouts::Apply, &unpack, &budget)
            .map(|_| ())
            .map_err(|e| format!("the build context: {e}"))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The Dockerfile at `name` inside the context: a regular file reached without symlinks or
/// `..`, at most 1 MiB.
pub fn read_dockerfile(context: &Path, name: &str) -> Result<Vec<u8>, String> {
    let missing = || format!("Cannot locate specified Dockerfile: {name}");
    let mut path = context.to_path_buf();
    for el in name.split('/').filter(|e| !e.is_empty() && *e != ".") {
        if el == ".." {
            return Err(format!(
                "the Dockerfile ({name}) must be within the build context"
            ));
        }
        path.push(el);
        let meta = std::fs::symlink_metadata(&path).map_err(|_| missing())?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "the Dockerfile ({name}) is reached through a symlink"
            ));
        }
    }
    let meta = std::fs::symlink_metadata(&path).map_err(|_| missing())?;
    if !meta.is_file() {
        return Err(missing());
    }
    if meta.len() > 1 << 20 {
        return Err(format!("the Dockerfile ({name}) is larger than 1 MiB"));
    }
    std::fs::read(&path).map_err(|e| format!("{name}: {e}"))
}

/// `.dockerignore` at the context's root, when it is a regular file.
pub fn read_ignore(context: &Path) -> skiff_dockerfile::context::Ignore {
    let path = context.join(".dockerignore");
    let text = match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() <= 1 << 20 => {
            std::fs::read_to_string(&path).unwrap_or_default()
        }
        _ => String::new(),
    };
    skiff_dockerfile::context::Ignore::parse(&text)
}
