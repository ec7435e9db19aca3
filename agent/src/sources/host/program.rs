//! Looking programs up in a tree as a shell searches `PATH`.

use super::tree::{resolve, EntryKind, Tree};
use super::HostError;

/// The `PATH` used when a container's own is unknown: the usual one of a root shell.
pub const DEFAULT_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The longest file name Linux accepts (`NAME_MAX`).
const MAX_NAME_LEN: usize = 255;

/// The outcome of looking a program up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramLookup {
    /// A regular file with an execute bit.
    Found {
        /// The path it was found at, as searched: `/sbin/iscsiadm`.
        path: String,
        /// That path with every symlink followed in the tree: `/usr/sbin/iscsiadm`.
        target: String,
    },
    /// Something by that name exists but cannot be run: a regular file without any execute bit,
    /// a directory, a device. The first such one found.
    NotExecutable {
        /// The path it was found at, as searched.
        path: String,
        /// What is there.
        kind: EntryKind,
    },
    /// Nothing by that name.
    Missing {
        /// The paths looked at, in order.
        searched: Vec<String>,
    },
}

/// The directories of the paths a [`ProgramLookup::Missing`] searched, as a PATH string
/// (`/usr/sbin:/sbin`).
pub fn searched_dirs(searched: &[String]) -> String {
    searched
        .iter()
        .map(|p| p.rsplit_once('/').map_or(p.as_str(), |(dir, _)| dir))
        .map(|d| if d.is_empty() { "/" } else { d })
        .collect::<Vec<_>>()
        .join(":")
}

/// Looks a program up in `tree` as a shell would. A name holding a `/` is that path only
/// (taken from the tree's root when relative). Otherwise `dir/name` is resolved for each of
/// `path_dirs` in order (empty and relative ones taken from the root too), and the first
/// regular file with any execute bit (`mode & 0o111`) is [`Found`](ProgramLookup::Found).
/// Failing that, the first other thing by that name is
/// [`NotExecutable`](ProgramLookup::NotExecutable), and with nothing at all the program is
/// [`Missing`](ProgramLookup::Missing).
///
/// An error looking in one directory (`EACCES`, a symlink loop) does not hide a program in a
/// later one: the first error is returned only when no program is found, since it might have
/// hidden one. A name that is empty, holds NUL, is `.` or `..`, or is longer than 255 bytes
/// (4095 for a path) is [`HostError::InvalidName`].
pub fn find_program(
    tree: &dyn Tree,
    name: &str,
    path_dirs: &[impl AsRef<str>],
) -> Result<ProgramLookup, HostError> {
    check_name(name)?;
    let candidates: Vec<String> = if name.contains('/') {
        vec![name.to_owned()]
    } else {
        path_dirs
            .iter()
            .map(|dir| format!("{}/{name}", dir.as_ref().trim_end_matches('/')))
            .collect()
    };
    let mut not_executable = None;
    let mut first_error = None;
    for candidate in &candidates {
        match resolve(tree, candidate) {
            Ok(Some(found)) if found.entry.kind == EntryKind::File && found.entry.mode & 0o111 != 0 => {
                return Ok(ProgramLookup::Found {
                    path: candidate.clone(),
                    target: found.path.to_string_lossy().into_owned(),
                });
            }
            Ok(Some(found)) => {
                not_executable.get_or_insert_with(|| ProgramLookup::NotExecutable {
                    path: candidate.clone(),
                    kind: found.entry.kind,
                });
            }
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(%error, tree = %tree.describe(), "looking for a program");
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    Ok(not_executable.unwrap_or(ProgramLookup::Missing { searched: candidates }))
}

fn check_name(name: &str) -> Result<(), HostError> {
    let invalid = |reason| Err(HostError::invalid("program", name, reason));
    if name.is_empty() {
        return invalid("empty");
    }
    if name.contains('\0') {
        return invalid("contains NUL");
    }
    if name == "." || name == ".." {
        return invalid("names a directory");
    }
    if !name.contains('/') && name.len() > MAX_NAME_LEN {
        return invalid("longer than 255 bytes");
    }
    Ok(())
}
