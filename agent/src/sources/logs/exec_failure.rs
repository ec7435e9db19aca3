//! Finds, in a container's last log lines or in the runtime's error message, a program that could
//! not be executed, and how it failed.
//!
//! The messages come from shells (busybox `sh`, dash, bash, zsh), from the tools that run a
//! program for another (`nsenter`, `env`, `chroot`, ...), from runc, crun and Go's `os/exec`, and
//! from `mount` (a missing `/sbin/mount.<type>` helper, as kubelet reports it). Only forms that
//! name the failing program's context are recognised, so lines that merely say "not found"
//! (`404 not found`, `user not found: bob`) do not match.
//!
//! The parser is pure, and linear in what it looks at: at most [`WINDOW`] bytes at each end of a
//! line, with a bounded number of attempts per line. A shell's "Permission denied" cannot be told
//! from a failed redirection (`sh: /data/out.log: Permission denied`), and neither can its
//! "No such file or directory" (which is therefore not matched; dash and busybox say "not found"
//! for a missing program).

use crate::text::{ceil_boundary, floor_boundary};

/// Bytes looked at from each end of a line.
pub const WINDOW: usize = 4096;
/// The matching line is cut to this many bytes around the match.
const EXCERPT: usize = 512;
/// Lines [`find_exec_failure`] looks at, from the last.
const SCAN_LINES: usize = 20;
/// The longest program name (and shell or tool name) accepted.
const MAX_NAME: usize = 255;
/// The longest `: `-separated field looked at.
const MAX_FIELD: usize = 320;
/// Places in one line where a message is looked for, per kind of message.
const MAX_ATTEMPTS: usize = 16;

/// How a program could not be executed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExecShape {
    /// `nsenter` (util-linux or busybox) could not find the program in the namespaces it
    /// entered — usually the host's.
    Nsenter,
    /// A program in the container (a shell, `env`, `chroot`, a Go program) did not find the
    /// program it was to run.
    NotFound,
    /// The runtime could not find the container's command (`exec: "X": executable file not
    /// found in $PATH`, `exec: "/x": stat /x: no such file or directory`, crun's
    /// ``executable file `X` not found``); Go programs report a failed `$PATH` lookup the same way.
    NotInPath,
    /// A mount needed a helper program (`you might need a /sbin/mount.<type> helper program`).
    MountHelper {
        /// The filesystem type, from `-t <type>` in the message or the helper's name; `None`
        /// when the message names neither.
        fs_type: Option<String>,
    },
    /// The program exists but is for another architecture or not a binary (`exec format
    /// error`).
    ExecFormat,
    /// The program exists but cannot be executed (`Permission denied`, a directory; exit 126).
    PermissionDenied,
    /// The program exists but the interpreter it names does not: a missing ELF loader (a glibc
    /// binary on a musl image) or a `#!` line that names a missing program (often one ending
    /// in `\r`). runc's `exec /x: no such file or directory`, after it found `/x`; bash's
    /// `bad interpreter`.
    MissingInterpreter,
}

/// A program that could not be executed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecFailure {
    /// The program as the message names it (`iscsiadm`, `/usr/bin/tool`, `./run.sh`,
    /// `mount.nfs`); `None` when the message does not say.
    pub program: Option<String>,
    /// How it failed.
    pub shape: ExecShape,
    /// The matching line, without colour codes, cut to 512 bytes around the match.
    pub line: String,
}

/// Finds an exec failure in one line (or one message; a message of several lines is looked at
/// from its last line up, and for a mount helper the filesystem type may be on another line).
pub fn parse_line(line: &str) -> Option<ExecFailure> {
    if line.len() <= 2 * WINDOW {
        return parse_window(line);
    }
    let head = &line[..floor_boundary(line, WINDOW)];
    let tail = &line[ceil_boundary(line, line.len() - WINDOW)..];
    parse_window(tail).or_else(|| parse_window(head))
}

/// Scans lines from the last backwards (at most the last 20), returning the latest match.
pub fn find_exec_failure<'a>(lines: impl DoubleEndedIterator<Item = &'a str>) -> Option<ExecFailure> {
    lines.rev().take(SCAN_LINES).find_map(parse_line)
}

/// What a matcher found in one line: the shape, the program, and where.
#[derive(Debug)]
struct Match {
    shape: ExecShape,
    program: Option<String>,
    start: usize,
    end: usize,
}

