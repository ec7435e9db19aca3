use super::*;
use proptest::prelude::*;

/// Asserts that `line` reports EROFS, naming `path` and `operation`.
#[track_caller]
fn check(line: &str, path: Option<&str>, operation: Option<&str>) {
    let found = parse_line(line).unwrap_or_else(|| panic!("no match in {line:?}"));
    assert_eq!(found.path.as_deref(), path, "path in {line:?}");
    assert_eq!(found.operation.as_deref(), operation, "operation in {line:?}");
    assert_eq!(found.line, line);
}

#[track_caller]
fn check_none(line: &str) {
    assert_eq!(parse_line(line), None, "{line:?}");
}

#[test]
fn busybox() {
    check(
        "sh: can't create /data.txt: Read-only file system",
        Some("/data.txt"),
        Some("create"),
    );
    check(
        "/bin/sh: can't create /var/run/app.pid: Read-only file system",
        Some("/var/run/app.pid"),
        Some("create"),
    );
    check(
        "mkdir: can't create directory '/x/y': Read-only file system",
        Some("/x/y"),
        Some("mkdir"),
    );
    check("touch: /x: Read-only file system", Some("/x"), Some("touch"));
    check(
        "rm: can't remove '/f': Read-only file system",
        Some("/f"),
        Some("remove"),
    );
    check(
        "cp: can't create '/etc/x': Read-only file system",
        Some("/etc/x"),
        Some("create"),
    );
}

#[test]
fn gnu_coreutils() {
    check(
        "mkdir: cannot create directory '/x': Read-only file system",
        Some("/x"),
        Some("mkdir"),
    );
    check(
        "mkdir: cannot create directory \u{2018}/x\u{2019}: Read-only file system",
        Some("/x"),
        Some("mkdir"),
    );
    check(
        "touch: cannot touch '/a b': Read-only file system",
        Some("/a b"),
        Some("touch"),
    );
    check(
        "touch: cannot touch 'a: b': Read-only file system",
        Some("a: b"),
        Some("touch"),
    );
    check(
        "rm: cannot remove '/f': Read-only file system",
        Some("/f"),
        Some("remove"),
    );
    check(
        "cp: cannot create regular file '/etc/x': Read-only file system",
        Some("/etc/x"),
        Some("create"),
    );
    check(
        "mv: cannot move 'a' to '/b': Read-only file system",
        Some("/b"),
        Some("rename"),
    );
    check(
        "chmod: changing permissions of '/etc/app.conf': Read-only file system",
        Some("/etc/app.conf"),
        Some("chmod"),
    );
    check(
        "ln: failed to create symbolic link '/usr/bin/app': Read-only file system",
        Some("/usr/bin/app"),
        Some("symlink"),
    );
    check(
        "tee: /var/log/out.log: Read-only file system",
        Some("/var/log/out.log"),
        Some("write"),
    );
    check(
        "sed: couldn't open temporary file /etc/sedAbC12: Read-only file system",
        Some("/etc/sedAbC12"),
        Some("open"),
    );
}

#[test]
fn relative_paths_only_when_quoted() {
    check(
        "touch: cannot touch 'data/x': Read-only file system",
        Some("data/x"),
        Some("touch"),
    );
    check("open data/x: read-only file system", None, Some("open"));
}

#[test]
fn shells() {
    check("bash: /data.txt: Read-only file system", Some("/data.txt"), None);
    check(
        "/entrypoint.sh: line 12: /data/out.log: Read-only file system",
        Some("/data/out.log"),
        None,
    );
}

#[test]
fn go() {
    check(
        "open /var/log/app.log: read-only file system",
        Some("/var/log/app.log"),
        Some("open"),
    );
    check(
        "mkdir /data/cache: read-only file system",
        Some("/data/cache"),
        Some("mkdir"),
    );
    check(
        "2024/01/02 15:04:05 failed to start: open /var/log/app.log: read-only file system",
        Some("/var/log/app.log"),
        Some("open"),
    );
    check("rename /a /b: read-only file system", Some("/b"), Some("rename"));
    check(
        "panic: remove /tmp/lock: read-only file system",
        Some("/tmp/lock"),
        Some("remove"),
    );
    check(
        "level=error msg=\"cannot start\" err=\"openat /data/db/LOCK: read-only file system\"",
        Some("/data/db/LOCK"),
        Some("open"),
    );
}

#[test]
fn python() {
    check(
        "OSError: [Errno 30] Read-only file system: '/data/x.db'",
        Some("/data/x.db"),
        None,
    );
    check(
        "PermissionError: [Errno 30] Read-only file system: b'/x'",
        Some("/x"),
        None,
    );
    check(
        "OSError: [Errno 30] Read-only file system: \"/data/it's\"",
        Some("/data/it's"),
        None,
    );
    check(
        "OSError: [Errno 30] Read-only file system: '/a' -> '/b'",
        Some("/b"),
        None,
    );
    check("OSError: [Errno 30] Read-only file system", None, None);
}

