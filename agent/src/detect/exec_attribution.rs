//! Why a container could not run a program: missing on the host (a `MissingHostDependency` on
//! the pod: it entered the host's namespaces, or needed a mount helper, and the host lacks the
//! program) or missing in its image (`CommandNotFound`: the pod's command or image is wrong).
//! The exit detector asks this module when an abnormal exit comes with a post-mortem.

use super::missing_host_dep::fix_hint;
use super::{Evidence, EvidenceSource, FindingKind};
use crate::catalogue::Catalogue;
use crate::model::{ContainerInfo, Lookup, PostMortem};
use crate::sources::host::{searched_dirs, ProgramLookup};
use crate::sources::logs::exec_failure::{ExecFailure, ExecShape};

/// What the post-mortem says about an exit.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    /// The finding kind, when the exit is explained by a missing program; `None` keeps the
    /// exit a `ContainerExited` (with the evidence below).
    pub kind: Option<FindingKind>,
    /// The program concerned, for the fingerprint.
    pub program: String,
    /// What happened, to follow "container X of pod Y exited with code N: " in the summary.
    pub what: String,
    /// What to do.
    pub hint: Option<String>,
    /// The log lines and lookups.
    pub evidence: Vec<Evidence>,
}

fn missing(lookup: Option<&Lookup>) -> bool {
    matches!(
        lookup,
        Some(Lookup::Done(
            ProgramLookup::Missing { .. } | ProgramLookup::NotExecutable { .. }
        ))
    )
}

fn found(lookup: Option<&Lookup>) -> Option<&str> {
    match lookup {
        Some(Lookup::Done(ProgramLookup::Found { target, .. })) => Some(target),
        _ => None,
    }
}

/// One line on a lookup.
fn describe(lookup: Option<&Lookup>, program: &str, place: &str) -> String {
    match lookup {
        Some(Lookup::Done(ProgramLookup::Found { path, target })) if path == target => {
            format!("{place} has {program} at {path}")
        }
        Some(Lookup::Done(ProgramLookup::Found { path, target })) => {
            format!("{place} has {program} at {path} ({target})")
        }
        Some(Lookup::Done(ProgramLookup::NotExecutable { path, .. })) => {
            format!("{place} has {path}, but it is not an executable file")
        }
        Some(Lookup::Done(ProgramLookup::Missing { searched })) => {
            format!("{place} lacks {program} (searched {})", searched_dirs(searched))
        }
        Some(Lookup::Unknown(why)) => format!("{place} could not be checked for {program}: {why}"),
        None => format!("{place} was not checked for {program}"),
    }
}

fn lookup_evidence(source: EvidenceSource, lookup: Option<&Lookup>, program: &str, place: &str) -> Evidence {
    let e = Evidence::new(source, None, describe(lookup, program, place)).with("program", program);
    match lookup {
        Some(Lookup::Done(ProgramLookup::Found { path, target })) => e
            .with("found", true)
            .with("path", path.clone())
            .with("target", target.clone()),
        Some(Lookup::Done(_)) => e.with("found", false),
        _ => e,
    }
}

/// The log evidence: the matching line and the last lines.
pub fn log_evidence(c: &ContainerInfo, pm: &PostMortem) -> Option<Evidence> {
    if pm.log_tail.is_empty() && pm.exec_failure.is_none() {
        return None;
    }
    let mut e = match &pm.exec_failure {
        Some(f) => Evidence::new(EvidenceSource::Log, c.finished_at, format!("log: {}", f.line))
            .with("matched", f.line.clone())
            .with("shape", format!("{:?}", f.shape)),
        None => Evidence::new(
            EvidenceSource::Log,
            c.finished_at,
            format!("last log line: {}", pm.log_tail.last().map_or("", String::as_str)),
        ),
    };
    if !pm.log_tail.is_empty() {
        e = e.with("last_lines", pm.log_tail.clone());
    }
    if let Some(path) = &c.log_path {
        e = e.with("log_path", path.display().to_string());
    }
    Some(e)
}

/// Whether a failure to execute explains an exit with `code`: 126 (cannot execute), 127 (not
/// found) and 128 (the runtime could not start it) always; another error code only when the
/// failure is among the last lines of the log (a script that went on after a missing optional
/// tool failed for something else); an exit by a signal never.
fn explains(code: i32, failure: &ExecFailure, pm: &PostMortem) -> bool {
    match code {
        126..=128 => true,
        1..=125 => pm
            .log_tail
            .iter()
            .rev()
            .take(LAST_LINES)
            .any(|l| l.contains(failure.line.as_str())),
        _ => false,
    }
}

/// How close to the end of the log a failure must be to explain another error code.
const LAST_LINES: usize = 3;