impl Match {
    fn new(shape: ExecShape, program: Option<&str>, start: usize, end: usize) -> Self {
        Match {
            shape,
            program: program.map(str::to_owned),
            start,
            end,
        }
    }

    fn shifted(mut self, by: usize) -> Self {
        self.start += by;
        self.end += by;
        self
    }
}

fn parse_window(text: &str) -> Option<ExecFailure> {
    let clean = strip_ansi(text);
    clean.split('\n').rev().find_map(|line| {
        let line = line.trim_end_matches(['\r', ' ', '\t']);
        let found = prefixed(line)
            .or_else(|| go_exec(line))
            .or_else(|| exec_user_process(line))
            .or_else(|| runtime_exec(line))
            .or_else(|| crun(line))
            .or_else(|| mount_helper(line, &clean))?;
        Some(ExecFailure {
            program: found.program,
            shape: found.shape,
            line: excerpt(line, found.start, found.end),
        })
    })
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ESC \`, and
/// two-character ones).
fn strip_ansi(text: &str) -> String {
    if !text.contains('\x1b') {
        return text.to_owned();
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
    out
}

/// `<shell or tool>: ...` messages, at the start of the line or after a delimiter (`exit status
/// 127: nsenter: ...`, `err="sh: ..."`).
fn prefixed(line: &str) -> Option<Match> {
    let bytes = line.as_bytes();
    let starts = (0..bytes.len()).filter(|&i| {
        i == 0
            || matches!(
                bytes[i - 1],
                b' ' | b'\t' | b'"' | b'\'' | b'(' | b'[' | b'=' | b','
            )
    });
    starts
        .filter(|&i| prefix_token_ends(&bytes[i..]))
        .take(MAX_ATTEMPTS)
        .find_map(|i| at_prefix(&line[i..]).map(|m| m.shifted(i)))
}

/// Whether the bytes start with a name (no whitespace) followed by `: ` (or `:<digits>: `, as
/// zsh writes), cheaply.
fn prefix_token_ends(bytes: &[u8]) -> bool {
    let Some(n) = bytes
        .iter()
        .take(MAX_NAME + 1)
        .position(|b| b.is_ascii_whitespace() || *b == b':')
    else {
        return false;
    };
    if n == 0 || bytes.get(n) != Some(&b':') {
        return false;
    }
    let after = &bytes[n + 1..];
    let digits = after.iter().take(10).take_while(|b| b.is_ascii_digit()).count();
    after.starts_with(b" ") || (digits > 0 && after[digits..].starts_with(b": "))
}

fn at_prefix(text: &str) -> Option<Match> {
    let (prefix, rest) = field(text)?;
    let name = prefix_name(prefix)?;
    let found = if name == "zsh" {
        zsh(rest)
    } else {
        tool(name, rest).or_else(|| shell(prefix, name, rest))
    }?;
    Some(Match::new(found.0, Some(found.1), 0, text.len() - found.2.len()))
}

/// A program, its shape, and the text after the match.
type Found<'a> = (ExecShape, &'a str, &'a str);

/// `<tool>: can't execute 'X': <errno>` (busybox), `<tool>: failed to execute X: <errno>`
/// (util-linux), `<tool>: failed to run command 'X': <errno>` (coreutils), `nsenter: exec X
/// failed: <errno>` (old util-linux), `env: 'X': <errno>` (coreutils).
fn tool<'a>(name: &str, rest: &'a str) -> Option<Found<'a>> {
    let (middle, after) = field(rest)?;
    let (errno, after) = errno(after, &STRERROR)?;
    let program = if let Some(p) = middle.strip_prefix("can't execute ") {
        unquote(p)
    } else if let Some(p) = middle.strip_prefix("failed to execute ") {
        p
    } else if let Some(p) = middle.strip_prefix("failed to run command ") {
        unquote(p)
    } else if let Some(p) = middle
        .strip_prefix("exec ")
        .and_then(|p| p.strip_suffix(" failed"))
    {
        p
    } else if name == "env" {
        unquote(middle)
    } else {
        return None;
    };
    let shape = match errno {
        Errno::NoEntry if name == "nsenter" => ExecShape::Nsenter,
        Errno::NoEntry => ExecShape::NotFound,
        Errno::Access => ExecShape::PermissionDenied,
        Errno::Format => ExecShape::ExecFormat,
    };
    Some((shape, program_name(program)?, after))
}

