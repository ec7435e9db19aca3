//! The running kernel: its release and its modules.

use std::path::Path;

use super::tree::RootDir;
use super::{read_bounded, read_in_tree, HostError};

/// The most read of `/proc/modules` (a few KiB with a hundred modules loaded).
const MAX_PROC_MODULES: u64 = 4 << 20;

/// The most read of `modules.dep` or `modules.builtin` (about 1 MiB for a distribution
/// kernel's `modules.dep`).
const MAX_MODULES_INDEX: u64 = 16 << 20;

/// The most read of `/proc/sys/kernel/osrelease` (at most 64 bytes from the kernel).
const MAX_RELEASE: u64 = 4096;

/// Module names are at most 55 bytes (`MODULE_NAME_LEN` less its NUL); longer names are
/// refused with room to spare.
const MAX_MODULE_NAME: usize = 255;

/// Whether a kernel module can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleState {
    /// Loaded now (`/proc/modules`).
    Loaded,
    /// Built into the kernel (`modules.builtin`): always there, never in `/proc/modules`.
    Builtin,
    /// Not loaded, but installed for the running kernel (`modules.dep`), so `modprobe` can load
    /// it.
    Available {
        /// The module's file in the host's tree, under `/lib/modules/<release>/`.
        path: String,
    },
    /// Not loaded, not built in and not installed.
    Missing,
    /// Not loaded, and neither `modules.builtin` nor `modules.dep` could be found for the
    /// running kernel, so whether it could be is unknown.
    Unknown {
        /// What was missing.
        reason: String,
    },
}

/// Reads and checks the kernel release below the host root.
pub(super) fn release(root: &Path) -> Result<String, HostError> {
    let path = root.join("proc/sys/kernel/osrelease");
    let bytes = read_bounded(&path, MAX_RELEASE)?;
    let text = String::from_utf8_lossy(&bytes);
    let release = text.trim();
    let bad = release.is_empty()
        || release == "."
        || release == ".."
        || release
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(HostError::Parse {
            path,
            message: format!("not a kernel release: {:?}", super::snippet(release)),
        });
    }
    Ok(release.to_owned())
}

/// Looks a module up: `/proc/modules`, then the running kernel's `modules.builtin` and
/// `modules.dep` (resolved in the host's tree: `/lib` is a symlink on merged-usr hosts).
pub(super) fn module(tree: &RootDir, name: &str) -> Result<ModuleState, HostError> {
    check_name(name)?;
    let proc_modules = tree.root().join("proc/modules");
    let loaded = read_bounded(&proc_modules, MAX_PROC_MODULES)?;
    if is_loaded(&String::from_utf8_lossy(&loaded), name) {
        return Ok(ModuleState::Loaded);
    }
    let dir = format!("/lib/modules/{}", release(tree.root())?);
    let builtin = read_in_tree(tree, &format!("{dir}/modules.builtin"), MAX_MODULES_INDEX)?;
    if let Some((_, text)) = &builtin {
        if is_builtin(&String::from_utf8_lossy(text), name) {
            return Ok(ModuleState::Builtin);
        }
    } else {
        tracing::debug!(%dir, "no modules.builtin");
    }
    let dep = read_in_tree(tree, &format!("{dir}/modules.dep"), MAX_MODULES_INDEX)?;
    if let Some((_, text)) = &dep {
        if let Some(file) = find_in_dep(&String::from_utf8_lossy(text), name) {
            let path = if file.starts_with('/') {
                file.to_owned()
            } else {
                format!("{dir}/{file}")
            };
            return Ok(ModuleState::Available { path });
        }
    } else {
        tracing::debug!(%dir, "no modules.dep");
    }
    if builtin.is_none() && dep.is_none() {
        return Ok(ModuleState::Unknown {
            reason: format!("not loaded, and no modules.builtin or modules.dep in {dir}"),
        });
    }
    Ok(ModuleState::Missing)
}

fn check_name(name: &str) -> Result<(), HostError> {
    let invalid = |reason| Err(HostError::invalid("module", name, reason));
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > MAX_MODULE_NAME {
        return invalid("longer than 255 bytes");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':')
    {
        return invalid("contains `/`, `:`, NUL or whitespace");
    }
    Ok(())
}

/// Module names compare with `-` and `_` equivalent, as the kernel and modprobe do.
pub(super) fn same_module(a: &str, b: &str) -> bool {
    let norm = |b: u8| if b == b'-' { b'_' } else { b };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
}

/// Whether `/proc/modules` (`name size refcount deps state address` lines) lists `name`.
pub(super) fn is_loaded(proc_modules: &str, name: &str) -> bool {
    proc_modules
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|loaded| same_module(loaded, name))
}

/// The module name of a module file path: `kernel/drivers/md/dm-crypt.ko.xz` → `dm-crypt`.
fn module_of_file(file: &str) -> Option<&str> {
    let base = file.rsplit('/').next()?;
    [".ko", ".ko.xz", ".ko.gz", ".ko.zst"]
        .iter()
        .find_map(|suffix| base.strip_suffix(suffix))
        .filter(|name| !name.is_empty())
}

/// Whether `modules.builtin` (one `kernel/.../name.ko` a line) lists `name`.
pub(super) fn is_builtin(modules_builtin: &str, name: &str) -> bool {
    modules_builtin
        .lines()
        .filter_map(|line| module_of_file(line.trim()))
        .any(|builtin| same_module(builtin, name))
}

/// The file of `name` in `modules.dep` (`kernel/.../name.ko.xz: dependencies` lines).
pub(super) fn find_in_dep<'a>(modules_dep: &'a str, name: &str) -> Option<&'a str> {
    modules_dep.lines().find_map(|line| {
        let (file, _) = line.split_once(':')?;
        let file = file.trim();
        module_of_file(file)
            .filter(|module| same_module(module, name))
            .map(|_| file)
    })
}
