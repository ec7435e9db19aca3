//! Trees of files (the host root, or a stack of overlay layers) and symlink resolution inside
//! them.

use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::{is_absent, HostError};

/// At most this many symbolic links are followed resolving one path: Linux's `MAXSYMLINKS`.
pub const MAX_SYMLINKS: usize = 40;

/// The most work [`resolve`] does for one path, counted as the sum of the depths of the paths
/// it looks up (each [`Tree::lstat`] checks every parent of its path again). Real paths need a
/// few hundred at most; the limit keeps a crafted tree (2,000 nested directories, links into
/// them) from costing millions of system calls.
pub const MAX_LOOKUP_WORK: usize = 1 << 14;

/// The longest path [`resolve`] accepts, in bytes: Linux's `PATH_MAX` less its NUL.
const MAX_PATH_LEN: usize = 4095;

/// What kind of entry a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else: a device, socket or FIFO.
    Other,
}

/// An entry of a tree, as `lstat` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Its kind.
    pub kind: EntryKind,
    /// Its permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

impl Entry {
    fn from_metadata(metadata: &Metadata) -> Entry {
        let file_type = metadata.file_type();
        let kind = if file_type.is_symlink() {
            EntryKind::Symlink
        } else if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        Entry {
            kind,
            mode: metadata.mode() & 0o7777,
        }
    }
}

/// A tree of files that paths are resolved in. Paths given to it are absolute *within the
/// tree* (`/usr/bin/sh`); `.` components are ignored and `..` never climbs above its root.
///
/// Symlinks among a path's parents are never followed: when a parent is not a directory, the
/// path is absent. [`resolve`] follows symlinks, inside the tree.
pub trait Tree {
    /// The entry at `path`, not following a symlink there; `None` when nothing is there.
    fn lstat(&self, path: &Path) -> Result<Option<Entry>, HostError>;

    /// The target of the symlink at `path`, as stored (not resolved).
    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError>;

    /// Where the entry at `path` lives on the agent's filesystem (for a stack of layers, in
    /// the layer it comes from); `None` when nothing is there.
    fn host_path(&self, path: &Path) -> Result<Option<PathBuf>, HostError>;

    /// The tree, for messages: `host root /host`.
    fn describe(&self) -> String;
}

/// A tree whose root is one directory, such as the host root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDir {
    root: [PathBuf; 1],
}

impl RootDir {
    /// The tree below `root` (which may itself be a symlink on the agent's filesystem).
    pub fn new(root: &Path) -> RootDir {
        RootDir {
            root: [root.to_path_buf()],
        }
    }

    /// Its root on the agent's filesystem.
    pub fn root(&self) -> &Path {
        &self.root[0]
    }
}

impl Tree for RootDir {
    fn lstat(&self, path: &Path) -> Result<Option<Entry>, HostError> {
        Ok(lookup(&self.root, false, path)?.map(|found| Entry::from_metadata(&found.metadata)))
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        read_link(&self.root, false, path)
    }

    fn host_path(&self, path: &Path) -> Result<Option<PathBuf>, HostError> {
        Ok(lookup(&self.root, false, path)?.map(|found| found.host_path))
    }

    fn describe(&self) -> String {
        format!("host root {}", self.root().display())
    }
}

/// An overlayfs-style stack of directories: the upper layer first, then the lower ones in
/// overlay's `lowerdir` order (each above the next). Used to look inside a container's
/// snapshot after the container has exited and its overlay mount is gone.
///
/// A path is looked up as overlayfs does: the highest layer holding an entry at the path
/// decides what it is; a directory merges the same directory of the layers below it, down to
/// the first layer where the path is something other than a directory. A whiteout (a character
/// device numbered 0/0) hides what the layers below hold at its path.
///
/// Not honoured: opaque directories (the `trusted.overlay.opaque` xattr; neither std nor nix
/// reads xattrs and podmortem has no unsafe code), so the entries of lower layers show through
/// a directory the upper layer recreated; and the `redirect_dir` and `metacopy` features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    layers: Vec<PathBuf>,
}

impl Layers {
    /// A stack of layer directories, upper first. An empty stack holds nothing.
    pub fn new(layers: Vec<PathBuf>) -> Layers {
        Layers { layers }
    }

    /// The layers, upper first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }
}

impl Tree for Layers {
    fn lstat(&self, path: &Path) -> Result<Option<Entry>, HostError> {
        Ok(lookup(&self.layers, true, path)?.map(|found| Entry::from_metadata(&found.metadata)))
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        read_link(&self.layers, true, path)
    }

    fn host_path(&self, path: &Path) -> Result<Option<PathBuf>, HostError> {
        Ok(lookup(&self.layers, true, path)?.map(|found| found.host_path))
    }

    fn describe(&self) -> String {
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|layer| layer.display().to_string())
            .collect();
        format!("overlay layers [{}] (upper first)", layers.join(", "))
    }
}

/// An entry found in a stack of directories.
struct Found {
    host_path: PathBuf,
    metadata: Metadata,
}

/// The normal components of an in-tree path, `.` dropped and `..` clamped at the root.
fn normal_components(path: &Path) -> Vec<&OsStr> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    parts
}

/// `lstat` that gives `None` for a missing entry.
fn lstat(path: &Path) -> Result<Option<Metadata>, HostError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) => Ok(Some(metadata)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(HostError::io(path, e)),
    }
}

fn is_whiteout(metadata: &Metadata) -> bool {
    metadata.file_type().is_char_device() && metadata.rdev() == 0
}