/// Shells: `<shell>: [line N: | N: ][exec: ][line N: ]X: <reason>`, where the shell is a known
/// shell's name or path, a script (`/entrypoint.sh`, or any path when a line number follows),
/// or busybox's `exec` builtin.
fn shell<'a>(prefix: &str, name: &str, rest: &'a str) -> Option<Found<'a>> {
    let mut rest = rest;
    let mut numbered = false;
    let mut program = None;
    for _ in 0..4 {
        let (f, after) = field(rest)?;
        rest = after;
        if is_number(f.strip_prefix("line ").unwrap_or(f)) {
            numbered = true;
        } else if f != "exec" {
            program = Some(f);
            break;
        }
    }
    let program = program_name(program?)?;
    let known = SHELLS.contains(&name) || name == "exec";
    let script = prefix.ends_with(".sh") || prefix.ends_with(".bash");
    let path = prefix.starts_with('/') || prefix.starts_with("./");
    if !(known || script || (numbered && path)) {
        return None;
    }
    if let Some((reason, after)) = starts_with_any(rest, SHELL_REASONS) {
        return Some((reason, program, after));
    }
    // `/bin/bash: ./x: /bin/bash^M: bad interpreter: No such file or directory`
    let (_, after) = field(rest)?;
    let after = after.strip_prefix("bad interpreter: No such file or directory")?;
    word_ends(after).then_some((ExecShape::MissingInterpreter, program, after))
}

/// Shells' reasons, after the program.
const SHELL_REASONS: &[(&str, ExecShape)] = &[
    ("command not found", ExecShape::NotFound),
    ("not found", ExecShape::NotFound),
    ("Permission denied", ExecShape::PermissionDenied),
    ("cannot execute binary file", ExecShape::ExecFormat),
    ("Exec format error", ExecShape::ExecFormat),
];

/// zsh: `zsh: command not found: X`, `zsh:1: permission denied: X`.
fn zsh(rest: &str) -> Option<Found<'_>> {
    let (reason, after) = field(rest)?;
    let shape = match reason {
        "command not found" => ExecShape::NotFound,
        "permission denied" => ExecShape::PermissionDenied,
        "exec format error" => ExecShape::ExecFormat,
        _ => return None,
    };
    let end = after.find(|c: char| c.is_whitespace()).unwrap_or(after.len());
    Some((shape, program_name(&after[..end])?, &after[end..]))
}

/// Go's `os/exec` lookup errors, as runc reports the container's command and as Go programs
/// log them: `exec: "X": executable file not found in $PATH`, `exec: "/x": stat /x: no such
/// file or directory`, `exec: "/x": permission denied`; quotes may be escaped (`\"`).
fn go_exec(line: &str) -> Option<Match> {
    occurrences(line, "exec: ").find_map(|start| {
        if !boundary_before(line, start) {
            return None;
        }
        let rest = &line[start + "exec: ".len()..];
        let (quote, rest) = if let Some(rest) = rest.strip_prefix("\\\"") {
            ("\\\"", rest)
        } else {
            ("\"", rest.strip_prefix('"')?)
        };
        let close = rest.get(..MAX_NAME + quote.len()).unwrap_or(rest).find(quote)?;
        let program = program_name(&rest[..close])?;
        let rest = rest[close + quote.len()..].strip_prefix(": ")?;
        let (shape, after) = if let Some(after) = rest.strip_prefix("executable file not found in $PATH") {
            (ExecShape::NotInPath, after)
        } else if let Some(stat) = rest.strip_prefix("stat ") {
            let (_, after) = field(stat)?;
            match errno(after, &GO_ERRNO)? {
                (Errno::Access, after) => (ExecShape::PermissionDenied, after),
                (Errno::NoEntry, after) => (ExecShape::NotInPath, after),
                (Errno::Format, _) => return None,
            }
        } else if let Some(after) = rest.strip_prefix("is a directory") {
            (ExecShape::PermissionDenied, after)
        } else {
            match errno(rest, &GO_ERRNO)? {
                (Errno::Access, after) => (ExecShape::PermissionDenied, after),
                _ => return None,
            }
        };
        Some(Match::new(shape, Some(program), start, line.len() - after.len()))
    })
}