/// Explains an exit with `code` from its post-mortem, or `None` when it names no program (or
/// the program does not explain the exit).
pub fn attribute(
    c: &ContainerInfo,
    code: i32,
    pm: &PostMortem,
    catalogue: &Catalogue,
    family: Option<&str>,
) -> Option<Attribution> {
    let failure @ ExecFailure {
        program: Some(program),
        ..
    } = pm.exec_failure.as_ref()?
    else {
        return None;
    };
    if !explains(code, failure, pm) {
        return None;
    }
    // `mount` says "you might need a helper" for any bad option: only a helper the catalogue
    // knows is taken for one.
    if matches!(failure.shape, ExecShape::MountHelper { .. }) && catalogue.by_binary(program).is_none() {
        return None;
    }
    let (on_host, in_image) = (pm.on_host.as_ref(), pm.in_image.as_ref());
    let mut evidence = vec![
        lookup_evidence(EvidenceSource::Host, on_host, program, "the host"),
        lookup_evidence(EvidenceSource::Image, in_image, program, "the image"),
    ];
    if let Some(e) = log_evidence(c, pm) {
        evidence.insert(0, e);
    }
    let dep = catalogue.by_binary(program);
    let quoted = format!("`{}`", failure.line);
    let mut out = Attribution {
        kind: None,
        program: program.clone(),
        what: String::new(),
        hint: None,
        evidence,
    };
    match &failure.shape {
        ExecShape::Nsenter | ExecShape::MountHelper { .. } => {
            let place = if matches!(failure.shape, ExecShape::Nsenter) {
                "it ran in the host's namespaces"
            } else {
                "the mount needs on the host"
            };
            if missing(on_host) {
                out.kind = Some(FindingKind::MissingHostDependency);
                let package = dep
                    .and_then(|d| d.package_for(family))
                    .map(|p| format!(" (package {p})"))
                    .unwrap_or_default();
                out.what = format!("the host lacks {program}{package}, which {place}: {quoted}");
                out.hint = Some(match dep {
                    Some(dep) => fix_hint(dep, family),
                    None => format!(
                        "Install the package that provides {program} on the node; bake it into the node image so new nodes have it."
                    ),
                });
            } else if let Some(at) = found(on_host) {
                out.what =
                    format!("it could not execute {program}, although the host has it at {at}: {quoted}");
                out.hint = Some(format!(
                    "The host has {program}: check the PATH the pod uses when it enters the host's namespaces, and that it enters the right process's mount namespace (nsenter -t 1 -m)."
                ));
            }
        }
        ExecShape::NotFound | ExecShape::NotInPath => {
            if found(in_image).is_some() {
                out.what = format!("it could not execute {program}, although its image has it: {quoted}");
            } else if !missing(in_image) {
                out.what = format!(
                    "it could not find {program} ({quoted}); {}",
                    describe(in_image, program, "the image")
                );
            } else {
                out.kind = Some(FindingKind::CommandNotFound);
                out.what = format!("it ran {program}, which is not in its image: {quoted}");
                let mut hint = format!(
                    "Fix the pod's command/args or the image: {program} is not on the image's PATH{}.",
                    c.path_env.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
                );
                if let Some(dep) = dep {
                    let package = dep
                        .package_for(family)
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default();
                    let host = match found(on_host) {
                        Some(at) => format!("the host has it at {at}"),
                        None if missing(on_host) => "the host lacks it too".to_owned(),
                        None => "the host could not be checked".to_owned(),
                    };
                    hint.push_str(&format!(
                        " {program} is a host tool{package}: a pod that drives the host's {program} runs it in the host's namespaces (`nsenter -t 1 -m -- {program}`, privileged, hostPID); {host}."
                    ));
                }
                out.hint = Some(hint);
            }
        }
        ExecShape::ExecFormat => {
            out.what =
                format!("it could not execute {program}, which is not a binary for this node: {quoted}");
            out.hint = Some(format!(
                "{program} is built for another CPU architecture (or is a script without an interpreter line): use an image built for this node's architecture."
            ));
        }
        ExecShape::MissingInterpreter => {
            out.what = format!(
                "it could not execute {program}: the interpreter or loader it names is missing: {quoted}"
            );
            out.hint = Some(format!(
                "{program} names an interpreter the image lacks: a `#!` line to a missing program (or ending in a Windows line break), or a binary built for another libc (glibc on a musl image). Fix the script's first line or use a matching base image."
            ));
        }
        ExecShape::PermissionDenied => {
            out.what = format!("it could not execute {program}, permission denied: {quoted}");
            out.hint = Some(format!(
                "{program} is not executable for the container's user: chmod +x it in the image, or check the mount it lies on for noexec."
            ));
        }
    }
    Some(out)
}

#[cfg(test)]
#[path = "exec_attribution_tests.rs"]
mod tests;
