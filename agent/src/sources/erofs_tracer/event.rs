//! The record the kernel program sends for each failed write (`struct event` of
//! `bpf/erofs.bpf.c`), decoded from its bytes.

/// Length of the command name field.
pub const COMM_LEN: usize = 16;
/// Length of the memory cgroup name field.
pub const CGROUP_LEN: usize = 128;
/// Length of the path field, terminating NUL included: longer paths are cut.
pub const PATH_LEN: usize = 512;
/// Size of one record.
pub const EVENT_LEN: usize = HEADER_LEN + COMM_LEN + CGROUP_LEN + PATH_LEN;
/// The fixed-size fields before the strings.
const HEADER_LEN: usize = 56;
/// `AT_FDCWD`: a relative path starts from the working directory.
pub const AT_FDCWD: i32 = -100;

const PATH_TRUNCATED: u32 = 1;
const PATH_UNREADABLE: u32 = 2;
const CGROUP_UNREADABLE: u32 = 4;

/// One failed write, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// `CLOCK_BOOTTIME` at the syscall's exit, in nanoseconds.
    pub boot_ns: u64,
    /// The thread's cgroup v2 id.
    pub cgroup_id: u64,
    /// The open flags, for syscalls that have them.
    pub open_flags: u64,
    /// The thread id.
    pub pid: u32,
    /// The process id.
    pub tgid: u32,
    /// The syscall number.
    pub nr: u32,
    /// The return value (`-EROFS`).
    pub ret: i32,
    /// The inode number of the thread's mount namespace (0 if unreadable).
    pub mnt_ns: u32,
    /// The directory a relative path starts from: a descriptor, or [`AT_FDCWD`].
    pub dirfd: i32,
    /// The command name.
    pub comm: Vec<u8>,
    /// The name of the thread's memory cgroup directory.
    pub cgroup: Vec<u8>,
    /// The path argument, as the process passed it (bytes: not necessarily UTF-8).
    pub path: Vec<u8>,
    /// The path filled the field: it may have been cut.
    pub path_truncated: bool,
    /// The path could not be read from the process's memory.
    pub path_unreadable: bool,
    /// The memory cgroup could not be read.
    pub cgroup_unreadable: bool,
}

/// A record of the wrong size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a tracer record of {0} bytes; {EVENT_LEN} expected")]
pub struct BadRecord(pub usize);

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(word)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(word)
}

/// The bytes before the first NUL.
fn c_string(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].to_vec()
}

impl RawEvent {
    /// Decodes one ring buffer record.
    pub fn parse(b: &[u8]) -> Result<RawEvent, BadRecord> {
        if b.len() != EVENT_LEN {
            return Err(BadRecord(b.len()));
        }
        let status = u32_at(b, 44);
        let (comm, rest) = b[HEADER_LEN..].split_at(COMM_LEN);
        let (cgroup, path) = rest.split_at(CGROUP_LEN);
        Ok(RawEvent {
            boot_ns: u64_at(b, 0),
            cgroup_id: u64_at(b, 8),
            open_flags: u64_at(b, 16),
            pid: u32_at(b, 24),
            tgid: u32_at(b, 28),
            nr: u32_at(b, 32),
            ret: i32::from_ne_bytes(u32_at(b, 36).to_ne_bytes()),
            mnt_ns: u32_at(b, 40),
            dirfd: i32::from_ne_bytes(u32_at(b, 48).to_ne_bytes()),
            comm: c_string(comm),
            cgroup: c_string(cgroup),
            path: c_string(path),
            path_truncated: status & PATH_TRUNCATED != 0,
            path_unreadable: status & PATH_UNREADABLE != 0,
            cgroup_unreadable: status & CGROUP_UNREADABLE != 0,
        })
    }
}

#[cfg(test)]
pub(crate) fn encode(e: &RawEvent) -> Vec<u8> {
    let mut b = vec![0u8; EVENT_LEN];
    b[0..8].copy_from_slice(&e.boot_ns.to_ne_bytes());
    b[8..16].copy_from_slice(&e.cgroup_id.to_ne_bytes());
    b[16..24].copy_from_slice(&e.open_flags.to_ne_bytes());
    b[24..28].copy_from_slice(&e.pid.to_ne_bytes());
    b[28..32].copy_from_slice(&e.tgid.to_ne_bytes());
    b[32..36].copy_from_slice(&e.nr.to_ne_bytes());
    b[36..40].copy_from_slice(&e.ret.to_ne_bytes());
    b[40..44].copy_from_slice(&e.mnt_ns.to_ne_bytes());
    let status = u32::from(e.path_truncated) * PATH_TRUNCATED
        + u32::from(e.path_unreadable) * PATH_UNREADABLE
        + u32::from(e.cgroup_unreadable) * CGROUP_UNREADABLE;
    b[44..48].copy_from_slice(&status.to_ne_bytes());
    b[48..52].copy_from_slice(&e.dirfd.to_ne_bytes());
    let put = |b: &mut [u8], at: usize, len: usize, s: &[u8]| {
        let n = s.len().min(len - 1);
        b[at..at + n].copy_from_slice(&s[..n]);
    };
    put(&mut b, HEADER_LEN, COMM_LEN, &e.comm);
    put(&mut b, HEADER_LEN + COMM_LEN, CGROUP_LEN, &e.cgroup);
    put(&mut b, HEADER_LEN + COMM_LEN + CGROUP_LEN, PATH_LEN, &e.path);
    b
}
