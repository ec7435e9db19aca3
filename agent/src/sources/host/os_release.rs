//! The host's distribution, from `os-release(5)`.

use super::read_in_tree;
use super::tree::Tree;

/// The most read of an os-release file (a few hundred bytes in practice).
const MAX_OS_RELEASE: u64 = 64 << 10;

/// What `os-release` says about the distribution. Fields it does not set are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`: `debian`, `ubuntu`, `rhel`, `flatcar`.
    pub id: String,
    /// `ID_LIKE`, split on whitespace: `["rhel", "centos", "fedora"]`.
    pub id_like: Vec<String>,
    /// `PRETTY_NAME`: `Debian GNU/Linux 12 (bookworm)`.
    pub pretty_name: String,
    /// `VERSION_ID`: `12`, `22.04`.
    pub version_id: String,
}

/// Reads `/etc/os-release`, else `/usr/lib/os-release`, in the tree; all empty when neither
/// can be read.
pub(super) fn read(tree: &dyn Tree) -> OsRelease {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        match read_in_tree(tree, path, MAX_OS_RELEASE) {
            Ok(Some((_, bytes))) => return parse(&String::from_utf8_lossy(&bytes)),
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "cannot read {path}"),
        }
    }
    tracing::debug!(tree = %tree.describe(), "no os-release");
    OsRelease::default()
}

/// Parses an os-release text: shell-style `KEY=value` assignments, the value bare or in double
/// or single quotes. Comments, blank and malformed lines are skipped; a later assignment wins.
pub(super) fn parse(text: &str) -> OsRelease {
    let mut release = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = parse_line(line) else {
            continue;
        };
        match key {
            "ID" => release.id = value,
            "ID_LIKE" => release.id_like = value.split_whitespace().map(str::to_owned).collect(),
            "PRETTY_NAME" => release.pretty_name = value,
            "VERSION_ID" => release.version_id = value,
            _ => {}
        }
    }
    release
}

fn parse_line(line: &str) -> Option<(&str, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (key, raw) = line.split_once('=')?;
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    Some((key, parse_value(raw)?))
}

/// A shell value: `"..."` with `\"`, `\\`, `\$` and `` \` `` escapes, `'...'` taken literally,
/// or a bare word without quotes, escapes, `$` or whitespace.
fn parse_value(raw: &str) -> Option<String> {
    if let Some(inner) = raw.strip_prefix('\'') {
        let inner = inner.strip_suffix('\'')?;
        return (!inner.contains('\'')).then(|| inner.to_owned());
    }
    if let Some(inner) = raw.strip_prefix('"') {
        let mut value = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return chars.next().is_none().then_some(value),
                '\\' => match chars.next()? {
                    escaped @ ('"' | '\\' | '$' | '`') => value.push(escaped),
                    other => {
                        value.push('\\');
                        value.push(other);
                    }
                },
                '$' | '`' => return None,
                c => value.push(c),
            }
        }
        // No closing quote.
        return None;
    }
    let bad = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '$' | '`');
    (!raw.contains(bad)).then(|| raw.to_owned())
}
