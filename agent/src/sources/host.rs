//! The host view: what is installed and running on the node, read through the host's root
//! filesystem (`--host-root`, `/host` in a DaemonSet, `/` on the host).
//!
//! Everything here is answered with `lstat`, `readlink`, `readdir` and `read` alone: no process
//! is forked and no namespace entered. All of it is synchronous `std::fs`: callers run it on a
//! blocking thread. Every file read is bounded, text is decoded lossily, and nothing panics on
//! what it reads.
//!
//! Paths on the host are resolved *inside* the host's tree ([`resolve`]): an absolute symlink
//! target restarts from the host root (never the agent's own filesystem) and `..` never climbs
//! above it, as in a chroot. The walk is written by hand on purpose: `openat2` with
//! `RESOLVE_IN_ROOT` would do the same for one directory, but it cannot look through an
//! overlayfs stack of layers ([`Layers`], a container image's snapshot after the container has
//! exited) and it needs Linux 5.6 or later.
//!
//! The walk checks each component before going further, so the agent's kernel follows no
//! symlink of the host's while looking things up, and files are opened with `O_NOFOLLOW`. A
//! host that swaps a directory for a symlink between the check and the use could still make
//! one read land elsewhere: nothing here writes, so the worst outcome is a wrong answer.

mod kernel;
mod os_release;
mod procs;
mod program;
mod tree;

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use self::kernel::ModuleState;
pub use self::os_release::OsRelease;
pub use self::procs::{DaemonScan, COMM_LEN};
pub use self::program::{find_program, searched_dirs, ProgramLookup, DEFAULT_PATH};
pub use self::tree::{
    resolve, Entry, EntryKind, Layers, Resolved, RootDir, Tree, MAX_LOOKUP_WORK, MAX_SYMLINKS,
};

use super::cgroup::snippet;

/// The host's name: `<host_root>/etc/hostname` (in a pod, the kernel's hostname is the pod's
/// own; the host's file does not lie), else the kernel's. `None` when neither says.
pub fn hostname(host_root: &Path) -> Option<String> {
    [host_root.join("etc/hostname"), "/proc/sys/kernel/hostname".into()]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
        .find(|name| !name.is_empty())
}

/// What can go wrong looking at the host. Every variant names what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file or directory could not be looked up or read (other than by not existing, which
    /// is an answer, not an error).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path on the agent's filesystem (below the host root, or in one layer).
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// More than [`MAX_SYMLINKS`] symbolic links were met resolving a path (a loop, most
    /// likely), as `ELOOP` from the kernel.
    #[error("too many levels of symbolic links resolving {path}")]
    SymlinkLoop {
        /// The path being resolved, inside the tree.
        path: PathBuf,
    },
    /// Resolving a path took more lookups than [`MAX_LOOKUP_WORK`] allows: a path that
    /// deep, or with that many components, is not a real one (a crafted image or volume,
    /// most likely).
    #[error("resolving {path} takes too many lookups")]
    TooManyLookups {
        /// The path being resolved, inside the tree.
        path: PathBuf,
    },
    /// A file is larger than podmortem reads of it.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The most read of it.
        limit: u64,
    },
    /// A file held something unexpected.
    #[error("cannot parse {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A name or path given to look up cannot name anything (it comes from container logs, so
    /// it is checked rather than trusted).
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// What it was meant to name: `program`, `module` or `path`.
        what: &'static str,
        /// The start of the name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl HostError {
    /// True when the error is a file or directory that does not exist (only files that must
    /// exist, such as `/proc/modules`, report that as an error).
    pub fn is_not_found(&self) -> bool {
        matches!(self, HostError::Io { source, .. } if is_absent(source))
    }

    fn io(path: &Path, source: io::Error) -> HostError {
        HostError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn invalid(what: &'static str, name: &str, reason: &'static str) -> HostError {
        HostError::InvalidName {
            what,
            name: snippet(name),
            reason,
        }
    }
}