#[test]
fn java() {
    check(
        "java.io.FileNotFoundException: /tmp/app.log (Read-only file system)",
        Some("/tmp/app.log"),
        None,
    );
    check(
        "Caused by: java.nio.file.FileSystemException: /data/x: Read-only file system",
        Some("/data/x"),
        None,
    );
    check("java.io.IOException: Read-only file system", None, None);
}

#[test]
fn nginx() {
    check(
        "2024/01/01 00:00:00 [emerg] 1#1: mkdir() \"/var/cache/nginx/client_temp\" failed (30: \
         Read-only file system)",
        Some("/var/cache/nginx/client_temp"),
        Some("mkdir"),
    );
    check(
        "nginx: [emerg] open() \"/var/run/nginx.pid\" failed (30: Read-only file system)",
        Some("/var/run/nginx.pid"),
        Some("open"),
    );
    check(
        "2024/01/01 00:00:00 [crit] 7#7: *1 rename() \"/a\" to \"/b\" failed (30: Read-only file \
         system), client: 10.0.0.1",
        Some("/b"),
        Some("rename"),
    );
    check(
        "2024/01/01 00:00:00 [emerg] 1#1: chown(\"/var/cache/nginx/client_temp\", 101) failed (30: \
         Read-only file system)",
        Some("/var/cache/nginx/client_temp"),
        Some("chown"),
    );
}

#[test]
fn node() {
    check(
        "Error: EROFS: read-only file system, open '/app/data.json'",
        Some("/app/data.json"),
        Some("open"),
    );
    check(
        "[Error: EROFS: read-only file system, mkdir '/app/.cache'] { errno: -30, code: 'EROFS' }",
        Some("/app/.cache"),
        Some("mkdir"),
    );
    check(
        "Error: EROFS: read-only file system, rename '/app/a' -> '/app/b'",
        Some("/app/b"),
        Some("rename"),
    );
    check(
        "Error: EROFS: read-only file system, unlink '/app/x'",
        Some("/app/x"),
        Some("remove"),
    );
}

#[test]
fn rust() {
    check(
        "Error: Os { code: 30, kind: ReadOnlyFilesystem, message: \"Read-only file system\" }",
        None,
        None,
    );
    check(
        "failed to write /data/x: Read-only file system (os error 30)",
        Some("/data/x"),
        Some("write"),
    );
    check(
        "Error: failed to create file `/data/x`: Read-only file system (os error 30)",
        Some("/data/x"),
        Some("create"),
    );
    check(
        "Error: cannot save state: read-only filesystem or storage medium",
        None,
        Some("write"),
    );
}

#[test]
fn other_programs() {
    check(
        "2024-01-01 00:00:00.000 UTC [1] FATAL:  could not create lock file \
         \"/var/run/postgresql/.s.PGSQL.5432.lock\": Read-only file system",
        Some("/var/run/postgresql/.s.PGSQL.5432.lock"),
        Some("create"),
    );
    check(
        "2024-01-01T00:00:00Z 0 [ERROR] [MY-010187] [Server] Could not open file \
         '/var/log/mysql/error.log' for error logging: Read-only file system",
        Some("/var/log/mysql/error.log"),
        Some("open"),
    );
    check(
        "1:M 01 Jan 2024 00:00:00.000 # Can't open the append-only file: Read-only file system",
        None,
        Some("open"),
    );
    check(
        "mysqld: Can't create/write to file '/tmp/ibXXXX' (Errcode: 30 - Read-only file system)",
        None,
        None,
    );
}