/// Looks `path` up in a stack of directories, upper first, one component at a time so that no
/// symlink is followed. With `overlay`, whiteouts hide what is below them; a single directory
/// is looked up with `overlay` off, so its character devices are just devices.
fn lookup(layers: &[PathBuf], overlay: bool, path: &Path) -> Result<Option<Found>, HostError> {
    let parts = normal_components(path);
    if parts.is_empty() {
        // The root itself: the agent's kernel may follow a symlink here, the root is ours.
        for layer in layers {
            match fs::metadata(layer) {
                Ok(metadata) if metadata.is_dir() => {
                    return Ok(Some(Found {
                        host_path: layer.clone(),
                        metadata,
                    }))
                }
                Ok(_) => {}
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(HostError::io(layer, e)),
            }
        }
        return Ok(None);
    }
    // The layers in which the directory looked in so far is a directory, upper first.
    let mut merged: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    let mut prefix = PathBuf::new();
    for (index, part) in parts.iter().enumerate() {
        prefix.push(part);
        let last = index + 1 == parts.len();
        let mut winner: Option<Found> = None;
        let mut below = Vec::new();
        for layer in &merged {
            let host_path = layer.join(&prefix);
            let Some(metadata) = lstat(&host_path)? else {
                continue;
            };
            if overlay && is_whiteout(&metadata) {
                if winner.is_none() {
                    return Ok(None);
                }
                break;
            }
            let is_dir = metadata.is_dir();
            if winner.is_none() {
                winner = Some(Found { host_path, metadata });
                if last {
                    break;
                }
            }
            if !is_dir {
                break;
            }
            below.push(*layer);
        }
        match winner {
            None => return Ok(None),
            Some(found) if last => return Ok(Some(found)),
            Some(found) if !found.metadata.is_dir() => return Ok(None),
            Some(_) => merged = below,
        }
    }
    Ok(None)
}

fn read_link(layers: &[PathBuf], overlay: bool, path: &Path) -> Result<PathBuf, HostError> {
    let found = lookup(layers, overlay, path)?;
    match found {
        Some(found) if found.metadata.file_type().is_symlink() => {
            fs::read_link(&found.host_path).map_err(|e| HostError::io(&found.host_path, e))
        }
        Some(found) => Err(HostError::io(
            &found.host_path,
            std::io::Error::from_raw_os_error(nix::libc::EINVAL),
        )),
        None => Err(HostError::io(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )),
    }
}

/// A path resolved inside a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The path in the tree with every symlink followed, absolute, without `.` or `..`.
    pub path: PathBuf,
    /// What is there (never a symlink).
    pub entry: Entry,
}

/// Resolves `path` inside `tree`, following every symlink in it as the kernel would in a
/// chroot at the tree's root: an absolute link target restarts from the tree's root, `..`
/// never climbs above it. A relative `path` is taken from the root.
///
/// `Ok(None)` when something on the way does not exist or is not a directory (`ENOENT`,
/// `ENOTDIR`), also for an empty path or an empty link target. Other failures are errors
/// naming the path on the agent's filesystem; more than [`MAX_SYMLINKS`] links is
/// [`HostError::SymlinkLoop`], more than [`MAX_LOOKUP_WORK`] is [`HostError::TooManyLookups`].
/// A path holding NUL or longer than 4095 bytes is [`HostError::InvalidName`].
pub fn resolve(tree: &dyn Tree, path: &str) -> Result<Option<Resolved>, HostError> {
    if path.contains('\0') {
        return Err(HostError::invalid("path", path, "contains NUL"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(HostError::invalid("path", path, "longer than 4095 bytes"));
    }
    if path.is_empty() {
        return Ok(None);
    }
    // The components still to walk, the next one last.
    let mut pending = components_reversed(path.as_bytes());
    let mut current = PathBuf::from("/");
    // What `current` is, when known.
    let mut entry: Option<Entry> = None;
    let mut links = 0;
    let mut work = 0;
    let mut lstat = |in_tree: &Path| {
        work += in_tree.components().count();
        if work > MAX_LOOKUP_WORK {
            return Err(HostError::TooManyLookups { path: path.into() });
        }
        tree.lstat(in_tree)
    };
    while let Some(part) = pending.pop() {
        match part.as_slice() {
            b"" | b"." => {}
            b".." => {
                current.pop();
                entry = None;
            }
            name => {
                let candidate = current.join(OsStr::from_bytes(name));
                let Some(found) = lstat(&candidate)? else {
                    return Ok(None);
                };
                match found.kind {
                    EntryKind::Symlink => {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(HostError::SymlinkLoop { path: path.into() });
                        }
                        let target = OsString::from(tree.read_link(&candidate)?).into_vec();
                        if target.is_empty() {
                            return Ok(None);
                        }
                        if target.starts_with(b"/") {
                            current = PathBuf::from("/");
                            entry = None;
                        }
                        pending.extend(components_reversed(&target));
                    }
                    EntryKind::Dir => {
                        current = candidate;
                        entry = Some(found);
                    }
                    EntryKind::File | EntryKind::Other => {
                        // Anything after a non-directory, even `/` or `.`, is ENOTDIR.
                        if !pending.is_empty() {
                            return Ok(None);
                        }
                        current = candidate;
                        entry = Some(found);
                    }
                }
            }
        }
    }
    let entry = match entry {
        Some(entry) => entry,
        None => match lstat(&current)? {
            Some(entry) => entry,
            None => return Ok(None),
        },
    };
    Ok(Some(Resolved { path: current, entry }))
}

/// The `/`-separated components of a path, last first (empty ones kept: a trailing `/` after
/// a file makes it absent).
fn components_reversed(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/').rev().map(<[u8]>::to_vec).collect()
}
