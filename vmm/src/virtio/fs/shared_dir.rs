//! The file system behind a share: fuse-backend-rs' `PassthroughFs`, configured for a guest that
//! owns the directory, plus the FUSE INIT options `PassthroughFs` does not ask for itself.
//!
//! Without BIG_WRITES/MAX_PAGES the kernel caps every WRITE at one page; without ASYNC_READ and
//! PARALLEL_DIROPS it serialises readahead and lookups. Everything else is passed through as is,
//! once `policy` has refused or defused what a guest must not do to the host.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{
    stat64, statvfs64, CreateIn, FsOptions, OpenOptions, SetattrValid,
};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, GetxattrReply, ListxattrReply, ZeroCopyReader,
    ZeroCopyWriter,
};
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};

use super::policy;

type Inode = <PassthroughFs<()> as FileSystem>::Inode;
type Handle = <PassthroughFs<()> as FileSystem>::Handle;

/// A share the guest has to itself (its root): what it caches stays true for as long as it likes.
const EXCLUSIVE_CACHE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// A volume others may change too (the host, other containers): virtiofsd's `auto` policy.
const SHARED_CACHE_TIMEOUT: Duration = Duration::from_secs(1);

/// Who else writes in a shared directory, which decides how long the guest may cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Only this guest (a container's root): cache everything, coalesce writes.
    Exclusive,
    /// Also the host or other guests (a volume): short timeouts, no writeback cache.
    Shared,
}

/// INIT options we add to what `PassthroughFs` wants (each only if the kernel offers it).
fn extra_init_options() -> FsOptions {
    FsOptions::ASYNC_READ
        | FsOptions::PARALLEL_DIROPS
        | FsOptions::BIG_WRITES
        | FsOptions::MAX_PAGES
        | FsOptions::ATOMIC_O_TRUNC
        | FsOptions::CACHE_SYMLINKS
}

/// The smallest host entry (`getdents64`: 19 bytes and a one-byte name, padded to 8) and the
/// most its FUSE entry takes in a READDIR reply (24 bytes and the name, padded to 8) and in a
/// READDIRPLUS reply (a 128-byte `fuse_entry_out` more): the worst ratios of reply to host bytes.
const HOST_DIRENT_BYTES: u64 = 24;
const DIRENT_BYTES: u64 = 32;
const DIRENTPLUS_BYTES: u64 = 160;
/// `getdents64` of a 255-byte name: a host read must have room for one.
const LONGEST_HOST_DIRENT: u32 = 280;

/// How many bytes of host entries to read for a reply of `size` bytes: no more than surely fit.
///
/// `PassthroughFs` seeks the host directory to the guest's offset before every read and drops
/// what does not fit in the reply. Where offsets are positions (tmpfs before Linux 6.6, ramfs),
/// that seek back counts entries from the start again, so once the guest has removed some it
/// skips as many others: `rm -rf` failed with "Directory not empty". Read only what fits and the
/// host directory stays where the guest goes on, and seeking to where it is moves nothing.
fn host_entries_size(size: u32, reply_bytes_per_entry: u64) -> u32 {
    let fits = u64::from(size) * HOST_DIRENT_BYTES / reply_bytes_per_entry;
    u32::try_from(fits)
        .unwrap_or(u32::MAX)
        .max(LONGEST_HOST_DIRENT)
        .min(size)
}

/// `PassthroughFs` over `root_dir`, negotiating the options above, under `policy`'s rules.
pub(crate) struct SharedDirFs {
    inner: PassthroughFs<()>,
    sharing: Sharing,
    /// How long the guest may cache entries, negative ones included.
    timeout: Duration,
    /// Each open file's flags as `PassthroughFs` recorded them at OPEN or CREATE. A READ or WRITE
    /// is passed on with these instead of the guest's: on any other, `PassthroughFs` (0.14) sets
    /// them on the host descriptor with `F_SETFL`, and when that fails (an O_PATH descriptor,
    /// O_DIRECT on tmpfs, O_NOATIME on a file we do not own) it closes the handle's descriptor,
    /// which stays in its table and is closed again later: by then the number may be another
    /// file's or one of the VMM's own. The guest's later `fcntl(F_SETFL)` is not mirrored, which
    /// costs nothing: the kernel turns O_APPEND into offsets itself and O_DIRECT is not honoured.
    open_flags: Mutex<HashMap<Handle, u32>>,
}

