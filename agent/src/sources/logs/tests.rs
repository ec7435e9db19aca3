use super::*;
use proptest::prelude::*;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::sources::logs::exec_failure::{find_exec_failure, ExecShape};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/logs")
        .join(name)
}

fn texts(tail: &LogTail) -> Vec<&str> {
    tail.lines.iter().map(|l| l.text.as_str()).collect()
}

fn config(max_bytes: u64, max_lines: usize, max_line_bytes: usize) -> TailConfig {
    TailConfig {
        max_bytes,
        max_lines,
        max_line_bytes,
    }
}

/// The tail of a file holding `bytes`, in a fresh directory.
fn tail_of(bytes: &[u8], config: &TailConfig) -> LogTail {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    fs::write(&path, bytes).unwrap();
    read_tail(&path, config).unwrap()
}

#[test]
fn defaults() {
    assert_eq!(TailConfig::default(), config(64 * 1024, 50, 4096));
}

#[test]
fn basic_file_whole_and_the_exec_failure_in_it() {
    let tail = read_tail(&fixture("basic.log"), &TailConfig::default()).unwrap();
    assert_eq!(tail.path, fixture("basic.log"));
    assert_eq!(
        (tail.lines.len(), tail.malformed, tail.rotated_from.as_ref()),
        (7, 0, None)
    );
    let line = &tail.lines[4];
    assert_eq!(line.text, "/bin/sh: iscsiadm: not found");
    assert_eq!((line.stream, line.truncated), (Stream::Stderr, false));
    assert_eq!(
        line.at,
        Some(SystemTime::UNIX_EPOCH + Duration::new(1_795_400_371, 820_757_827))
    );
    assert_eq!(tail.lines[6].stream, Stream::Stdout);
    let found = find_exec_failure(tail.lines.iter().map(|l| l.text.as_str())).unwrap();
    assert_eq!(found.shape, ExecShape::NotFound);
    assert_eq!(found.program.as_deref(), Some("iscsiadm"));
}

#[test]
fn window_cut_mid_line_drops_the_cut_line() {
    let path = fixture("basic.log");
    let len = fs::metadata(&path).unwrap().len();
    let text = fs::read_to_string(&path).unwrap();
    let last_two = text
        .lines()
        .rev()
        .take(2)
        .map(|l| l.len() as u64 + 1)
        .sum::<u64>();
    // Starts 10 bytes before the last two lines: inside the `/bin/sh` line's predecessor's end.
    let tail = read_tail(&path, &config(last_two + 10, 50, 4096)).unwrap();
    assert_eq!(
        texts(&tail),
        [
            "E1123 02:19:31.820911       1 iscsi_util.go:408] iscsi: failed to attach disk: exit status 127",
            "exiting with status 1"
        ]
    );
    assert_eq!(tail.malformed, 0);
    // Exactly at a line start, the first line is still dropped: the window cannot tell.
    let tail = read_tail(&path, &config(last_two, 50, 4096)).unwrap();
    assert_eq!(texts(&tail), ["exiting with status 1"]);
    // The whole file: nothing is dropped.
    let tail = read_tail(&path, &config(len, 50, 4096)).unwrap();
    assert_eq!(tail.lines.len(), 7);
}

#[test]
fn max_lines_keeps_the_last() {
    let tail = read_tail(&fixture("basic.log"), &config(1 << 20, 2, 4096)).unwrap();
    assert_eq!(
        texts(&tail)[1..],
        ["exiting with status 1"],
        "the rotated-file rule does not apply: the window held enough lines"
    );
    assert_eq!(tail.lines.len(), 2);
    let tail = read_tail(&fixture("basic.log"), &config(1 << 20, 0, 4096)).unwrap();
    assert!(tail.lines.is_empty());
}

#[test]
fn partials_are_joined_per_stream() {
    let tail = read_tail(&fixture("partials.log"), &TailConfig::default()).unwrap();
    assert_eq!(
        texts(&tail),
        [
            "warning: interleaved",
            "panic: runtime error: index out of range [3] with length 3 (caf\u{e9})",
            "goroutine 1 [running]:",
            "main.main()",
            "",
            "\t/app/main.go:12 +0x1d",
            "exit status 2, no newline before death",
        ]
    );
    assert_eq!(tail.malformed, 0);
    let at = |i: usize| {
        tail.lines[i]
            .at
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
    };
    assert_eq!(
        at(1),
        Some(Duration::new(1_795_400_400, 1)),
        "first record's time"
    );
    assert_eq!(
        at(2),
        Some(Duration::new(1_795_400_401, 500_000_000)),
        "+01:00 offset"
    );
    assert_eq!(at(3), None, "bad timestamp, line kept");
    assert!(tail.lines.iter().all(|l| !l.truncated));
}