/// The host as the rest of the agent sees it: its root directory and what can be read below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    tree: RootDir,
}

impl HostView {
    /// A view of the host whose root filesystem is mounted at `root`. Nothing is read yet.
    pub fn new(root: &Path) -> HostView {
        HostView {
            tree: RootDir::new(root),
        }
    }

    /// The host root on the agent's filesystem.
    pub fn root(&self) -> &Path {
        self.tree.root()
    }

    /// The host's root filesystem as a [`Tree`].
    pub fn tree(&self) -> RootDir {
        self.tree.clone()
    }

    /// Looks a program up on the host as a shell would; see [`find_program`].
    pub fn find_program(
        &self,
        name: &str,
        path_dirs: &[impl AsRef<str>],
    ) -> Result<ProgramLookup, HostError> {
        find_program(&self.tree, name, path_dirs)
    }

    /// Whether something (of any kind) exists at `path` on the host, following symlinks inside
    /// the host's tree: its resolved path in the tree, or `None`. A relative path is taken from
    /// the host root.
    pub fn file(&self, path: &str) -> Result<Option<String>, HostError> {
        Ok(resolve(&self.tree, path)?.map(|found| found.path.to_string_lossy().into_owned()))
    }

    /// Whether a kernel module is loaded, built in, available to load or missing; see
    /// [`ModuleState`]. Module names compare with `-` and `_` equivalent, as the kernel does.
    pub fn module(&self, name: &str) -> Result<ModuleState, HostError> {
        kernel::module(&self.tree, name)
    }

    /// One scan of the host's processes (`<root>/proc/<pid>/comm`); see [`DaemonScan`].
    pub fn daemons(&self) -> Result<DaemonScan, HostError> {
        procs::scan(self.tree.root())
    }

    /// The host's distribution, from `/etc/os-release` or else `/usr/lib/os-release` (resolved
    /// in the host's tree). All fields are empty when neither can be read.
    pub fn os_release(&self) -> OsRelease {
        os_release::read(&self.tree)
    }

    /// Why the root cannot be the host's root filesystem (it lacks `/etc`, or both `/usr` and
    /// `/bin`: a DaemonSet without its hostPath mount), if it cannot. Lookups below such a root
    /// would find nothing and prove nothing.
    pub fn unmounted(&self) -> Option<String> {
        let root = self.root();
        let has = |d: &str| root.join(d).is_dir();
        if has("etc") && (has("usr") || has("bin")) {
            return None;
        }
        Some(format!(
            "the host root {} does not look like the host's filesystem (no /etc, /usr or /bin): is it mounted?",
            root.display()
        ))
    }

    /// The running kernel's release (`<root>/proc/sys/kernel/osrelease`, trimmed), such as
    /// `6.1.0-18-amd64`.
    pub fn kernel_release(&self) -> Result<String, HostError> {
        kernel::release(self.tree.root())
    }
}

/// True for the errors that mean "no such entry": `ENOENT`, and `ENOTDIR` (a component of the
/// path is not a directory).
fn is_absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Reads a whole file of at most `limit` bytes, without following a symlink in its last
/// component. A larger file is [`HostError::TooLarge`] rather than silently cut.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, HostError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| HostError::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| HostError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(HostError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// Reads a regular file at `path` inside a tree, following symlinks in the tree: its resolved
/// path and contents, or `None` when nothing (or something other than a regular file) is
/// there.
fn read_in_tree(tree: &dyn Tree, path: &str, limit: u64) -> Result<Option<(PathBuf, Vec<u8>)>, HostError> {
    let Some(found) = resolve(tree, path)? else {
        return Ok(None);
    };
    if found.entry.kind != EntryKind::File {
        return Ok(None);
    }
    let Some(host_path) = tree.host_path(&found.path)? else {
        return Ok(None);
    };
    match read_bounded(&host_path, limit) {
        Ok(bytes) => Ok(Some((found.path, bytes))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
