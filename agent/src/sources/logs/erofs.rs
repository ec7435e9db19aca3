//! Finds, in a container's last log lines, the line saying that a write failed because the
//! filesystem is read-only (`EROFS`), and the path and operation it names.
//!
//! It is the fallback of (and the cross-check for) the kernel tracer, so it must not take a line
//! that merely mentions read-only configuration (`readOnlyRootFilesystem: true`, `mounting
//! /config read-only`, `mounted as a read-only file system`) for an error. A line reports `EROFS`
//! when it holds one of:
//!
//! - the error's text, "read-only file system" or "read-only filesystem" (any case), in the place
//!   of an error message: after a delimiter (`: `, `(`, `[Errno 30] `, a quote, `=`, ` - `, or at
//!   the start) and followed by the end of the message (the end, punctuation, ` (os error 30)`);
//! - the token `EROFS` (upper case, a whole word, not followed by a word: `EROFS filesystem` is
//!   the filesystem);
//! - `errno 30` (`[Errno 30]`, `errno=30`, `errno: 30`) or `os error 30`.
//!
//! The shapes the path and operation are taken from:
//!
//! - `<field>: <error>`, the `strerror`/Go/Rust/Java form. The path is the end of the field:
//!   quoted (`'/x'`, `"/x"`, `` `/x` ``, `‘/x’`, JSON-escaped `\"/x\"`), or else the last word,
//!   which must start with `/` (after a `"` or `=` that starts it: `"msg":"/x`, `path=/x`). The
//!   operation is said before it: `cannot create directory` (mkdir), `cannot create regular file`
//!   (create), `cannot touch`, `cannot remove`, `cannot move 'a' to` (rename, and the path is the
//!   destination), `changing permissions of` (chmod), Go's `open`, `mkdir`, `rename /a` (the
//!   path is `/b` in `rename /a /b`), `failed to write`, `write error`, or the tool itself
//!   (busybox `touch: /x: ...`). When nothing quoted or absolute ends the field, a quoted
//!   absolute path elsewhere in it is taken (MySQL's `Could not open file '/x' for error
//!   logging: ...`). Examples: busybox `sh: can't create /x: Read-only file system`, GNU
//!   `mkdir: cannot create directory '/x': Read-only file system`, bash `bash: /x: Read-only file
//!   system`, Go `open /x: read-only file system`, Rust `failed to write /x: Read-only file system
//!   (os error 30)`, Java NIO `java.nio.file.FileSystemException: /x: Read-only file system`.
//! - `<path> (<error>)`: Java's `java.io.FileNotFoundException: /x (Read-only file system)`.
//! - `<error>: '<path>'`, optionally `-> '<destination>'`: Python's `OSError: [Errno 30]
//!   Read-only file system: '/x'` (or `b'/x'`). Python does not say the operation.
//! - `<error>, <syscall> '<path>'`: Node.js' `Error: EROFS: read-only file system, open '/x'`.
//! - `<function>() "<path>" failed (30: <error>)`: nginx (also `rename() "/a" to "/b"` and
//!   `chown("/x", 101)`).
//!
//! Anything else that reports `EROFS` is found without a path or operation (`Error: Os { code:
//! 30, kind: ReadOnlyFilesystem, message: "Read-only file system" }`).
//!
//! Operations are normalised to a short lowercase word: `open`, `create`, `write`, `mkdir`,
//! `remove` (also `unlink`, `rmdir`, `rm`), `rename` (also `mv`, `move`), `touch`, `chmod`,
//! `chown`, `truncate`, `symlink`, `link`, `copy`, `utime`, `mknod`; an operation named by a
//! syscall field (Node.js, nginx) that is none of these is kept as written.
//!
//! The parser is pure and its work per line is bounded: only the first [`WINDOW`] bytes are
//! looked at, with a bounded number of attempts per line.

use crate::text::{ceil_boundary, floor_boundary};
use std::borrow::Cow;

/// Bytes looked at, from the start of a line.
pub const WINDOW: usize = 4096;
/// Places in one line where the error is looked for, per kind of marker.
const MAX_ATTEMPTS: usize = 8;
/// The longest path accepted.
const MAX_PATH: usize = 1024;
/// How far back a field (the text after the previous `: `) is looked for.
const MAX_FIELD: usize = 512;
/// Words looked at before a path for its operation.
const OP_WORDS: usize = 4;
/// The longest operation kept as written.
const MAX_OP: usize = 16;