#[test]
fn long_line_in_partial_records_is_cut() {
    // Large enough to hold the whole file: the 200 KiB line is cut to 4096 bytes.
    let tail = read_tail(&fixture("long-line.log"), &config(1 << 20, 50, 4096)).unwrap();
    assert_eq!(tail.lines.len(), 3);
    assert_eq!(tail.lines[0].text, "loading model");
    let long = &tail.lines[1];
    assert!(long.truncated);
    assert_eq!(long.text.len(), 4096);
    assert!(long.text.starts_with("0000000 0000001 "));
    assert_eq!(
        (tail.lines[2].text.as_str(), tail.lines[2].truncated),
        ("Killed", false)
    );
    // The default 64 KiB window starts inside the long line: its last records still join.
    let tail = read_tail(&fixture("long-line.log"), &TailConfig::default()).unwrap();
    assert_eq!(tail.lines.len(), 2);
    assert!(tail.lines[0].truncated && tail.lines[0].text.len() == 4096);
    assert_eq!(tail.lines[1].text, "Killed");
}

#[test]
fn one_huge_record_is_cut_on_a_char_boundary() {
    let mut file = b"2026-11-23T02:21:00Z stdout F ".to_vec();
    file.extend("\u{e9}".repeat(100 * 1024).bytes());
    file.push(b'\n');
    let tail = tail_of(&file, &config(1 << 20, 50, 4095));
    assert_eq!(tail.lines.len(), 1);
    assert_eq!(tail.lines[0].text.len(), 4094);
    assert!(tail.lines[0].truncated);
}

#[test]
fn binary_garbage_is_skipped_and_counted() {
    let tail = read_tail(&fixture("garbage.log"), &TailConfig::default()).unwrap();
    assert_eq!(
        texts(&tail),
        [
            "before the junk",
            "not a timestamp but the rest parses",
            "bytes \u{fffd}\u{fffd} in a line",
            "after the junk"
        ]
    );
    assert_eq!(tail.lines[1].at, None);
    assert_eq!(tail.malformed, 5);
}

#[test]
fn rotated_file_supplies_the_lines_before_a_short_current_one() {
    let path = fixture("rotated/0.log");
    let tail = read_tail(&path, &TailConfig::default()).unwrap();
    assert_eq!(tail.path, path);
    assert_eq!(tail.rotated_from, Some(fixture("rotated/0.log.20261123-101010")));
    let all = texts(&tail);
    assert_eq!(all.len(), 34);
    assert_eq!(all[0], "rotated 0");
    assert_eq!(
        all[29..],
        [
            "rotated 29",
            "split across the rotation",
            "current 0",
            "current 1",
            "current 2"
        ]
    );
    assert!(!all
        .iter()
        .any(|t| t.starts_with("older") || t.starts_with("compressed")));

    let tail = read_tail(&path, &config(1 << 20, 5, 4096)).unwrap();
    assert_eq!(texts(&tail)[..2], ["rotated 29", "split across the rotation"]);

    // Enough lines in the current file: the rotated one is not read.
    let tail = read_tail(&path, &config(1 << 20, 3, 4096)).unwrap();
    assert_eq!((tail.lines.len(), tail.rotated_from), (3, None));

    // The bytes left after the current file bound what is read of the rotated one.
    let current = fs::metadata(&path).unwrap().len();
    let tail = read_tail(&path, &config(current + 60, 50, 4096)).unwrap();
    assert_eq!(texts(&tail)[0], "split across the rotation");
    let tail = read_tail(&path, &config(current, 50, 4096)).unwrap();
    assert_eq!((tail.lines.len(), tail.rotated_from), (4, None));
}

