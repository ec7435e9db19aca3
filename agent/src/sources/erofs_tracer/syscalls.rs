//! The write-intent syscalls the tracer watches, where each keeps its path argument, and how
//! the kernel program is told so (one packed 64-bit value per syscall number).

/// `open` flags that mean the caller intends to write or create.
pub const WRITE_INTENT: u16 = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u16;

/// How a syscall's open flags are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flags {
    /// The call always intends to write.
    None,
    /// Argument `n` is the open flags.
    Value(u8),
    /// Argument `n` points to a `struct open_how`, whose first field is the open flags.
    OpenHow(u8),
}

/// One watched syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    /// Its name, as in the `syscalls:sys_enter_<name>` tracepoint.
    pub name: &'static str,
    /// Its number on this architecture.
    pub nr: u32,
    /// Which argument is the path written to (for rename and link: the new name).
    pub path_arg: u8,
    /// Where its open flags are, if it has any.
    pub flags: Flags,
    /// Which argument is the directory a relative path starts from (`*at` syscalls).
    pub dirfd_arg: Option<u8>,
}

impl Syscall {
    /// The value the kernel program reads for this syscall: `struct spec` of `erofs.bpf.c`
    /// (enabled, path argument, flags argument, flags kind, directory argument, padding, flags
    /// mask), in native byte order.
    pub fn packed_spec(&self) -> u64 {
        const NO_ARG: u8 = 0xff;
        let (flags_arg, kind, mask) = match self.flags {
            Flags::None => (NO_ARG, 0u8, 0u16),
            Flags::Value(n) => (n, 1, WRITE_INTENT),
            Flags::OpenHow(n) => (n, 2, WRITE_INTENT),
        };
        let mask = mask.to_ne_bytes();
        let dirfd = self.dirfd_arg.unwrap_or(NO_ARG);
        u64::from_ne_bytes([1, self.path_arg, flags_arg, kind, dirfd, 0, mask[0], mask[1]])
    }
}

const fn sys(name: &'static str, nr: libc::c_long, path_arg: u8, flags: Flags) -> Syscall {
    // Syscall numbers are small and positive on every architecture.
    Syscall {
        name,
        nr: nr as u32,
        path_arg,
        flags,
        dirfd_arg: None,
    }
}

/// A `*at` syscall: argument `dirfd_arg` is the directory a relative path starts from.
const fn sys_at(name: &'static str, nr: libc::c_long, dirfd_arg: u8, path_arg: u8, flags: Flags) -> Syscall {
    Syscall {
        dirfd_arg: Some(dirfd_arg),
        ..sys(name, nr, path_arg, flags)
    }
}

/// The syscalls present on every architecture (the `*at` family).
const COMMON: &[Syscall] = &[
    sys_at("openat", libc::SYS_openat, 0, 1, Flags::Value(2)),
    sys_at("openat2", libc::SYS_openat2, 0, 1, Flags::OpenHow(2)),
    sys_at("mkdirat", libc::SYS_mkdirat, 0, 1, Flags::None),
    sys_at("mknodat", libc::SYS_mknodat, 0, 1, Flags::None),
    sys_at("unlinkat", libc::SYS_unlinkat, 0, 1, Flags::None),
    sys_at("renameat", libc::SYS_renameat, 2, 3, Flags::None),
    sys_at("renameat2", libc::SYS_renameat2, 2, 3, Flags::None),
    sys_at("linkat", libc::SYS_linkat, 2, 3, Flags::None),
    sys_at("symlinkat", libc::SYS_symlinkat, 1, 2, Flags::None),
    sys("truncate", libc::SYS_truncate, 0, Flags::None),
    sys_at("utimensat", libc::SYS_utimensat, 0, 1, Flags::None),
    sys_at("fchmodat", libc::SYS_fchmodat, 0, 1, Flags::None),
    sys_at("fchownat", libc::SYS_fchownat, 0, 1, Flags::None),
    sys("setxattr", libc::SYS_setxattr, 0, Flags::None),
    sys("lsetxattr", libc::SYS_lsetxattr, 0, Flags::None),
    sys("removexattr", libc::SYS_removexattr, 0, Flags::None),
    sys("lremovexattr", libc::SYS_lremovexattr, 0, Flags::None),
];

