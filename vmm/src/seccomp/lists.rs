//! The allow-list of each thread kind. Arguments are checked where a call's power depends on
//! them: ioctl request numbers, socket families, open flags, clone flags, executable mappings,
//! the signals a thread may send, the credentials the file server may switch to.

use std::collections::BTreeMap;

use libc::*;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use super::{SeccompError, ThreadKind};

// KVM and tun ioctl numbers (linux/kvm.h, linux/if_tun.h).
const KVM_RUN: u64 = 0xae80;
const TUNSETOFFLOAD: u64 = 0x4004_54d0;

/// One condition on argument `arg`, compared on its low 32 bits (int arguments) or all 64.
fn cond(arg: u8, len: Len, op: Op, value: u64) -> SeccompCondition {
    // Only an argument index above 5 is refused, and ours are literals below it.
    SeccompCondition::new(arg, len, op, value).expect("argument index below 6")
}

fn eq32(arg: u8, value: u64) -> SeccompCondition {
    cond(arg, Len::Dword, Op::Eq, value)
}

/// An allow-list under construction: a call allowed outright, or when one of its rules holds.
#[derive(Default)]
struct List {
    always: Vec<i64>,
    when: BTreeMap<i64, Vec<Vec<SeccompCondition>>>,
}

impl List {
    fn allow(mut self, calls: &[c_long]) -> List {
        self.always.extend_from_slice(calls);
        self
    }

    /// Allows `call` when every one of `conds` holds (rules for one call are alternatives).
    fn allow_if(mut self, call: c_long, conds: Vec<SeccompCondition>) -> List {
        self.when.entry(call).or_default().push(conds);
        self
    }

    /// Everything either list allows.
    fn union(mut self, other: List) -> List {
        self.always.extend(other.always);
        for (call, alternatives) in other.when {
            self.when.entry(call).or_default().extend(alternatives);
        }
        self
    }

    fn ioctls(self, requests: &[u64]) -> List {
        requests.iter().fold(self, |list, &req| {
            list.allow_if(SYS_ioctl, vec![eq32(1, req)])
        })
    }

    fn rules(self) -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
        let mut rules = BTreeMap::new();
        for (call, alternatives) in self.when {
            let chain = alternatives
                .into_iter()
                .map(SeccompRule::new)
                .collect::<Result<Vec<_>, _>>()?;
            rules.insert(call, chain);
        }
        // An empty chain allows the call whatever its arguments.
        for call in self.always {
            rules.insert(call, Vec::new());
        }
        Ok(rules)
    }
}

/// What every thread does: memory (malloc reads the CPU count when it makes a thread's arena),
/// locks, time, logging to stderr, signal return, exit, abort.
fn base() -> List {
    let no_exec = || vec![cond(2, Len::Dword, Op::MaskedEq(PROT_EXEC as u64), 0)];
    let list = List::default()
        .allow(&[
            SYS_futex,
            SYS_write,
            SYS_close,
            SYS_munmap,
            SYS_madvise,
            SYS_brk,
            SYS_mremap,
            SYS_clock_gettime,
            SYS_sched_yield,
            SYS_getrandom,
            SYS_sched_getaffinity,
            SYS_rt_sigreturn,
            SYS_rt_sigprocmask,
            SYS_restart_syscall,
            SYS_sigaltstack,
            SYS_getpid,
            SYS_gettid,
            SYS_exit,
            SYS_exit_group,
        ])
        .allow_if(SYS_mmap, no_exec())
        .allow_if(SYS_mprotect, no_exec())
        // abort() after a panic while panicking raises SIGABRT at itself.
        .allow_if(SYS_tgkill, vec![eq32(2, SIGABRT as u64)]);
    // Built with debug assertions (a debug build, a fuzz build), std checks that a descriptor is
    // still open before it closes it: `fcntl(fd, F_GETFD)` in every thread that drops one.
    if cfg!(debug_assertions) {
        list.allow_if(SYS_fcntl, vec![eq32(1, F_GETFD as u64)])
    } else {
        list
    }
}

/// A worker's wait loop: epoll over eventfds and its descriptors.
fn worker() -> List {
    base().allow(&[
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_wait,
        SYS_epoll_pwait,
        SYS_read,
    ])
}

/// Starting threads: `clone` for a thread only (no fork), and what the new thread does first
/// (`clone3` is refused, below).
fn threads(list: List) -> List {
    let thread = (CLONE_VM | CLONE_THREAD) as u64;
    list.allow(&[SYS_set_robust_list, SYS_rseq])
        .allow_if(
            SYS_clone,
            vec![cond(0, Len::Qword, Op::MaskedEq(thread), thread)],
        )
        .allow_if(SYS_prctl, vec![eq32(0, PR_SET_NAME as u64)])
}

fn sleeping(list: List) -> List {
    list.allow(&[SYS_nanosleep, SYS_clock_nanosleep])
}

