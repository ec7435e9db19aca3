use super::*;

fn cursor(usec: u64, count: u32) -> Option<UsecCursor> {
    Some(UsecCursor { usec, count })
}

/// The texts of the lines after `cursor` in `buf`, `!` for a line that cannot be parsed.
fn after(buf: &str, cursor: Option<UsecCursor>) -> (Vec<String>, Scan) {
    let scan = scan(buf.as_bytes(), cursor).expect("scan");
    let mut out = Vec::new();
    new_lines(buf.as_bytes(), &scan, cursor, |l| {
        out.push(l.map_or_else(|_| "!".to_owned(), |l| l.text.to_owned()));
    });
    (out, scan)
}

#[test]
fn parses_priority_time_and_text() {
    let l = parse_line(b"<6>[19596.832927] EXT4-fs (loop0): re-mounted r/w.").expect("line");
    assert_eq!(
        (l.level, l.facility, l.usec, l.text),
        (6, 0, 19_596_832_927, "EXT4-fs (loop0): re-mounted r/w.")
    );
    let l = parse_line(b"<14>[    0.000001] user text").expect("line");
    assert_eq!((l.level, l.facility, l.usec), (6, 1, 1));
    // A task table row keeps its brackets; a caller id (CONFIG_PRINTK_CALLER) is dropped.
    let l = parse_line(b"<6>[  989.784995] [  15888]     0 15888    12857 sh").expect("row");
    assert_eq!(l.text, "[  15888]     0 15888    12857 sh");
    let l = parse_line(b"<4>[  989.784654][  T812] sh invoked oom-killer: x").expect("caller");
    assert_eq!(l.text, "sh invoked oom-killer: x");
    let l = parse_line(b"<4>[  989.784654][    C3] t").expect("cpu caller");
    assert_eq!(l.text, "t");
    let l = parse_line(b"<6>[1.000000] ").expect("empty text");
    assert_eq!(l.text, "");
}

#[test]
fn lines_without_priority_or_time_are_errors() {
    assert_eq!(parse_line(b"garbage"), Err(LineError::NoPriority));
    assert_eq!(parse_line(b"<x>[1.000000] t"), Err(LineError::NoPriority));
    assert_eq!(parse_line(b"<>[1.000000] t"), Err(LineError::NoPriority));
    assert_eq!(
        parse_line(b"<99999999999999>[1.000000] t"),
        Err(LineError::NoPriority)
    );
    assert_eq!(parse_line(b"<6>no time"), Err(LineError::NoTimestamp));
    assert_eq!(parse_line(b"<6>[  15888]     0 sh"), Err(LineError::NoTimestamp));
    assert_eq!(parse_line(b"<6>[1.5] short micros"), Err(LineError::NoTimestamp));
    assert_eq!(
        parse_line(b"<6>[99999999999999999999.000000] t"),
        Err(LineError::NoTimestamp)
    );
    assert_eq!(parse_line(b"<6>[1.000000] \xff\xfe"), Err(LineError::NotUtf8));
    assert_eq!(parse_line(b""), Err(LineError::NoPriority));
}

const BUF: &str = "\
<6>[    1.000000] a
<6>[    2.000000] b1
<6>[    2.000000] b2
<6>[    2.000000] b3
<6>[    3.000000] c
";

#[test]
fn without_a_cursor_every_line_is_new() {
    let (lines, scan) = after(BUF, None);
    assert_eq!(lines, ["a", "b1", "b2", "b3", "c"]);
    assert_eq!(scan.lost, 0);
}

