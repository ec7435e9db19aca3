//! What a container's exit code means.

use std::borrow::Cow;

use serde::Serialize;

/// A signal, by number and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signal {
    /// The signal number (Linux, x86-64 and arm64 numbering).
    pub number: i32,
    /// The name, e.g. `SIGKILL`, `SIGRTMIN+3`.
    pub name: Cow<'static, str>,
}

/// The decoded meaning of an exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitCause {
    /// The raw code.
    pub code: i32,
    /// The signal that killed the process, when the code is 128+N.
    pub signal: Option<Signal>,
    /// A short phrase for humans.
    pub meaning: &'static str,
}

const SIGNALS: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// glibc's first real-time signal (the kernel's 32 and 33 are reserved by the C library).
const SIGRTMIN: i32 = 34;

/// Signal `number` with its name; real-time signals are `SIGRTMIN+n`, 32 and 33 `SIG32`,
/// `SIG33`; anything else `None`.
pub fn signal(number: i32) -> Option<Signal> {
    let name = match number {
        1..=31 => Cow::Borrowed(SIGNALS[usize::try_from(number - 1).ok()?]),
        32 | 33 => Cow::Owned(format!("SIG{number}")),
        SIGRTMIN..=64 => Cow::Owned(format!("SIGRTMIN+{}", number - SIGRTMIN)),
        _ => return None,
    };
    Some(Signal { number, name })
}

/// Decodes an exit code as shells, runc and containerd produce it: 128+N means killed by
/// signal N; 126 and 127 come from the shell or runtime failing to run the command.
pub fn explain(code: i32) -> ExitCause {
    let signal = (129..=192).contains(&code).then(|| signal(code - 128)).flatten();
    let meaning = match (code, signal.as_ref().map(|s| s.name.as_ref())) {
        (0, _) => "success",
        (1, _) => "application error",
        (2, _) => "misuse of a shell builtin or invalid arguments",
        (125, _) => "the container runtime could not run the command",
        (126, _) => "command found but not executable",
        (127, _) => "command not found",
        (128, _) => "invalid exit argument",
        (_, Some("SIGKILL")) => "killed by SIGKILL",
        (_, Some("SIGSEGV")) => "segmentation fault",
        (_, Some("SIGTERM")) => "terminated by SIGTERM",
        (_, Some("SIGABRT")) => "aborted",
        (_, Some("SIGBUS")) => "bus error",
        (_, Some("SIGILL")) => "illegal instruction",
        (_, Some("SIGFPE")) => "arithmetic exception",
        (_, Some("SIGINT")) => "interrupted by SIGINT",
        (_, Some("SIGPIPE")) => "broken pipe",
        (_, Some("SIGXCPU")) => "CPU time limit exceeded",
        (_, Some("SIGXFSZ")) => "file size limit exceeded",
        (_, Some(_)) => "killed by a signal",
        (255, _) => "exit status out of range or -1",
        _ => "application error",
    };
    ExitCause {
        code,
        signal,
        meaning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_codes_people_meet() {
        assert_eq!(explain(127).meaning, "command not found");
        assert_eq!(explain(126).meaning, "command found but not executable");
        assert_eq!(explain(3).signal, None);
        let kill = explain(137);
        assert_eq!(
            kill.signal,
            Some(Signal {
                number: 9,
                name: "SIGKILL".into()
            })
        );
        let name = |code| explain(code).signal.map(|s| s.name.into_owned());
        assert_eq!(name(139).as_deref(), Some("SIGSEGV"));
        assert_eq!(name(143).as_deref(), Some("SIGTERM"));
        assert_eq!(name(134).as_deref(), Some("SIGABRT"));
        assert_eq!(name(159).as_deref(), Some("SIGSYS"));
        assert_eq!(name(160).as_deref(), Some("SIG32"));
        assert_eq!(name(162).as_deref(), Some("SIGRTMIN+0"));
        assert_eq!(name(192).as_deref(), Some("SIGRTMIN+30"));
        assert_eq!(explain(160).meaning, "killed by a signal");
        assert_eq!(name(193), None);
        assert_eq!(explain(255).signal, None);
        assert_eq!(explain(-1).meaning, "application error");
        assert_eq!(explain(i32::MAX).signal, None);
    }

    #[test]
    fn every_classic_signal_has_a_name() {
        for n in 1..=31 {
            assert!(signal(n).is_some_and(|s| s.name.starts_with("SIG")), "{n}");
        }
        assert_eq!(signal(0), None);
        assert_eq!(signal(65), None);
    }
}