#[test]
fn missing_current_file_reads_the_rotated_one() {
    let path = fixture("rotated/1.log");
    let tail = read_tail(&path, &TailConfig::default()).unwrap();
    assert_eq!(
        texts(&tail),
        ["only rotated 0", "only rotated 1", "only rotated 2"]
    );
    assert_eq!(tail.rotated_from, Some(fixture("rotated/1.log.20261123-120000")));
    assert_eq!(tail.path, path);
}

#[test]
fn missing_file_is_not_found_with_its_path() {
    let path = fixture("rotated/2.log");
    let error = read_tail(&path, &TailConfig::default()).unwrap_err();
    assert!(error.is_not_found());
    assert!(error.to_string().contains("rotated/2.log"), "{error}");
    let error = read_tail(Path::new("/nonexistent/dir/0.log"), &TailConfig::default()).unwrap_err();
    assert!(error.is_not_found());
    let error = read_tail(&fixture("rotated"), &TailConfig::default()).unwrap_err();
    assert!(!error.is_not_found());
}

#[test]
fn empty_current_file_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("3.log");
    fs::write(&path, "").unwrap();
    fs::write(
        dir.path().join("3.log.20261123-101010"),
        "2026-11-23T10:10:10Z stdout F before\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("3.log.20261123-101011.gz"),
        "not gzip, never read",
    )
    .unwrap();
    fs::write(dir.path().join("3.log.20261123-101012.tmp"), "x").unwrap();
    fs::write(dir.path().join("3.log.2026112x-101012"), "x").unwrap();
    fs::write(dir.path().join("33.log.20261123-101013"), "x").unwrap();
    let tail = read_tail(&path, &TailConfig::default()).unwrap();
    assert_eq!(texts(&tail), ["before"]);
    assert_eq!(tail.rotated_from, Some(dir.path().join("3.log.20261123-101010")));
}

#[test]
fn rotation_stamps() {
    assert_eq!(rotation_stamp("20261123-101010"), Some((20_261_123, 101_010)));
    assert!(rotation_stamp("20261123-101010") > rotation_stamp("20261122-235959"));
    for bad in [
        "20261123-101010.gz",
        "20261123",
        "-101010",
        "20261123-",
        "a-1",
        "1-+1",
        "",
    ] {
        assert_eq!(rotation_stamp(bad), None, "{bad}");
    }
}

#[test]
fn hundred_megabytes_without_a_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let file = File::create(&path).unwrap();
    file.set_len(100 * 1024 * 1024).unwrap();
    drop(file);
    let start = Instant::now();
    let tail = read_tail(&path, &TailConfig::default()).unwrap();
    assert!(tail.lines.is_empty());
    assert_eq!((tail.malformed, tail.rotated_from), (0, None));

    // The same file with records after the giant line.
    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"\n2026-11-23T02:19:31Z stderr F /bin/sh: iscsiadm: not found\n")
        .unwrap();
    let tail = read_tail(&path, &TailConfig::default()).unwrap();
    assert_eq!(texts(&tail), ["/bin/sh: iscsiadm: not found"]);
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
}

#[test]
fn one_giant_record_at_the_start_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"2026-11-23T02:19:31Z stdout P ").unwrap();
    file.set_len(20 * 1024 * 1024).unwrap();
    let tail = read_tail(&path, &config(30 * 1024 * 1024, 50, 100)).unwrap();
    assert_eq!(tail.lines.len(), 1);
    assert_eq!((tail.lines[0].text.len(), tail.lines[0].truncated), (100, true));
}

proptest! {
    #[test]
    fn read_tail_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        records in proptest::collection::vec(
            ("(2026-11-23T02:19:3[0-9](\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})|x|)",
             "(stdout|stderr|stdin)", "(F|P|F:x|X|)", "[a-zé \u{0}]{0,12}"),
            0..30,
        ),
        max_bytes in 0u64..3000,
        max_lines in 0usize..8,
        max_line_bytes in 0usize..20,
    ) {
        let config = config(max_bytes, max_lines, max_line_bytes);
        let text: String = records.iter().map(|(t, s, tag, x)| format!("{t} {s} {tag} {x}\n")).collect();
        for content in [bytes.as_slice(), text.as_bytes()] {
            let tail = tail_of(content, &config);
            prop_assert!(tail.lines.len() <= max_lines);
            for line in &tail.lines {
                prop_assert!(line.text.len() <= max_line_bytes);
            }
        }
    }
}