/// The older path syscalls x86_64 still has (arm64 has only the `*at` forms).
#[cfg(target_arch = "x86_64")]
const LEGACY: &[Syscall] = &[
    sys("open", libc::SYS_open, 0, Flags::Value(1)),
    sys("creat", libc::SYS_creat, 0, Flags::None),
    sys("mkdir", libc::SYS_mkdir, 0, Flags::None),
    sys("mknod", libc::SYS_mknod, 0, Flags::None),
    sys("unlink", libc::SYS_unlink, 0, Flags::None),
    sys("rmdir", libc::SYS_rmdir, 0, Flags::None),
    sys("rename", libc::SYS_rename, 1, Flags::None),
    sys("link", libc::SYS_link, 1, Flags::None),
    sys("symlink", libc::SYS_symlink, 1, Flags::None),
    sys("chmod", libc::SYS_chmod, 0, Flags::None),
    sys("chown", libc::SYS_chown, 0, Flags::None),
    sys("lchown", libc::SYS_lchown, 0, Flags::None),
    sys("utime", libc::SYS_utime, 0, Flags::None),
    sys("utimes", libc::SYS_utimes, 0, Flags::None),
    sys_at("futimesat", libc::SYS_futimesat, 0, 1, Flags::None),
];

#[cfg(not(target_arch = "x86_64"))]
const LEGACY: &[Syscall] = &[];

/// Syscalls newer than the `libc` crate's tables, with their (architecture-independent) numbers;
/// a kernel without them simply has no tracepoint for them.
const RECENT: &[Syscall] = &[
    // Linux 6.6.
    sys_at("fchmodat2", 452, 0, 1, Flags::None),
    // Linux 6.13.
    sys_at("setxattrat", 463, 0, 1, Flags::None),
    sys_at("removexattrat", 466, 0, 1, Flags::None),
];

/// Every watched syscall on this architecture.
pub fn watched() -> impl Iterator<Item = &'static Syscall> {
    COMMON.iter().chain(LEGACY).chain(RECENT)
}

/// The watched syscall with number `nr`.
pub fn by_nr(nr: u32) -> Option<&'static Syscall> {
    watched().find(|s| s.nr == nr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_unique() {
        let all: Vec<_> = watched().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.nr, b.nr, "{} and {}", a.name, b.name);
                assert_ne!(a.name, b.name);
            }
            assert!(a.nr < 1024, "{} does not fit the kernel program's table", a.name);
            assert!(a.path_arg < 6);
        }
        assert_eq!(by_nr(libc::SYS_openat as u32).map(|s| s.name), Some("openat"));
        assert_eq!(by_nr(libc::SYS_read as u32), None);
    }

    #[test]
    fn specs_pack_as_the_kernel_program_reads_them() {
        let openat = watched().find(|s| s.name == "openat").copied();
        let bytes = openat.map(|s| s.packed_spec().to_ne_bytes());
        let mask = WRITE_INTENT.to_ne_bytes();
        assert_eq!(bytes, Some([1, 1, 2, 1, 0, 0, mask[0], mask[1]]));
        let mkdirat = watched()
            .find(|s| s.name == "mkdirat")
            .map(|s| s.packed_spec().to_ne_bytes());
        assert_eq!(mkdirat, Some([1, 1, 0xff, 0, 0, 0, 0, 0]));
        let rename = watched()
            .find(|s| s.name == "renameat2")
            .map(|s| s.packed_spec().to_ne_bytes());
        assert_eq!(rename, Some([1, 3, 0xff, 0, 2, 0, 0, 0]), "new dir and new name");
        let truncate = watched()
            .find(|s| s.name == "truncate")
            .map(|s| s.packed_spec().to_ne_bytes());
        assert_eq!(
            truncate,
            Some([1, 0, 0xff, 0, 0xff, 0, 0, 0]),
            "no directory argument"
        );
        assert_ne!(WRITE_INTENT & libc::O_CREAT as u16, 0);
        assert_eq!(
            WRITE_INTENT & libc::O_RDONLY as u16,
            0,
            "a plain read is not watched"
        );
    }
}