impl SharedDirFs {
    pub(crate) fn new(root_dir: String, sharing: Sharing) -> io::Result<SharedDirFs> {
        let exclusive = sharing == Sharing::Exclusive;
        let (cache_policy, timeout) = if exclusive {
            (CachePolicy::Always, EXCLUSIVE_CACHE_TIMEOUT)
        } else {
            (CachePolicy::Auto, SHARED_CACHE_TIMEOUT)
        };
        let config = Config {
            root_dir,
            cache_policy,
            entry_timeout: timeout,
            attr_timeout: timeout,
            // Coalesced writes in the guest page cache (exclusive shares only: others must see
            // a write when it returns); we run as root so the reads it may issue on O_WRONLY
            // files succeed.
            writeback: exclusive,
            // Images carry security.capability and other xattrs; the guest clears suid/caps on
            // write itself (killpriv v2) instead of asking with an xattr round trip per write.
            xattr: true,
            killpriv_v2: true,
            // O_PATH descriptors, not file handles: overlayfs (the usual root) only exports file
            // handles with nfs_export=on.
            inode_file_handles: false,
            // The root inode is made at FUSE INIT, so a re-initialising driver gets a fresh one.
            do_import: true,
            ..Config::default()
        };
        Ok(SharedDirFs {
            inner: PassthroughFs::new(config)?,
            sharing,
            timeout,
            open_flags: Mutex::default(),
        })
    }

    /// On a volume, a file about to be written or truncated loses its setuid bit and its
    /// setgid-with-group-exec bit first, as the host kernel clears them on a write. Doing it at
    /// OPEN keeps it out of the guest's hands: it could leave out the kill flags of a WRITE.
    fn defuse_setid(&self, ctx: &Context, inode: Inode) -> io::Result<()> {
        if self.sharing != Sharing::Shared {
            return Ok(());
        }
        let (mut attr, _) = self.inner.getattr(ctx, inode, None)?;
        let setgid_exec = libc::S_ISGID | libc::S_IXGRP;
        let armed = attr.st_mode & libc::S_ISUID != 0 || attr.st_mode & setgid_exec == setgid_exec;
        if attr.st_mode & libc::S_IFMT != libc::S_IFREG || !armed {
            return Ok(());
        }
        attr.st_mode &= !(libc::S_ISUID | libc::S_ISGID);
        self.inner
            .setattr(ctx, inode, attr, None, SetattrValid::MODE)
            .map(drop)
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, HashMap<Handle, u32>> {
        self.open_flags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The flags to pass on for `handle` (see `open_flags`).
    fn flags_at_open(&self, handle: Handle, requested: u32) -> u32 {
        self.handles().get(&handle).copied().unwrap_or(requested)
    }
}

impl FileSystem for SharedDirFs {
    type Inode = Inode;
    type Handle = Handle;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        self.handles().clear();
        let wanted = self.inner.init(capable)?;
        Ok(wanted | (capable & extra_init_options()))
    }

    fn destroy(&self) {
        self.handles().clear();
        self.inner.destroy()
    }

    fn statfs(&self, ctx: &Context, inode: Inode) -> io::Result<statvfs64> {
        self.inner.statfs(ctx, inode)
    }

    /// A missing name is answered with a cacheable negative entry instead of ENOENT: the guest
    /// drops it itself when it creates the name (on a shared volume it lapses within a second).
    /// Saves a round trip for each repeated miss (PATH and library searches are full of them).
    fn lookup(&self, ctx: &Context, parent: Inode, name: &CStr) -> io::Result<Entry> {
        policy::one_component(name)?;
        match self.inner.lookup(ctx, parent, name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Entry {
                inode: 0,
                generation: 0,
                // SAFETY: stat64 is plain old data; all zeroes is a valid value.
                attr: unsafe { std::mem::zeroed() },
                attr_flags: 0,
                attr_timeout: self.timeout,
                entry_timeout: self.timeout,
            }),
            other => other,
        }
    }

    fn forget(&self, ctx: &Context, inode: Inode, count: u64) {
        self.inner.forget(ctx, inode, count)
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(Inode, u64)>) {
        self.inner.batch_forget(ctx, requests)
    }

    fn opendir(
        &self,
        ctx: &Context,
        inode: Inode,
        flags: u32,
    ) -> io::Result<(Option<Handle>, OpenOptions)> {
        self.inner.opendir(ctx, inode, flags)
    }

    fn releasedir(
        &self,
        ctx: &Context,
        inode: Inode,
        flags: u32,
        handle: Handle,
    ) -> io::Result<()> {
        self.inner.releasedir(ctx, inode, flags, handle)
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        policy::one_component(name)?;
        let mode = policy::inert_mode(mode, true, self.sharing);
        self.inner.mkdir(ctx, parent, name, mode, umask)
    }