#[test]
fn structured() {
    check(
        r#"{"level":"error","msg":"open /data/x: read-only file system"}"#,
        Some("/data/x"),
        Some("open"),
    );
    check(
        r#"{"level":"error","error":"mkdir /data/x: read-only file system","ts":1}"#,
        Some("/data/x"),
        Some("mkdir"),
    );
    check(
        r#"{"msg":"[Errno 30] Read-only file system: '/data/x'"}"#,
        Some("/data/x"),
        None,
    );
    check(
        r#"{"log":"nginx: [emerg] open() \"/var/run/nginx.pid\" failed (30: Read-only file system)\n"}"#,
        Some("/var/run/nginx.pid"),
        Some("open"),
    );
    check(r#"{"error":"read-only file system"}"#, None, None);
    check(
        r#"{"path":"/data/x: read-only file system"}"#,
        Some("/data/x"),
        None,
    );
    check("path=/data/x: read-only file system", Some("/data/x"), None);
}

#[test]
fn no_path() {
    check("write error: Read-only file system", None, Some("write"));
    check("Read-only file system", None, None);
    check("READ-ONLY FILE SYSTEM", None, None);
    check("error: Read-only filesystem", None, None);
}

#[test]
fn other_markers() {
    check("open /data/x: EROFS", Some("/data/x"), Some("open"));
    check("write failed: errno=EROFS", None, None);
    check("syscall failed (EROFS)", None, None);
    check("write failed with errno 30", None, None);
    check("[Errno 30] Schreibgeschützt: '/x'", None, None);
    check("io error: os error 30", None, None);
}

#[test]
fn colours_are_ignored() {
    let line = "\x1b[31mERROR\x1b[0m open /data/x: read-only file system";
    let found = parse_line(line).unwrap_or_else(|| panic!("no match"));
    assert_eq!(found.path.as_deref(), Some("/data/x"));
    assert_eq!(found.operation.as_deref(), Some("open"));
    assert_eq!(found.line, line);
}

#[test]
fn negatives() {
    for line in [
        "",
        "mounting /config read-only",
        "readOnlyRootFilesystem: true",
        "securityContext: {readOnlyRootFilesystem: true}",
        "EROFSX",
        "XEROFS: oops",
        "EROFS filesystem mounted on /usr",
        "erofs: (device loop0): mounted with root inode @ nid 36.",
        "the file system is readonly-capable",
        "mounted /data as a read-only file system",
        "Warning: read-only file system detected, writes disabled",
        "read-only file systems are supported",
        "errno 300",
        "errno 3",
        "\u{fffd}\u{fffd}\x00\x01\x02 \u{7f}\u{fffd}\x1b[0m\u{fffd}",
        "{\"level\":\"info\",\"msg\":\"readonly config loaded\"}",
    ] {
        check_none(line);
    }
}

#[test]
fn long_lines_are_bounded() {
    let long = "x".repeat(1 << 20);
    check_none(&long);
    let late = format!("{long} open /x: read-only file system");
    check_none(&late);
    let early = format!("open /x: read-only file system {long}");
    assert_eq!(parse_line(&early), None);
    let early = format!("open /x: read-only file system; {long}");
    let found = parse_line(&early).unwrap_or_else(|| panic!("no match"));
    assert_eq!(found.path.as_deref(), Some("/x"));
    assert_eq!(found.line.len(), WINDOW);
    let repeated = "read-only file system: ".repeat(50_000);
    assert!(parse_line(&repeated).is_some());
    // A multi-byte character across the window's end.
    let wide = format!("Read-only file system ({}", "\u{e9}".repeat(WINDOW));
    let found = parse_line(&wide).unwrap_or_else(|| panic!("no match"));
    assert!(found.line.len() <= WINDOW && found.line.len() > WINDOW - 2);
}

#[test]
fn find_erofs_takes_the_last() {
    let lines = [
        "starting",
        "open /a: read-only file system",
        "mkdir /b: read-only file system",
        "exiting",
    ];
    let found = find_erofs(lines.iter().copied()).unwrap_or_else(|| panic!("no match"));
    assert_eq!(found.path.as_deref(), Some("/b"));
    assert_eq!(found.operation.as_deref(), Some("mkdir"));
    assert_eq!(find_erofs(["a", "b"].into_iter()), None);
    assert_eq!(find_erofs(std::iter::empty()), None);
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
                prop_assert!(found.line.len() <= WINDOW);
                if let Some(path) = found.path {
                    prop_assert!(!path.is_empty() && !path.chars().any(char::is_control));
                }
            }
        }
    }

    #[test]
    fn parse_line_never_panics_near_markers(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("read-only file system".to_owned()),
                Just("EROFS".to_owned()),
                Just("[Errno 30]".to_owned()),
                Just(": ".to_owned()),
                Just("'".to_owned()),
                Just("\"".to_owned()),
                Just("\\\"".to_owned()),
                Just("\u{2019}".to_owned()),
                Just(" -> ".to_owned()),
                Just("() ".to_owned()),
                Just(" failed (30: ".to_owned()),
                Just(" to ".to_owned()),
                "[ -~]{0,8}",
                "\\PC{0,4}",
            ],
            0..24,
        ),
    ) {
        let line = parts.concat();
        if let Some(found) = parse_line(&line) {
            prop_assert_eq!(found.line, line);
        }
    }

    #[test]
    fn go_paths_are_exact(
        prefix in "[a-z ]{0,20}",
        op in prop::sample::select(vec!["open", "mkdir", "remove", "chmod"]),
        path in "(/[A-Za-z0-9._-]{1,12}){1,5}",
    ) {
        let line = format!("{prefix}: {op} {path}: read-only file system");
        let found = parse_line(&line);
        prop_assert!(found.is_some());
        let found = found.unwrap_or_else(|| unreachable!());
        prop_assert_eq!(found.path.as_deref(), Some(path.as_str()));
        prop_assert_eq!(found.operation.as_deref(), Some(op));
    }

    #[test]
    fn quoted_paths_are_exact(path in "/[A-Za-z0-9 ._:-]{1,40}") {
        let line = format!("touch: cannot touch '{path}': Read-only file system");
        let found = parse_line(&line);
        prop_assert!(found.is_some());
        let found = found.unwrap_or_else(|| unreachable!());
        prop_assert_eq!(found.path.as_deref(), Some(path.as_str()));
    }
}

#[test]
fn a_non_ascii_character_before_a_function_call_is_no_panic() {
    let got = parse_line("xé() \"/x\" failed (30: Read-only file system)");
    assert_eq!(got.and_then(|e| e.path), Some("/x".to_owned()));
    let got = parse_line("日本() \"/y\" failed (30: Read-only file system)");
    assert_eq!(got.and_then(|e| e.path), Some("/y".to_owned()));
}