/// runc before 1.1: `exec user process caused: exec format error`, `exec user process caused
/// "no such file or directory"`. The program is not named.
fn exec_user_process(line: &str) -> Option<Match> {
    const CAUSED: &str = "exec user process caused";
    occurrences(line, CAUSED).find_map(|start| {
        let rest = &line[start + CAUSED.len()..];
        let rest = rest
            .strip_prefix(": ")
            .or_else(|| rest.strip_prefix(" \""))
            .or_else(|| rest.strip_prefix(" \\\""))?;
        let (errno, after) = errno(rest, &GO_ERRNO)?;
        let shape = match errno {
            Errno::Format => ExecShape::ExecFormat,
            Errno::Access => ExecShape::PermissionDenied,
            Errno::NoEntry => ExecShape::MissingInterpreter,
        };
        Some(Match::new(shape, None, start, line.len() - after.len()))
    })
}

/// runc 1.1+ (`exec /app/server: exec format error`) and Go (`fork/exec /usr/bin/x: exec format
/// error`): the program is a path. runc has found the file before it says "no such file or
/// directory", so that is its interpreter; Go has not.
fn runtime_exec(line: &str) -> Option<Match> {
    occurrences(line, "exec /")
        .chain(occurrences(line, "exec ./"))
        .filter(|&start| boundary_before(line, start) || line[..start].ends_with("fork/"))
        .take(MAX_ATTEMPTS)
        .find_map(|start| {
            let fork = line[..start].ends_with("fork/");
            let (program, rest) = field(&line[start + "exec ".len()..])?;
            let program = program_name(program)?;
            let (errno, after) = errno(rest, &GO_ERRNO)?;
            let shape = match errno {
                Errno::Format => ExecShape::ExecFormat,
                Errno::Access => ExecShape::PermissionDenied,
                Errno::NoEntry if fork => ExecShape::NotFound,
                Errno::NoEntry => ExecShape::MissingInterpreter,
            };
            let start = if fork { start - "fork/".len() } else { start };
            Some(Match::new(shape, Some(program), start, line.len() - after.len()))
        })
}

/// crun: ``executable file `X` not found in $PATH: No such file or directory``.
fn crun(line: &str) -> Option<Match> {
    const OPEN: &str = "executable file `";
    occurrences(line, OPEN).find_map(|start| {
        let rest = &line[start + OPEN.len()..];
        let close = rest.get(..=MAX_NAME).unwrap_or(rest).find('`')?;
        let program = program_name(&rest[..close])?;
        let after = rest[close + 1..].strip_prefix(" not found")?;
        Some(Match::new(
            ExecShape::NotInPath,
            Some(program),
            start,
            line.len() - after.len(),
        ))
    })
}

/// mount: `you might need a /sbin/mount.<type> helper program`. The type comes from `-t <type>`
/// (or `--types <type>`) anywhere in the message, else from the helper's name when it is not
/// literally `<type>`.
fn mount_helper(line: &str, message: &str) -> Option<Match> {
    const HELPER: &str = "/sbin/mount.";
    occurrences(line, HELPER).find_map(|start| {
        let rest = &line[start + HELPER.len()..];
        let end = rest.find(|c: char| c.is_whitespace())?;
        let named = &rest[..end];
        let after = rest[end..].trim_start().strip_prefix("helper program")?;
        let fs_type = type_option(message).or_else(|| fs_type(named));
        let program = fs_type.map(|t| format!("mount.{t}"));
        Some(Match {
            shape: ExecShape::MountHelper {
                fs_type: fs_type.map(str::to_owned),
            },
            program,
            start,
            end: line.len() - after.len(),
        })
    })
}

/// The `-t <type>` or `--types <type>` of a mount command line.
fn type_option(message: &str) -> Option<&str> {
    let mut words = message.split_whitespace();
    while let Some(word) = words.next() {
        if word == "-t" || word == "--types" {
            return fs_type(words.next()?);
        }
    }
    None
}

/// A filesystem type name: letters, digits and `._+-`, at most 64 bytes.
fn fs_type(name: &str) -> Option<&str> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        && name.bytes().any(|b| b.is_ascii_alphanumeric());
    ok.then_some(name)
}