fn list(kind: ThreadKind) -> List {
    match kind {
        ThreadKind::Main => sleeping(base())
            .allow(&[SYS_read, SYS_unlink])
            // Kicking vCPUs out of KVM_RUN; the filesystems' lazy unmount at the end.
            .allow_if(SYS_tgkill, vec![eq32(2, crate::vm::kick_signal() as u64)])
            .allow_if(SYS_umount2, vec![eq32(1, MNT_DETACH as u64)]),
        // Device activation and reset run here: queue eventfds are duplicated, a vsock reset
        // drops its connections from the worker's epoll set, a tap's offloads are set.
        ThreadKind::Vcpu => base()
            .allow(&[SYS_read])
            .allow_if(SYS_fcntl, vec![eq32(1, F_DUPFD_CLOEXEC as u64)])
            .allow_if(SYS_epoll_ctl, vec![eq32(1, EPOLL_CTL_DEL as u64)])
            .ioctls(&[KVM_RUN, TUNSETOFFLOAD]),
        ThreadKind::Signals => base().allow(&[SYS_rt_sigtimedwait]),
        ThreadKind::Session => {
            // Only files opened to be written: the log (and its rotations) and the exit file.
            let write_only = (O_ACCMODE | O_CREAT) as u64;
            sleeping(threads(base()))
                .allow(&[
                    SYS_accept4,
                    SYS_read,
                    SYS_recvfrom,
                    SYS_sendto,
                    SYS_shutdown,
                    SYS_fcntl,
                    SYS_rename,
                    SYS_unlink,
                    SYS_fsync,
                    SYS_ftruncate,
                    SYS_fstat,
                    SYS_statx,
                    SYS_lseek,
                ])
                .allow_if(
                    SYS_openat,
                    vec![cond(
                        2,
                        Len::Dword,
                        Op::MaskedEq(write_only),
                        (O_WRONLY | O_CREAT) as u64,
                    )],
                )
        }
        ThreadKind::FsWorker => fs_worker(),
        ThreadKind::NetWorker => worker().allow(&[SYS_readv, SYS_writev, SYS_sendmsg]),
        ThreadKind::VsockWorker => worker()
            .allow(&[
                SYS_accept4,
                SYS_connect,
                SYS_recvfrom,
                SYS_sendto,
                SYS_shutdown,
                SYS_getsockopt,
                SYS_fcntl,
            ])
            // Guest connections go to Unix sockets only.
            .allow_if(SYS_socket, vec![eq32(0, AF_UNIX as u64)])
            .ioctls(&[FIONBIO]),
        ThreadKind::RngWorker => worker(),
    }
}

/// The file server: what FUSE requests turn into on the shared directory. No sockets, no
/// ioctls; it switches its effective uid and gid (only those) to create files as the guest's
/// caller.
fn fs_worker() -> List {
    let effective_only = || vec![eq32(0, u64::from(u32::MAX)), eq32(2, u64::from(u32::MAX))];
    worker()
        .allow(&[
            SYS_openat,
            SYS_pread64,
            SYS_pwrite64,
            SYS_preadv,
            SYS_pwritev,
            SYS_readv,
            SYS_writev,
            SYS_lseek,
            SYS_fstat,
            SYS_newfstatat,
            SYS_statx,
            SYS_fstatfs,
            SYS_getdents64,
            SYS_readlinkat,
            SYS_mkdirat,
            SYS_mknodat,
            SYS_unlinkat,
            SYS_renameat,
            SYS_renameat2,
            SYS_linkat,
            SYS_symlinkat,
            SYS_fchmod,
            SYS_fchmodat,
            SYS_fchown,
            SYS_fchownat,
            SYS_utimensat,
            SYS_ftruncate,
            SYS_fallocate,
            SYS_fsync,
            SYS_fdatasync,
            SYS_dup,
            SYS_fcntl,
            SYS_flock,
            SYS_umask,
            SYS_getxattr,
            SYS_lgetxattr,
            SYS_fgetxattr,
            SYS_setxattr,
            SYS_lsetxattr,
            SYS_fsetxattr,
            SYS_listxattr,
            SYS_llistxattr,
            SYS_flistxattr,
            SYS_removexattr,
            SYS_lremovexattr,
            SYS_fremovexattr,
        ])
        .allow_if(SYS_setresuid, effective_only())
        .allow_if(SYS_setresgid, effective_only())
}

/// Calls that fail with ENOSYS instead of killing: `clone3`, whose flags no filter can read (glibc
/// then starts threads with `clone`), and read-only opens outside the file server (glibc's
/// malloc probes /proc/sys/vm/overcommit_memory once, and does without).
fn refused(kind: ThreadKind) -> List {
    if kind == ThreadKind::FsWorker {
        return List::default();
    }
    let probe = List::default().allow_if(SYS_openat, vec![eq32(2, (O_RDONLY | O_CLOEXEC) as u64)]);
    if kind == ThreadKind::Session {
        probe.allow(&[SYS_clone3])
    } else {
        probe
    }
}

fn program(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, seccompiler::BackendError> {
    SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)?.try_into()
}

/// `kind`'s filters, in the order they are installed: if it refuses calls, one that answers those
/// with ENOSYS; then its allow-list, everything else trapped (last: installing a filter takes
/// calls the list does not allow). Stacked, the ERRNO outranks the allow-list's ALLOW (which
/// must let the refused calls through, or they would trap).
pub(super) fn compile(kind: ThreadKind) -> Result<Vec<BpfProgram>, SeccompError> {
    let fail = |source| SeccompError::Compile {
        kind: kind.name(),
        source,
    };
    let allowed = list(kind).union(refused(kind)).rules().map_err(fail)?;
    let refusals = refused(kind).rules().map_err(fail)?;
    let mut programs = Vec::new();
    if !refusals.is_empty() {
        let errno = SeccompAction::Errno(ENOSYS as u32);
        programs.push(program(refusals, SeccompAction::Allow, errno).map_err(fail)?);
    }
    programs.push(program(allowed, SeccompAction::Trap, SeccompAction::Allow).map_err(fail)?);
    Ok(programs)
}