/// A log line saying a write failed on a read-only filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErofsLine {
    /// The path the program named, if the line names one (as written, quotes removed).
    pub path: Option<String>,
    /// What it tried, if the line says: "create", "open", "mkdir", "remove", "rename", "write",
    /// "touch", "chmod", ... (lowercase, short; see the module's documentation).
    pub operation: Option<String>,
    /// The line (cut to [`WINDOW`] bytes on a char boundary).
    pub line: String,
}

/// Parses one log line; None unless it reports EROFS.
pub fn parse_line(line: &str) -> Option<ErofsLine> {
    let cut = &line[..floor_boundary(line, WINDOW)];
    let clean = strip_ansi(cut);
    let (path, operation) = scan(&clean)?;
    Some(ErofsLine {
        path,
        operation,
        line: cut.to_owned(),
    })
}

/// The last line (searching from the end) among `lines` that reports EROFS.
pub fn find_erofs<'a>(lines: impl DoubleEndedIterator<Item = &'a str>) -> Option<ErofsLine> {
    lines.rev().find_map(parse_line)
}

/// A path and an operation, either possibly unknown.
type Named = (Option<String>, Option<String>);

/// The error's text, lowercase.
const PHRASES: [&str; 2] = ["read-only file system", "read-only filesystem"];
/// Errno 30, lowercase.
const ERRNOS: [&str; 4] = ["errno 30", "errno=30", "errno: 30", "os error 30"];

/// Looks for the markers in turn; the first error text naming a path wins, else the first
/// marker found.
fn scan(text: &str) -> Option<Named> {
    let lower = text.to_ascii_lowercase();
    let mut first: Option<Named> = None;
    for phrase in PHRASES {
        for (at, _) in lower.match_indices(phrase).take(MAX_ATTEMPTS) {
            let before = &text[..at];
            let after = &text[at + phrase.len()..];
            if !opens_message(before) || !closes_message(after) {
                continue;
            }
            let named = extract(before, after);
            if named.0.is_some() {
                return Some(named);
            }
            first.get_or_insert(named);
        }
    }
    if first.is_some() {
        return first;
    }
    for (at, _) in text.match_indices("EROFS").take(MAX_ATTEMPTS) {
        let before = &text[..at];
        let after = &text[at + "EROFS".len()..];
        let whole = !before.ends_with(is_word_char) && !after.starts_with(is_word_char);
        let followed = after.trim_start().starts_with(|c: char| c.is_alphabetic());
        if !whole || followed {
            continue;
        }
        let named = match before.trim_end_matches(' ').strip_suffix(':') {
            Some(field) => named(field),
            None => (None, None),
        };
        if named.0.is_some() {
            return Some(named);
        }
        first.get_or_insert(named);
    }
    if first.is_some() {
        return first;
    }
    let errno = ERRNOS.iter().any(|errno| {
        lower.match_indices(errno).take(MAX_ATTEMPTS).any(|(at, _)| {
            !lower[..at].ends_with(|c: char| c.is_alphanumeric())
                && !lower[at + errno.len()..].starts_with(|c: char| c.is_ascii_digit())
        })
    });
    errno.then_some((None, None))
}

/// Letters, digits and `_`.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether the error text can start a message after `before`: at the start, or after a
/// delimiter (`:`, brackets, quotes, `=`, `,`, `;`, `|`, ` - `).
fn opens_message(before: &str) -> bool {
    let trimmed = before.trim_end_matches([' ', '\t']);
    let Some(last) = trimmed.chars().next_back() else {
        return true;
    };
    match last {
        ':' | '(' | '[' | ']' | ')' | '{' | '"' | '\'' | '`' | '\u{2018}' | '=' | ',' | ';' | '|' => true,
        '-' => trimmed.len() == 1 || trimmed[..trimmed.len() - 1].ends_with([' ', '\t']),
        _ => false,
    }
}

/// Whether the message ends after the error text: at the end, at punctuation, or at a space
/// followed by a bracket, ` - ` or Rust's `or storage medium`.
fn closes_message(after: &str) -> bool {
    let trimmed = after.trim_start_matches([' ', '\t', '\r', '\n']);
    if trimmed.len() == after.len() {
        after.chars().next().is_none_or(|c| {
            matches!(
                c,
                ':' | ')' | ']' | '}' | ',' | ';' | '.' | '!' | '"' | '\'' | '`' | '\u{2019}' | '\\' | '|'
            )
        })
    } else {
        trimmed
            .chars()
            .next()
            .is_none_or(|c| matches!(c, '(' | '[' | '{' | '-' | '|' | '"'))
            || starts_with_ignore_case(trimmed, "or storage medium")
    }
}

