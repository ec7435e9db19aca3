use super::*;
use proptest::prelude::*;

/// Asserts that `line` parses to `shape` naming `program`.
#[track_caller]
fn check(line: &str, shape: ExecShape, program: Option<&str>) {
    let found = parse_line(line).unwrap_or_else(|| panic!("no match in {line:?}"));
    assert_eq!(found.shape, shape, "{line:?}");
    assert_eq!(found.program.as_deref(), program, "{line:?}");
}

#[test]
fn nsenter() {
    for line in [
        "nsenter: failed to execute iscsiadm: No such file or directory",
        "nsenter: can't execute 'iscsiadm': No such file or directory",
        "nsenter: exec iscsiadm failed: No such file or directory",
        "/usr/bin/nsenter: failed to execute iscsiadm: No such file or directory",
        "iscsi: discovery failed: exit status 127, output: nsenter: failed to execute iscsiadm: No such \
         file or directory",
    ] {
        check(line, ExecShape::Nsenter, Some("iscsiadm"));
    }
    check(
        "nsenter: failed to execute /sbin/iscsiadm: Permission denied",
        ExecShape::PermissionDenied,
        Some("/sbin/iscsiadm"),
    );
    check(
        "nsenter: can't execute 'iscsiadm': Exec format error",
        ExecShape::ExecFormat,
        Some("iscsiadm"),
    );
}

#[test]
fn shells_not_found() {
    for line in [
        "/bin/sh: iscsiadm: not found",
        "sh: 1: iscsiadm: not found",
        "/bin/sh: line 3: iscsiadm: not found",
        "bash: iscsiadm: command not found",
        "/bin/bash: line 1: iscsiadm: command not found",
        "/entrypoint.sh: line 12: iscsiadm: command not found",
        "/docker-entrypoint: line 12: iscsiadm: not found",
        "-bash: iscsiadm: command not found",
        "exec: line 1: iscsiadm: not found",
        "/bin/sh: exec: line 1: iscsiadm: not found",
        "sh: 1: exec: iscsiadm: not found",
        "bash: line 1: exec: iscsiadm: not found",
        "zsh: command not found: iscsiadm",
        "zsh:1: command not found: iscsiadm",
        "level=error msg=\"attach failed\" err=\"/bin/sh: iscsiadm: not found\"",
    ] {
        check(line, ExecShape::NotFound, Some("iscsiadm"));
    }
    check(
        "/bin/sh: /opt/tool/bin/run: not found",
        ExecShape::NotFound,
        Some("/opt/tool/bin/run"),
    );
}

#[test]
fn env_and_other_tools() {
    for line in [
        "env: 'iscsiadm': No such file or directory",
        "env: \u{2018}iscsiadm\u{2019}: No such file or directory",
        "env: iscsiadm: No such file or directory",
        "/usr/bin/env: 'iscsiadm': No such file or directory",
        "env: can't execute 'iscsiadm': No such file or directory",
        "chroot: failed to run command \u{2018}iscsiadm\u{2019}: No such file or directory",
        "timeout: failed to run command 'iscsiadm': No such file or directory",
        "unshare: failed to execute iscsiadm: No such file or directory",
    ] {
        check(line, ExecShape::NotFound, Some("iscsiadm"));
    }
    check(
        "env: 'run.sh': Permission denied",
        ExecShape::PermissionDenied,
        Some("run.sh"),
    );
}

#[test]
fn runtime_command_not_in_path() {
    check(
        "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc \
         create failed: unable to start container process: exec: \"iscsiadm\": executable file not \
         found in $PATH: unknown",
        ExecShape::NotInPath,
        Some("iscsiadm"),
    );
    check(
        "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc \
         create failed: unable to start container process: error during container init: exec: \
         \"/usr/bin/tool\": stat /usr/bin/tool: no such file or directory: unknown",
        ExecShape::NotInPath,
        Some("/usr/bin/tool"),
    );
    check(
        concat!(
            r#"E1123 02:19:31.820757 1 node.go:88] "attach failed" "#,
            r#"err="exec: \"iscsiadm\": executable file not found in $PATH""#,
        ),
        ExecShape::NotInPath,
        Some("iscsiadm"),
    );
    check(
        "container create failed: executable file `iscsiadm` not found in $PATH: No such file or \
         directory",
        ExecShape::NotInPath,
        Some("iscsiadm"),
    );
}