#[test]
fn the_cursor_resumes_within_lines_that_share_a_timestamp() {
    assert_eq!(after(BUF, cursor(2_000_000, 1)).0, ["b2", "b3", "c"]);
    assert_eq!(after(BUF, cursor(2_000_000, 2)).0, ["b3", "c"]);
    assert_eq!(after(BUF, cursor(2_000_000, 3)).0, ["c"]);
    assert_eq!(after(BUF, cursor(1_000_000, 1)).0, ["b1", "b2", "b3", "c"]);
    assert!(after(BUF, cursor(3_000_000, 1)).0.is_empty());
    // A cursor after everything (the log was cleared): nothing new, nothing lost.
    let (lines, scan) = after(BUF, cursor(9_000_000, 1));
    assert!(lines.is_empty());
    assert_eq!(scan.lost, 0);
    // A cursor between two timestamps.
    assert_eq!(after(BUF, cursor(2_500_000, 1)).0, ["c"]);
}

#[test]
fn the_scan_stops_at_the_cursor_and_does_not_read_the_rest() {
    // Garbage before the cursor is never looked at again (it was counted when it was new).
    let buf = format!("\u{fffd}garbage\n{BUF}");
    let (lines, scan) = after(&buf, cursor(2_000_000, 3));
    assert_eq!(lines, ["c"]);
    // From the first line of the cursor's time on: `a` and the garbage are not read.
    assert_eq!(scan.new_from, buf.find("<6>[    2.000000] b1").expect("b1"));
    assert_eq!(scan.skip_at_cursor, 3);
}

#[test]
fn a_cursor_older_than_the_buffer_counts_lost_records() {
    // The cursor is the first line: nothing lost.
    let (lines, scan) = after(BUF, cursor(1_000_000, 1));
    assert_eq!(lines, ["b1", "b2", "b3", "c"]);
    assert_eq!(scan.lost, 0);
    // 3 lines in 2 s kept, 10 s missing since the cursor: about 15 lost, all 3 new.
    let buf = "<6>[   20.000000] x\n<6>[   21.000000] y\n<6>[   22.000000] z\n";
    let (lines, scan) = after(buf, cursor(10_000_000, 1));
    assert_eq!(lines, ["x", "y", "z"]);
    assert_eq!(scan.lost, 15);
    // Lines of the cursor's time remain: what was handled is still (partly) there.
    let buf = "<6>[    2.000000] b3\n<6>[    3.000000] c\n";
    let (lines, scan) = after(buf, cursor(2_000_000, 3));
    assert_eq!(lines, ["c"], "b3 was handled");
    assert_eq!(scan.lost, 0);
    // A single line, or lines all of one time: at least one lost.
    let (lines, scan) = after("<6>[    5.000000] only\n", cursor(1_000_000, 1));
    assert_eq!((lines.len(), scan.lost), (1, 1));
}

#[test]
fn garbage_after_the_cursor_is_reported_once_as_errors() {
    let buf: &[u8] = b"<6>[    1.000000] a\nnot a kernel line\n<6>[    1.000000] a2\n\xff\xfe\n<6>[    2.000000] b\n<6>[    3.000000] cut";
    let at = cursor(1_000_000, 1);
    let scan = scan(buf, at).expect("scan");
    let mut out = Vec::new();
    new_lines(buf, &scan, at, |l| out.push(l.map(|l| l.text)));
    // The garbage line after `a`... precedes no handled line, so it is new; then `a2` (two
    // lines share 1 s, one was handled), the invalid UTF-8, `b`; the cut last line is left out.
    assert_eq!(
        out,
        [
            Err(LineError::NoPriority),
            Ok("a2"),
            Err(LineError::NotUtf8),
            Ok("b")
        ]
    );
    assert!(scan.complete_end < buf.len(), "the cut last line is seen");
    // Garbage between lines already handled is not reported again.
    let at = cursor(1_000_000, 2);
    let scan2 = super::scan(buf, at).expect("scan");
    let mut out = Vec::new();
    new_lines(buf, &scan2, at, |l| out.push(l.map(|l| l.text)));
    assert_eq!(out, [Err(LineError::NotUtf8), Ok("b")]);
}

