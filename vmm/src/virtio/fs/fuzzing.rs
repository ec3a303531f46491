//! virtio-fs for the fuzz targets (`fuzzing` feature): the worker's request handling, run on the
//! calling thread over a directory the target chose.

use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::{CopyFileRangeIn, FallocateIn, InHeader, MknodIn, Opcode};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::Reader;
use virtio_queue::{DescriptorChain, Queue};

use super::{handle_request, FsError, FsServer, GuestMem, SharedDirFs, Sharing};
use crate::virtio::queue_service::serve_available;

/// Most bytes one request may make the host allocate or copy (fallocate, copy_file_range).
const MAX_GROWTH: u64 = 64 << 20;

/// The FUSE server of a device, without its worker thread.
pub struct FsHarness {
    server: FsServer,
}

impl FsHarness {
    pub fn new(dir: &Path) -> Result<FsHarness, FsError> {
        let root = dir
            .to_str()
            .ok_or_else(|| FsError::NonUtf8Path(dir.to_owned()))?
            .to_owned();
        let fs =
            SharedDirFs::new(root, Sharing::Exclusive).map_err(|source| FsError::Passthrough {
                path: dir.to_owned(),
                source,
            })?;
        Ok(FsHarness {
            server: Server::new(fs),
        })
    }

    /// Serves every available chain as the worker does. Requests that would reach the fuzzing
    /// host's own devices (the fuzzer runs as root, on no `nodev` mount) or fill its disk are
    /// answered with nothing instead.
    pub fn serve(&self, queue: &mut Queue, mem: &GuestMem) -> usize {
        serve_available(queue, mem, |chain| {
            if harmful(mem, &chain) {
                return 0;
            }
            handle_request(&self.server, mem, chain)
        })
    }
}

fn harmful(mem: &GuestMem, chain: &DescriptorChain<&GuestMem>) -> bool {
    let Ok(mut r) = Reader::from_descriptor_chain(mem, chain.clone()) else {
        return false;
    };
    let Ok(header) = r.read_obj::<InHeader>() else {
        return false;
    };
    match header.opcode {
        op if op == Opcode::Mknod as u32 => r.read_obj::<MknodIn>().is_ok_and(|m| {
            matches!(m.mode & libc::S_IFMT, libc::S_IFBLK | libc::S_IFCHR) && m.rdev != 0
        }),
        op if op == Opcode::Fallocate as u32 => r
            .read_obj::<FallocateIn>()
            .is_ok_and(|f| f.offset.saturating_add(f.length) > MAX_GROWTH),
        op if op == Opcode::CopyFileRange as u32 => r
            .read_obj::<CopyFileRangeIn>()
            .is_ok_and(|c| c.len > MAX_GROWTH || c.offset_out > MAX_GROWTH),
        _ => false,
    }
}