    fn rmdir(&self, ctx: &Context, parent: Inode, name: &CStr) -> io::Result<()> {
        policy::one_component(name)?;
        self.inner.rmdir(ctx, parent, name)
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let host_size = host_entries_size(size, DIRENT_BYTES);
        self.inner
            .readdir(ctx, inode, handle, host_size, offset, add_entry)
    }

    fn readdirplus(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let host_size = host_entries_size(size, DIRENTPLUS_BYTES);
        self.inner
            .readdirplus(ctx, inode, handle, host_size, offset, add_entry)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: Inode,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<Handle>, OpenOptions, Option<u32>)> {
        let writes = flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
            || flags & libc::O_TRUNC as u32 != 0;
        if writes {
            self.defuse_setid(ctx, inode)?;
        }
        let opened = self.inner.open(ctx, inode, flags, fuse_flags)?;
        if let (Some(handle), _, _) = opened {
            self.handles().insert(handle, flags);
        }
        Ok(opened)
    }

    #[allow(clippy::too_many_arguments)]
    fn release(
        &self,
        ctx: &Context,
        inode: Inode,
        flags: u32,
        handle: Handle,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.handles().remove(&handle);
        self.inner
            .release(ctx, inode, flags, handle, flush, flock_release, lock_owner)
    }

    fn create(
        &self,
        ctx: &Context,
        parent: Inode,
        name: &CStr,
        mut args: CreateIn,
    ) -> io::Result<(Entry, Option<Handle>, OpenOptions, Option<u32>)> {
        // Always a regular file: open(O_CREAT) ignores the type bits.
        policy::one_component(name)?;
        args.mode = policy::inert_mode(args.mode, false, self.sharing);
        let flags = args.flags;
        let created = self.inner.create(ctx, parent, name, args)?;
        if let (_, Some(handle), _, _) = created {
            self.handles().insert(handle, flags);
        }
        Ok(created)
    }

    fn unlink(&self, ctx: &Context, parent: Inode, name: &CStr) -> io::Result<()> {
        policy::one_component(name)?;
        self.inner.unlink(ctx, parent, name)
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        let flags = self.flags_at_open(handle, flags);
        self.inner
            .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        delayed_write: bool,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        let flags = self.flags_at_open(handle, flags);
        self.inner.write(
            ctx,
            inode,
            handle,
            r,
            size,
            offset,
            lock_owner,
            delayed_write,
            flags,
            fuse_flags,
        )
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Option<Handle>,
    ) -> io::Result<(stat64, Duration)> {
        self.inner.getattr(ctx, inode, handle)
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: Inode,
        mut attr: stat64,
        handle: Option<Handle>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        if valid.contains(SetattrValid::SIZE) {
            self.defuse_setid(ctx, inode)?;
        }
        if valid.contains(SetattrValid::MODE) && self.sharing == Sharing::Shared {
            // Whether it is a directory the host says: the type bits in `attr` are the guest's.
            let (host, _) = self.inner.getattr(ctx, inode, None)?;
            let is_dir = host.st_mode & libc::S_IFMT == libc::S_IFDIR;
            attr.st_mode = policy::inert_mode(attr.st_mode, is_dir, self.sharing);
        }
        self.inner.setattr(ctx, inode, attr, handle, valid)
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: Inode,
        oldname: &CStr,
        newdir: Inode,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        policy::one_component(oldname)?;
        policy::one_component(newname)?;
        self.inner
            .rename(ctx, olddir, oldname, newdir, newname, flags)
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        policy::one_component(name)?;
        policy::mknod_allowed(mode)?;
        let mode = policy::inert_mode(mode, false, self.sharing);
        self.inner.mknod(ctx, parent, name, mode, rdev, umask)
    }

    fn link(
        &self,
        ctx: &Context,
        inode: Inode,
        newparent: Inode,
        newname: &CStr,
    ) -> io::Result<Entry> {
        policy::one_component(newname)?;
        self.inner.link(ctx, inode, newparent, newname)
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: Inode,
        name: &CStr,
    ) -> io::Result<Entry> {
        policy::one_component(name)?;
        self.inner.symlink(ctx, linkname, parent, name)
    }

    fn readlink(&self, ctx: &Context, inode: Inode) -> io::Result<Vec<u8>> {
        self.inner.readlink(ctx, inode)
    }