#[test]
fn lines_without_timestamps_cannot_be_followed() {
    let buf = b"<6>printk.time is off\n<6>so no line has a time\n";
    assert_eq!(scan(buf, None), Err(ScanError::NoTimestamps));
    assert_eq!(scan(buf, cursor(1, 1)), Err(ScanError::NoTimestamps));
    let message = ScanError::NoTimestamps.to_string();
    assert!(message.contains("printk.time=1"), "{message}");
    // An empty buffer, or garbage last, is not that error.
    assert!(scan(b"", None).is_ok());
    assert!(scan(b"<6>[1.000000] a\ngarbage\n", None).is_ok());
}

#[test]
fn the_end_cursor_counts_the_newest_lines_that_share_a_timestamp() {
    assert_eq!(end_cursor(BUF.as_bytes()), cursor(3_000_000, 1));
    let buf = &BUF[..BUF.find("<6>[    3").expect("c")];
    assert_eq!(end_cursor(buf.as_bytes()), cursor(2_000_000, 3));
    assert_eq!(end_cursor(b""), None);
    assert_eq!(end_cursor(b"garbage\n"), None);
    // Resuming from the end cursor finds nothing new.
    assert!(after(buf, end_cursor(buf.as_bytes())).0.is_empty());
}

#[test]
fn the_cursor_advances_and_orders_by_time_then_count() {
    let c = UsecCursor::advance(None, 5);
    assert_eq!(Some(c), cursor(5, 1));
    let c = UsecCursor::advance(Some(c), 5);
    assert_eq!(Some(c), cursor(5, 2));
    assert_eq!(Some(UsecCursor::advance(Some(c), 6)), cursor(6, 1));
    // An older timestamp after a newer one (two CPUs) leaves the cursor where it is.
    let six = UsecCursor::advance(Some(c), 6);
    assert_eq!(UsecCursor::advance(Some(six), 5), six);
    assert!(cursor(5, 2) < cursor(6, 1));
    assert!(cursor(5, 1) < cursor(5, 2));
}

#[test]
fn kernel_records_of_the_real_buffer_parse_with_rising_timestamps_and_user_records_are_filtered() {
    let mut klog = Klog::open().unwrap_or_else(|error| {
        panic!("this test reads the real kernel log through syslog(2) and needs root (as `make test` runs): {error}")
    });
    assert!(klog.capacity() >= MIN_BUFFER);
    // A user-space record (facility 1): in the buffer, but never a kernel record.
    let marker = format!("podmortem syslog unit test {}", std::process::id());
    let wrote = std::fs::write("/dev/kmsg", format!("{marker}\n")).is_ok();
    let buf = klog.read_all().expect("read").to_vec();
    let scan = scan(&buf, None).expect("the buffer has timestamps");
    let mut lines = Vec::new();
    new_lines(&buf, &scan, None, |l| lines.push(l));
    let parsed: Vec<Line<'_>> = lines.iter().filter_map(|l| l.ok()).collect();
    assert!(!parsed.is_empty());
    assert!(
        parsed.len() * 100 >= lines.len() * 99,
        "{} of {} lines parse",
        parsed.len(),
        lines.len()
    );
    // Timestamps rise (allowing the few microseconds two CPUs may disagree by).
    for w in parsed.windows(2) {
        assert!(w[1].usec + 1_000 >= w[0].usec, "{:?} then {:?}", w[0], w[1]);
    }
    assert!(
        wrote,
        "this test writes a record to /dev/kmsg and needs root (as `make test` runs)"
    );
    let mine: Vec<&Line<'_>> = parsed.iter().filter(|l| l.text.contains(&marker)).collect();
    assert_eq!(mine.len(), 1, "the record written to /dev/kmsg");
    assert_ne!(
        mine[0].facility, 0,
        "written from user space, so not a kernel record"
    );
    // It is the newest line, or close to it: the cursor at the end finds nothing after it.
    let end = end_cursor(&buf);
    assert!(end.is_some_and(|c| c.usec >= mine[0].usec));
}