/// The path and operation around one error text.
fn extract(before: &str, after: &str) -> Named {
    if let Some(found) = node(before, after) {
        return found;
    }
    if let Some(path) = python(after) {
        return (Some(path), None);
    }
    if let Some(found) = nginx(before) {
        return found;
    }
    let trimmed = before.trim_end_matches(' ');
    if let Some(field) = trimmed.strip_suffix(':') {
        return named(field);
    }
    if let Some(field) = trimmed.strip_suffix('(') {
        return named(field.trim_end_matches(' '));
    }
    (None, None)
}

/// Node.js: `EROFS: ` before the error and `, open '/x'` (or `, rename '/a' -> '/b'`, or `,
/// write` alone) after it.
fn node(before: &str, after: &str) -> Option<Named> {
    if !before.trim_end().ends_with("EROFS:") {
        return None;
    }
    let rest = after.strip_prefix(", ")?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let operation = syscall_operation(&rest[..end])?;
    let rest = &rest[end..];
    let path = match rest.strip_prefix(' ').and_then(quoted_after) {
        Some((path, rest)) => Some(destination(path, rest)),
        None if rest.is_empty() || !rest.starts_with(' ') => None,
        None => return None,
    };
    Some((path, Some(operation)))
}

/// Python: `: '/x'` (or `b'/x'`, `"/x"`, or `'/a' -> '/b'`) after the error.
fn python(after: &str) -> Option<String> {
    let (path, rest) = quoted_after(after.strip_prefix(": ")?)?;
    Some(destination(path, rest))
}

/// The destination of `'<source>' -> '<destination>'`, or the source when there is none.
fn destination(source: String, rest: &str) -> String {
    rest.strip_prefix(" -> ")
        .and_then(quoted_after)
        .map_or(source, |(destination, _)| destination)
}

/// nginx: `open() "/x" failed (30: `, `rename() "/a" to "/b" failed (30: `, `chown("/x", 101)
/// failed (30: `, before the error.
fn nginx(before: &str) -> Option<Named> {
    let rest = before.trim_end_matches(' ').strip_suffix(':')?;
    let number = rest.trim_end_matches(|c: char| c.is_ascii_digit());
    if number.len() == rest.len() {
        return None;
    }
    let rest = number.trim_end_matches(' ').strip_suffix('(')?.trim_end();
    let rest = rest.strip_suffix("failed")?.trim_end();
    if let Some((path, call)) = quoted_before(rest) {
        let mut call = call.trim_end();
        if let Some(source) = strip_word_suffix(call, "to") {
            call = quoted_before(source.trim_end()).map_or(call, |(_, call)| call.trim_end());
        }
        let name = call.strip_suffix("()")?;
        return Some((Some(path), function_operation(name)));
    }
    // `chown("/x", 101)`
    let call = rest.strip_suffix(')')?;
    let open = call.rfind('(')?;
    let (path, _) = quoted_after(&call[open + 1..])?;
    Some((Some(path), function_operation(&call[..open])))
}

/// The operation of a C function call's name at the end of `text` (`... mkdir`).
fn function_operation(text: &str) -> Option<String> {
    // The character found may be several bytes long: start after all of it.
    let start = text
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(0, |(at, c)| at + c.len_utf8());
    syscall_operation(&text[start..])
}

/// A syscall or function name as an operation: normalised when known, else as written when it
/// looks like a name (lowercase, at most [`MAX_OP`] bytes).
fn syscall_operation(name: &str) -> Option<String> {
    if let Some(operation) = operation(name) {
        return Some(operation.to_owned());
    }
    let ok = (1..=MAX_OP).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then(|| name.to_owned())
}

/// The path and operation of a field that ends where the error's `: ` (or ` (`) starts.
fn named(field: &str) -> Named {
    let (path, rest) = match path_before(field).or_else(|| quoted_in(field)) {
        Some((path, rest)) => (Some(path), rest),
        None => (None, field),
    };
    (path, operation_before(rest))
}

/// The path that ends `text` (quoted, or a word starting with `/`), and the text before it.
fn path_before(text: &str) -> Option<(String, &str)> {
    if let Some(found) = quoted_before(text) {
        return Some(found);
    }
    let window = &text[ceil_boundary(text, text.len().saturating_sub(MAX_PATH + 1))..];
    let start = window
        .rfind(char::is_whitespace)
        .map_or(0, |at| at + window[at..].chars().next().map_or(1, char::len_utf8));
    let word = &window[start..];
    let path = if word.starts_with('/') {
        word
    } else {
        let at = word.rfind(['"', '\'', '`', '='])?;
        &word[at + 1..]
    };
    let ok = path.starts_with('/') && path.len() <= MAX_PATH && !path.chars().any(char::is_control);
    ok.then(|| (path.to_owned(), &text[..text.len() - path.len()]))
}