    /// Unsupported on purpose: the kernel sends FLUSH, synchronously, on every close() until a
    /// server answers ENOSYS, and then stops. The guest writes its dirty pages back before
    /// close() returns either way, and locks stay in the guest, so for a share the guest owns a
    /// FLUSH would only cost a round trip per close.
    fn flush(
        &self,
        _ctx: &Context,
        _inode: Inode,
        _handle: Handle,
        _lock_owner: u64,
    ) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    fn fsync(&self, ctx: &Context, inode: Inode, datasync: bool, handle: Handle) -> io::Result<()> {
        self.inner.fsync(ctx, inode, datasync, handle)
    }

    fn fsyncdir(
        &self,
        ctx: &Context,
        inode: Inode,
        datasync: bool,
        handle: Handle,
    ) -> io::Result<()> {
        self.inner.fsyncdir(ctx, inode, datasync, handle)
    }

    fn access(&self, ctx: &Context, inode: Inode, mask: u32) -> io::Result<()> {
        self.inner.access(ctx, inode, mask)
    }

    fn setxattr(
        &self,
        ctx: &Context,
        inode: Inode,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        policy::xattr_allowed(name, self.sharing)?;
        self.inner.setxattr(ctx, inode, name, value, flags)
    }

    fn getxattr(
        &self,
        ctx: &Context,
        inode: Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.inner.getxattr(ctx, inode, name, size)
    }

    fn listxattr(&self, ctx: &Context, inode: Inode, size: u32) -> io::Result<ListxattrReply> {
        self.inner.listxattr(ctx, inode, size)
    }

    fn removexattr(&self, ctx: &Context, inode: Inode, name: &CStr) -> io::Result<()> {
        policy::xattr_allowed(name, self.sharing)?;
        self.inner.removexattr(ctx, inode, name)
    }

    fn fallocate(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.inner
            .fallocate(ctx, inode, handle, mode, offset, length)
    }

    fn lseek(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.inner.lseek(ctx, inode, handle, offset, whence)
    }
}

#[cfg(test)]
mod tests {
    use fuse_backend_rs::abi::fuse_abi::{Opcode, OpenIn, OpenOut, ReadIn, ReleaseIn};
    use vm_memory::ByteValued;

    use crate::virtio::fs::tests::{call, fuse_init, lookup, started};
    use crate::virtio::test_driver::{guest_memory, DriverQueue};

    fn open(q: &mut DriverQueue, nodeid: u64, flags: i32) -> u64 {
        let open = OpenIn {
            flags: flags as u32,
            fuse_flags: 0,
        };
        let (out, body) = call(q, Opcode::Open, nodeid, open.as_slice());
        assert_eq!(out.error, 0, "OPEN with flags {flags:#x}");
        OpenOut::from_slice(&body[..std::mem::size_of::<OpenOut>()])
            .expect("open out")
            .fh
    }

    fn read(q: &mut DriverQueue, nodeid: u64, fh: u64, flags: u32) -> (i32, Vec<u8>) {
        let read = ReadIn {
            fh,
            size: 100,
            flags,
            ..Default::default()
        };
        let (out, data) = call(q, Opcode::Read, nodeid, read.as_slice());
        (out.error, data)
    }

    /// Found by the fs_requests fuzz target: a READ whose flags the host descriptor cannot take
    /// (here an O_PATH one) made PassthroughFs close the handle's descriptor and close the same
    /// number again at RELEASE, by then another open file's.
    #[test]
    fn a_read_with_flags_the_descriptor_refuses_closes_nothing_of_another_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a"), b"aaaa").expect("a");
        std::fs::write(dir.path().join("b"), b"bbbb").expect("b");
        let mem = guest_memory();
        let (_dev, [_, mut q]) = started(dir.path(), &mem);
        fuse_init(&mut q);
        let a = lookup(&mut q, 1, "a").1.expect("a").nodeid;
        let b = lookup(&mut q, 1, "b").1.expect("b").nodeid;

        let path_fh = open(&mut q, a, libc::O_PATH | libc::O_NOFOLLOW);
        assert_ne!(
            read(&mut q, a, path_fh, 0).0,
            0,
            "an O_PATH descriptor reads nothing"
        );
        let fh = open(&mut q, b, libc::O_RDONLY);
        let release = ReleaseIn {
            fh: path_fh,
            ..Default::default()
        };
        assert_eq!(
            call(&mut q, Opcode::Release, a, release.as_slice()).0.error,
            0
        );
        assert_eq!(
            read(&mut q, b, fh, libc::O_RDONLY as u32),
            (0, b"bbbb".to_vec())
        );
    }
}