/// The errors that mean a program could not be executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Errno {
    /// `ENOENT`.
    NoEntry,
    /// `EACCES`.
    Access,
    /// `ENOEXEC`.
    Format,
}

/// How C's `strerror` spells them.
const STRERROR: [(&str, Errno); 3] = [
    ("No such file or directory", Errno::NoEntry),
    ("Permission denied", Errno::Access),
    ("Exec format error", Errno::Format),
];

/// How Go spells them.
const GO_ERRNO: [(&str, Errno); 3] = [
    ("no such file or directory", Errno::NoEntry),
    ("permission denied", Errno::Access),
    ("exec format error", Errno::Format),
];

/// The errno `text` starts with (as a whole word), and the text after it.
fn errno<'a>(text: &'a str, table: &[(&str, Errno)]) -> Option<(Errno, &'a str)> {
    starts_with_any(text, table)
}

fn starts_with_any<'a, T: Clone>(text: &'a str, table: &[(&str, T)]) -> Option<(T, &'a str)> {
    table.iter().find_map(|(word, value)| {
        let after = text.strip_prefix(word)?;
        word_ends(after).then(|| (value.clone(), after))
    })
}

/// Whether a word ends where `after` starts: at the end or before a non-alphanumeric character.
fn word_ends(after: &str) -> bool {
    !after.starts_with(|c: char| c.is_alphanumeric())
}

/// Whether the byte before `at` ends a word (or there is none).
fn boundary_before(line: &str, at: usize) -> bool {
    !line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '/' || c == '-')
}

/// The text up to the first `: ` (looking no further than [`MAX_FIELD`] bytes), and after it.
fn field(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let end = bytes.len().min(MAX_FIELD + 2);
    let at = bytes[..end].windows(2).position(|w| w == b": ")?;
    Some((&text[..at], &text[at + 2..]))
}

/// Where `needle` occurs in `line`, at most [`MAX_ATTEMPTS`] times.
fn occurrences<'a>(line: &'a str, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    line.match_indices(needle).map(|(at, _)| at).take(MAX_ATTEMPTS)
}

/// Shells whose messages name the program they did not find.
const SHELLS: &[&str] = &[
    "sh", "ash", "dash", "bash", "rbash", "ksh", "mksh", "hush", "busybox",
];

/// The name of a message's prefix: `/bin/sh` → `sh`, `-bash` → `bash`, `zsh:1` → `zsh`. `None`
/// when it is not a name.
fn prefix_name(prefix: &str) -> Option<&str> {
    program_name(prefix)?;
    let base = prefix.rsplit('/').next()?;
    let base = base.strip_prefix('-').unwrap_or(base);
    let base = match base.split_once(':') {
        Some((name, line)) if is_number(line) => name,
        Some(_) => return None,
        None => base,
    };
    (!base.is_empty()).then_some(base)
}

/// The name of a program if it looks like one: 1 to 255 bytes, no whitespace, control
/// characters or quotes, not only dots.
fn program_name(name: &str) -> Option<&str> {
    let ok = (1..=MAX_NAME).contains(&name.len())
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '`'))
        && !name.bytes().all(|b| b == b'.');
    ok.then_some(name)
}

/// `'x'`, `‘x’`, `` `x' `` → `x`; anything else as it is.
fn unquote(text: &str) -> &str {
    for (open, close) in [('\'', '\''), ('\u{2018}', '\u{2019}'), ('`', '\''), ('"', '"')] {
        if let Some(inner) = text.strip_prefix(open).and_then(|t| t.strip_suffix(close)) {
            return inner;
        }
    }
    text
}

/// 1 to 9 digits.
fn is_number(text: &str) -> bool {
    (1..=9).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// At most [`EXCERPT`] bytes of `line`, including the match (`start..end`) when it fits.
fn excerpt(line: &str, start: usize, end: usize) -> String {
    if line.len() <= EXCERPT {
        return line.to_owned();
    }
    let end = end.max(EXCERPT.min(line.len())).min(line.len());
    let from = if end - start <= EXCERPT {
        end - EXCERPT
    } else {
        start
    };
    let from = ceil_boundary(line, from);
    let to = floor_boundary(line, (from + EXCERPT).min(end));
    line[from..to].to_owned()
}

#[cfg(test)]
#[path = "exec_failure_tests.rs"]
mod tests;