/// Quotes: (opening, closing).
const QUOTES: [(&str, &str); 5] = [
    ("\\\"", "\\\""),
    ("\"", "\""),
    ("'", "'"),
    ("`", "`"),
    ("\u{2018}", "\u{2019}"),
];

/// The quoted path that ends `text`, and the text before its opening quote.
fn quoted_before(text: &str) -> Option<(String, &str)> {
    let (open, body) = QUOTES
        .iter()
        .find_map(|(open, close)| Some((*open, text.strip_suffix(close)?)))?;
    let from = ceil_boundary(body, body.len().saturating_sub(MAX_PATH + open.len()));
    let at = from + body[from..].rfind(open)?;
    let path = quoted_path(&body[at + open.len()..])?;
    Some((path, &body[..at]))
}

/// The quoted path that starts `text` (a Python `b` prefix allowed), and the text after it.
fn quoted_after(text: &str) -> Option<(String, &str)> {
    let text = match text.strip_prefix('b') {
        Some(rest) if rest.starts_with(['\'', '"']) => rest,
        _ => text,
    };
    let (open, close) = QUOTES.iter().find(|(open, _)| text.starts_with(open))?;
    let body = &text[open.len()..];
    let limit = floor_boundary(body, MAX_PATH + close.len());
    let end = body[..limit].find(close)?;
    let path = quoted_path(&body[..end])?;
    Some((path, &body[end + close.len()..]))
}

/// A quoted path: not empty, not blank, no control characters, not ending in `\` (an escaped
/// quote).
fn quoted_path(path: &str) -> Option<String> {
    let ok = !path.trim().is_empty()
        && path.len() <= MAX_PATH
        && !path.ends_with('\\')
        && !path.chars().any(char::is_control);
    ok.then(|| path.to_owned())
}

/// The last quoted absolute path in the field that ends `text`, and the text before it.
fn quoted_in(text: &str) -> Option<(String, &str)> {
    let field = last_field(text).1;
    let offset = text.len() - field.len();
    let (at, path) = QUOTES
        .iter()
        .filter_map(|(open, _)| {
            let mut needle = String::from(*open);
            needle.push('/');
            field
                .match_indices(needle.as_str())
                .take(MAX_ATTEMPTS)
                .filter_map(|(at, _)| Some((at, quoted_after(&field[at..])?.0)))
                .last()
        })
        .max_by_key(|(at, _)| *at)?;
    Some((path, &text[..offset + at]))
}

/// The text before the last `: ` in the last [`MAX_FIELD`] bytes of `text` (if there is one),
/// and the field after it.
fn last_field(text: &str) -> (Option<&str>, &str) {
    let from = ceil_boundary(text, text.len().saturating_sub(MAX_FIELD));
    match text[from..].rfind(": ") {
        Some(at) => (Some(&text[..from + at]), &text[from + at + 2..]),
        None => (None, &text[from..]),
    }
}

/// The operation said in the field that ends `text` (the text before a path).
fn operation_before(text: &str) -> Option<String> {
    let (prefix, field) = last_field(text);
    let field = field.trim_end();
    if field.is_empty() {
        // `touch: /x: Read-only file system`
        return prefix.and_then(tool_operation).map(str::to_owned);
    }
    // `cannot move 'a' to '/b'`, `rename() "/a" to "/b"`
    let field = match strip_word_suffix(field, "to") {
        Some(source) => path_before(source.trim_end()).map_or(field, |(_, before)| before.trim_end()),
        None => field,
    };
    PHRASE_OPERATIONS
        .iter()
        .find(|(phrase, _)| ends_with_ignore_case(field, phrase))
        .map(|(_, operation)| *operation)
        .or_else(|| word_operation(field))
        .map(str::to_owned)
}

/// Operations said in more than one word, looked for at the end of a field.
const PHRASE_OPERATIONS: &[(&str, &str)] = &[
    ("create directory", "mkdir"),
    ("make directory", "mkdir"),
    ("create regular file", "create"),
    ("create symbolic link", "symlink"),
    ("create hard link", "link"),
    ("changing permissions of", "chmod"),
    ("change permissions of", "chmod"),
    ("changing ownership of", "chown"),
    ("changing group of", "chown"),
    ("setting times of", "utime"),
];