#[test]
fn mount_helper() {
    let kubelet = concat!(
        "MountVolume.SetUp failed for volume \"pv\" : mount failed: exit status 32\n",
        "Mounting command: mount\n",
        "Mounting arguments: -t nfs 10.0.0.7:/exports ",
        "/var/lib/kubelet/pods/6f1c/volumes/kubernetes.io~nfs/pv\n",
        "Output: mount: /var/lib/kubelet/pods/6f1c/volumes/kubernetes.io~nfs/pv: bad option; for several ",
        "filesystems (e.g. nfs, cifs) you might need a /sbin/mount.<type> helper program.\n",
    );
    let found = parse_line(kubelet).expect("match");
    assert_eq!(
        found.shape,
        ExecShape::MountHelper {
            fs_type: Some("nfs".to_owned())
        }
    );
    assert_eq!(found.program.as_deref(), Some("mount.nfs"));
    assert!(found.line.starts_with("Output: mount: "), "{}", found.line);

    let one_line = concat!(
        "MountVolume.SetUp failed for volume \"pv\" : mount failed: exit status 32 Mounting command: ",
        "systemd-run Mounting arguments: --description=Kubernetes transient mount --scope -- mount -t ",
        "cifs -o vers=3.0 //srv/share /var/lib/kubelet/pods/x Output: mount: /var/lib/kubelet/pods/x: ",
        "bad option; for several filesystems (e.g. nfs, cifs) you might need a /sbin/mount.<type> ",
        "helper program."
    );
    check(
        one_line,
        ExecShape::MountHelper {
            fs_type: Some("cifs".to_owned()),
        },
        Some("mount.cifs"),
    );
    check(
        "mount: /mnt: bad option; for several filesystems (e.g. nfs, cifs) you might need a \
         /sbin/mount.<type> helper program.",
        ExecShape::MountHelper { fs_type: None },
        None,
    );
    check(
        "you might need a /sbin/mount.glusterfs helper program",
        ExecShape::MountHelper {
            fs_type: Some("glusterfs".to_owned()),
        },
        Some("mount.glusterfs"),
    );
    check(
        "MountVolume.SetUp failed for volume \"pv\" : mount failed: exit status 32 ... mount: \
         /var/lib/kubelet/...: bad option; for several filesystems (e.g. nfs, cifs) you might need a \
         /sbin/mount.<type> helper program.",
        ExecShape::MountHelper { fs_type: None },
        None,
    );
    // util-linux 2.23 wraps the sentence.
    let old = "mount: wrong fs type, bad option, bad superblock on 10.0.0.7:/exports,\n       missing \
               codepage or helper program, or other error\n       (for several filesystems (e.g. nfs, cifs) \
               you might\n       need a /sbin/mount.<type> helper program)";
    check(old, ExecShape::MountHelper { fs_type: None }, None);
}

#[test]
fn exec_format_error() {
    check(
        "exec /app/server: exec format error",
        ExecShape::ExecFormat,
        Some("/app/server"),
    );
    check(
        "standard_init_linux.go:228: exec user process caused: exec format error",
        ExecShape::ExecFormat,
        None,
    );
    check(
        "standard_init_linux.go:190: exec user process caused \"exec format error\"",
        ExecShape::ExecFormat,
        None,
    );
    check(
        "fork/exec /usr/bin/x: exec format error",
        ExecShape::ExecFormat,
        Some("/usr/bin/x"),
    );
    check(
        "Error: run hook: fork/exec /usr/bin/x: exec format error",
        ExecShape::ExecFormat,
        Some("/usr/bin/x"),
    );
    check(
        "bash: ./x: cannot execute binary file: Exec format error",
        ExecShape::ExecFormat,
        Some("./x"),
    );
    check("zsh: exec format error: ./x", ExecShape::ExecFormat, Some("./x"));
}

#[test]
fn permission_denied() {
    check(
        "/bin/sh: ./run.sh: Permission denied",
        ExecShape::PermissionDenied,
        Some("./run.sh"),
    );
    check(
        "sh: 1: ./run.sh: Permission denied",
        ExecShape::PermissionDenied,
        Some("./run.sh"),
    );
    check(
        "/bin/bash: line 1: /app/run: Permission denied",
        ExecShape::PermissionDenied,
        Some("/app/run"),
    );
    check(
        "exec: \"/app/run\": permission denied",
        ExecShape::PermissionDenied,
        Some("/app/run"),
    );
    check(
        "exec: \"/app\": is a directory",
        ExecShape::PermissionDenied,
        Some("/app"),
    );
    check(
        "exec /app/run: permission denied",
        ExecShape::PermissionDenied,
        Some("/app/run"),
    );
    check(
        "zsh: permission denied: ./run.sh",
        ExecShape::PermissionDenied,
        Some("./run.sh"),
    );
}

#[test]
fn missing_interpreter() {
    check(
        "exec /docker-entrypoint.sh: no such file or directory",
        ExecShape::MissingInterpreter,
        Some("/docker-entrypoint.sh"),
    );
    check(
        "standard_init_linux.go:211: exec user process caused \"no such file or directory\"",
        ExecShape::MissingInterpreter,
        None,
    );
    check(
        "/bin/bash: ./run.sh: /bin/bash\r: bad interpreter: No such file or directory",
        ExecShape::MissingInterpreter,
        Some("./run.sh"),
    );
    // Go has not looked the file up: it is missing.
    check(
        "fork/exec /usr/bin/x: no such file or directory",
        ExecShape::NotFound,
        Some("/usr/bin/x"),
    );
}

#[test]
fn colour_codes_and_carriage_returns_are_stripped() {
    let found = parse_line("\x1b[31m/bin/sh: iscsiadm: not found\x1b[0m\r").expect("match");
    assert_eq!(found.line, "/bin/sh: iscsiadm: not found");
    check(
        "\x1b]0;title\x07bash: \x1b[1miscsiadm\x1b[0m: command not found",
        ExecShape::NotFound,
        Some("iscsiadm"),
    );
}