/// The operation among the last [`OP_WORDS`] words of `field` (skipping absolute paths, as the
/// source of `rename /a /b`); a word holding a delimiter (`"msg":"open`) is the last looked at.
fn word_operation(field: &str) -> Option<&'static str> {
    for word in field.split_whitespace().rev().take(OP_WORDS) {
        if word.starts_with('/') {
            continue;
        }
        let start = word
            .rfind(['"', '`', '=', ':', '(', '[', '{', ',', ';'])
            .map(|at| at + 1);
        let candidate = word[start.unwrap_or(0)..].trim_start_matches('\'');
        if let Some(operation) = operation(candidate) {
            return Some(operation);
        }
        if start.is_some() {
            break;
        }
    }
    None
}

/// Words (and syscall names) that say an operation, and the operation.
const OPERATIONS: &[(&str, &str)] = &[
    ("open", "open"),
    ("opening", "open"),
    ("openat", "open"),
    ("fopen", "open"),
    ("create", "create"),
    ("creating", "create"),
    ("creat", "create"),
    ("write", "write"),
    ("writing", "write"),
    ("save", "write"),
    ("saving", "write"),
    ("append", "write"),
    ("appending", "write"),
    ("mkdir", "mkdir"),
    ("mkdirat", "mkdir"),
    ("mkdirall", "mkdir"),
    ("remove", "remove"),
    ("removing", "remove"),
    ("delete", "remove"),
    ("deleting", "remove"),
    ("unlink", "remove"),
    ("unlinkat", "remove"),
    ("rmdir", "remove"),
    ("rename", "rename"),
    ("renaming", "rename"),
    ("renameat", "rename"),
    ("renameat2", "rename"),
    ("move", "rename"),
    ("moving", "rename"),
    ("touch", "touch"),
    ("chmod", "chmod"),
    ("fchmod", "chmod"),
    ("fchmodat", "chmod"),
    ("chown", "chown"),
    ("lchown", "chown"),
    ("fchown", "chown"),
    ("fchownat", "chown"),
    ("truncate", "truncate"),
    ("truncating", "truncate"),
    ("ftruncate", "truncate"),
    ("symlink", "symlink"),
    ("symlinkat", "symlink"),
    ("link", "link"),
    ("linkat", "link"),
    ("copy", "copy"),
    ("copying", "copy"),
    ("copyfile", "copy"),
    ("utime", "utime"),
    ("utimes", "utime"),
    ("utimensat", "utime"),
    ("chtimes", "utime"),
    ("mknod", "mknod"),
    ("mkfifo", "mknod"),
];

/// The operation a word says, any case.
fn operation(word: &str) -> Option<&'static str> {
    OPERATIONS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(word))
        .map(|(_, operation)| *operation)
}

/// Tools whose message names only the path (`touch: /x: ...`), and what they do.
const TOOLS: &[(&str, &str)] = &[
    ("touch", "touch"),
    ("mkdir", "mkdir"),
    ("rm", "remove"),
    ("rmdir", "remove"),
    ("mv", "rename"),
    ("cp", "create"),
    ("tee", "write"),
    ("ln", "link"),
    ("chmod", "chmod"),
    ("chown", "chown"),
    ("chgrp", "chown"),
    ("truncate", "truncate"),
    ("install", "create"),
];

/// The operation of the tool whose name ends `prefix` (`touch`, `/bin/touch`).
fn tool_operation(prefix: &str) -> Option<&'static str> {
    let word = prefix.split_whitespace().next_back()?;
    let name = word.rsplit('/').next()?;
    TOOLS
        .iter()
        .find(|(tool, _)| *tool == name)
        .map(|(_, operation)| *operation)
}

/// `text` without the whole word `word` at its end (and the space before it).
fn strip_word_suffix<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let rest = text.strip_suffix(word)?;
    rest.ends_with(char::is_whitespace).then_some(rest)
}

/// Whether `text` starts with `prefix`, ignoring ASCII case.
fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Whether `text` ends with `suffix` as a whole word, ignoring ASCII case.
fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    let Some(at) = text.len().checked_sub(suffix.len()) else {
        return false;
    };
    text.as_bytes()[at..].eq_ignore_ascii_case(suffix.as_bytes())
        && !text.as_bytes()[..at]
            .last()
            .is_some_and(u8::is_ascii_alphanumeric)
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ESC \`, and
/// two-character ones).
fn strip_ansi(text: &str) -> Cow<'_, str> {
    if !text.contains('\x1b') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next().is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
#[path = "erofs_tests.rs"]
mod tests;