#[test]
fn lines_that_only_mention_not_found() {
    for line in [
        "404 not found",
        "user not found: bob",
        "Error: file config.yaml not found",
        "GET /x: not found",
        "api: users: not found",
        "GET /healthz: 404: not found",
        "key: not found",
        "bash: warning: setlocale: LC_ALL: cannot change locale (en_US.UTF-8): No such file or directory",
        "bash: config.yaml: No such file or directory",
        "open /etc/app/config.yaml: no such file or directory",
        "mkdir: /data: Permission denied",
        "ERROR: relation \"users\" not found",
        "exec: \"\": executable file not found in $PATH",
        "exec: \"two words\": executable file not found in $PATH",
        "/bin/sh: ..: not found",
        "/bin/sh: : not found",
        "sh: line 1: [: missing `]'",
        "exec format error",
        "will exec later: permission denied",
        "",
    ] {
        assert_eq!(parse_line(line), None, "{line:?}");
    }
    let long = "x".repeat(256);
    assert_eq!(parse_line(&format!("/bin/sh: {long}: not found")), None);
    check(
        &format!("/bin/sh: {}: not found", &long[1..]),
        ExecShape::NotFound,
        Some(&long[1..]),
    );
}

#[test]
fn find_returns_the_latest_of_the_last_twenty_lines() {
    let lines = [
        "bash: first: command not found",
        "starting",
        "/bin/sh: second: not found",
        "retrying in 5s",
    ];
    let found = find_exec_failure(lines.iter().copied()).expect("match");
    assert_eq!(found.program.as_deref(), Some("second"));

    let mut many = vec!["/bin/sh: early: not found"];
    many.extend(std::iter::repeat_n("noise", 20));
    assert_eq!(find_exec_failure(many.iter().copied()), None);
    many.remove(1);
    assert_eq!(
        find_exec_failure(many.iter().copied()).and_then(|f| f.program),
        Some("early".to_owned())
    );
}

#[test]
fn huge_lines_are_looked_at_only_near_their_ends() {
    let filler = "y ".repeat(3 * 1024 * 1024);
    let start = std::time::Instant::now();
    let found = parse_line(&format!("/bin/sh: iscsiadm: not found {filler}")).expect("head");
    assert_eq!(found.program.as_deref(), Some("iscsiadm"));
    assert!(found.line.len() <= 512);
    assert!(found.line.starts_with("/bin/sh: iscsiadm: not found"));
    let found = parse_line(&format!(
        "{filler} exit status 127: nsenter: failed to execute iscsiadm: No such file \
                                     or directory"
    ))
    .expect("tail");
    assert_eq!(found.shape, ExecShape::Nsenter);
    assert!(found.line.len() <= 512 && found.line.ends_with("No such file or directory"));
    assert_eq!(
        parse_line(&format!("{filler}/bin/sh: middle: not found{filler}")),
        None
    );
    // Many places to look at: still fast.
    let _ = parse_line(&"sh: exec: \"".repeat(1 << 16));
    let _ = parse_line(&"a\"a'".repeat(1 << 16));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn excerpt_keeps_the_match() {
    let line = format!(
        "{} exec: \"iscsiadm\": executable file not found in $PATH: unknown",
        "z".repeat(3000)
    );
    let found = parse_line(&line).expect("match");
    assert!(found.line.len() <= 512);
    assert!(
        found.line.ends_with("executable file not found in $PATH"),
        "{}",
        found.line
    );
    let multibyte = format!(
        "{} /bin/sh: iscsiadm: not found {}",
        "é".repeat(400),
        "é".repeat(400)
    );
    let found = parse_line(&multibyte).expect("match");
    assert!(found.line.len() <= 512 && found.line.contains("/bin/sh: iscsiadm: not found"));
}

proptest! {
    #[test]
    fn parse_line_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        text in any::<String>(),
    ) {
        let lossy = String::from_utf8_lossy(&bytes);
        for line in [lossy.as_ref(), text.as_str()] {
            if let Some(found) = parse_line(line) {
                prop_assert!(found.line.len() <= 512);
            }
        }
    }

    #[test]
    fn found_programs_look_like_programs(
        line in "(\x1b\\[1m|sh|/bin/sh|env|nsenter|exec|zsh|: |line 1|'|\"|\\\\|fork/|/| |x|\\.|not found|\
                 command not found|Permission denied|No such file or directory|exec format error|\
                 can't execute |failed to execute |executable file not found in \\$PATH|stat |\n|\r){0,24}"
    ) {
        if let Some(found) = parse_line(&line) {
            prop_assert!(found.line.len() <= 512);
            if let Some(program) = found.program {
                prop_assert!(!program.is_empty() && program.len() <= 255);
                prop_assert!(!program.chars().any(|c| c.is_whitespace() || c.is_control()));
                prop_assert!(program.bytes().any(|b| b != b'.'));
            }
        }
    }
}
