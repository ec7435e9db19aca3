use super::*;

const BOOT: &str = "5e1b8a7c-0d2f-4c3e-9a1b-2c3d4e5f6a7b";

/// A host root whose /dev/kmsg is a regular file holding `log`.
fn host(log: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("dev")).expect("dev");
    std::fs::create_dir_all(dir.path().join("proc/sys/kernel/random")).expect("proc");
    std::fs::write(
        dir.path().join("proc/sys/kernel/random/boot_id"),
        format!("{BOOT}\n"),
    )
    .expect("boot id");
    std::fs::write(dir.path().join("dev/kmsg"), log).expect("kmsg");
    dir
}

/// Runs the source until it has sent a checkpoint at or after `until`; returns what it sent.
async fn read(root: &Path, resume: Option<KmsgPosition>, until: u64) -> (Vec<KmsgEvent>, Arc<KmsgStats>) {
    let source = KmsgSource::new(root, KmsgConfig::default(), resume);
    let stats = source.stats();
    let (tx, mut rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, stop.clone()));
    let mut events = Vec::new();
    while let Ok(Some(SourceEvent::Kmsg(e))) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        let done = matches!(&e, KmsgEvent::Checkpoint(p) if p.seq >= until);
        events.push(e);
        if done {
            break;
        }
    }
    stop.cancel();
    task.await.expect("source");
    (events, stats)
}

fn kill_pids(events: &[KmsgEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            KmsgEvent::OomKill { kill, .. } => Some(kill.pid),
            KmsgEvent::Checkpoint(_) | KmsgEvent::FsError { .. } => None,
        })
        .collect()
}

const LOG: &str = include_str!("../../tests/fixtures/kmsg/6.18-memcg-v1.kmsg");

#[tokio::test]
async fn a_new_boot_reads_the_whole_buffer() {
    let dir = host(LOG);
    let old = KmsgPosition {
        boot_id: "another-boot".into(),
        seq: 9999,
        syslog: false,
        usec: None,
    };
    let (events, stats) = read(dir.path(), Some(old), 420).await;
    assert_eq!(kill_pids(&events), [15888]);
    let last = events.last().expect("events");
    assert_eq!(
        last,
        &KmsgEvent::Checkpoint(KmsgPosition {
            boot_id: BOOT.into(),
            seq: 420,
            syslog: false,
            usec: Some(UsecCursor {
                usec: 989_785_346,
                count: 1
            }),
        })
    );
    assert_eq!(stats.records.load(Ordering::Relaxed), 80);
    assert_eq!(stats.lost.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_restart_on_the_same_boot_resumes_after_the_last_record_handled() {
    let dir = host(LOG);
    let at = |seq| {
        Some(KmsgPosition {
            boot_id: BOOT.into(),
            seq,
            syslog: false,
            usec: None,
        })
    };
    let (events, _) = read(dir.path(), at(420), 420).await;
    assert!(
        kill_pids(&events).is_empty(),
        "the kill at 420 was handled before: {events:?}"
    );
    // Resuming in the middle of a report still reports the kill, with what is left of it.
    let (events, _) = read(dir.path(), at(400), 420).await;
    assert_eq!(kill_pids(&events), [15888]);
    // Records overwritten while podmortem was down are counted.
    let (_, stats) = read(dir.path(), at(300), 420).await;
    assert_eq!(stats.lost.load(Ordering::Relaxed), 40);
}

#[tokio::test]
async fn checkpoints_never_pass_a_report_in_progress_and_user_records_do_not_count() {
    let mut log: String = LOG
        .lines()
        .filter(|l| !l.contains(",420,"))
        .map(|l| format!("{l}\n"))
        .collect();
    // A user-space process writing an OOM-looking line into the kernel log.
    log.push_str("14,422,989785400,-;Memory cgroup out of memory: Killed process 1 (init) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB\n");
    let dir = host(&log);
    let (events, stats) = read(dir.path(), None, 0).await;
    // First start on a file: from its end, so nothing at all is read.
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(stats.records.load(Ordering::Relaxed), 0);

    let other = Some(KmsgPosition {
        boot_id: "x".into(),
        seq: 0,
        syslog: false,
        usec: None,
    });
    let source = KmsgSource::new(dir.path(), KmsgConfig::default(), other);
    let (tx, mut rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, stop.clone()));
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("event");
    stop.cancel();
    task.await.expect("source");
    match first {
        Some(SourceEvent::Kmsg(KmsgEvent::Checkpoint(p))) => assert_eq!(p.seq, 340, "before the open report"),
        other => panic!("expected a checkpoint, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_is_skipped_and_counted() {
    let log = format!("garbage\n\u{1}\u{2};;;\n6,x,1,-;bad seq\n{LOG}");
    let dir = host(&log);
    let other = Some(KmsgPosition {
        boot_id: "x".into(),
        seq: 0,
        syslog: false,
        usec: None,
    });
    let (events, stats) = read(dir.path(), other, 420).await;
    assert_eq!(kill_pids(&events), [15888]);
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn the_real_device_is_read_from_its_end() {
    let root = Path::new("/");
    if let Err(error) = std::fs::File::open("/dev/kmsg") {
        panic!("this test reads the real /dev/kmsg and needs root (as `make test` runs): {error}");
    }
    let source = KmsgSource::new(root, KmsgConfig::default(), None);
    let stats = source.stats();
    let (tx, mut rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A user-space record that looks like a kill: read, but not a kill.
    std::fs::write(
        "/dev/kmsg",
        "podmortem unit test: Memory cgroup out of memory: Killed process 1 (init) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB\n",
    )
    .expect("write /dev/kmsg");
    let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a checkpoint");
    stop.cancel();
    task.await.expect("source");
    assert!(
        matches!(event, Some(SourceEvent::Kmsg(KmsgEvent::Checkpoint(_)))),
        "{event:?}"
    );
    assert!(stats.records.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.oom_kills.load(Ordering::Relaxed), 0);
}

#[test]
fn the_rate_limit_pauses_once_a_second_is_used_up() {
    let mut limit = RateLimit::new(100);
    assert_eq!(limit.take(100), None);
    let pause = limit.take(50).expect("over the rate");
    assert!(
        pause >= Duration::from_millis(490) && pause <= Duration::from_millis(510),
        "{pause:?}"
    );
}

/// The `/dev/kmsg` fixture as `syslog(2)` prints it: `<prio>[secs.micros] text`.
fn as_syslog(kmsg: &str) -> String {
    kmsg.lines()
        .filter_map(|l| {
            let (prefix, text) = l.split_once(';')?;
            let mut f = prefix.split(',');
            let prio = f.next()?;
            let usec: u64 = f.nth(1)?.parse().ok()?;
            Some(format!(
                "<{prio}>[{:5}.{:06}] {text}\n",
                usec / 1_000_000,
                usec % 1_000_000
            ))
        })
        .collect()
}

/// Buffers returned by successive polls; the last one again once they run out.
struct Polls {
    buffers: std::collections::VecDeque<Vec<u8>>,
    current: Vec<u8>,
    /// How many polls were made.
    reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl Polls {
    fn new(first: &str, then: &[&str]) -> Self {
        Polls {
            buffers: then.iter().map(|b| b.as_bytes().to_vec()).collect(),
            current: first.as_bytes().to_vec(),
            reads: Arc::default(),
        }
    }
}

impl syslog::ReadAll for Polls {
    fn read_all(&mut self) -> Result<&[u8], KlogError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(next) = self.buffers.pop_front() {
            self.current = next;
        }
        Ok(&self.current)
    }

    fn contents(&self) -> &[u8] {
        &self.current
    }
}

/// The `syslog(2)` reader of a source that resumes at `resume`, following `polls` every
/// `interval` and when `nudge` is notified, in a task that checkpoints when it ends.
struct Following {
    events: mpsc::Receiver<SourceEvent>,
    stats: Arc<KmsgStats>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

fn spawn_follow(
    resume: Option<KmsgPosition>,
    polls: Polls,
    interval: Duration,
    nudge: Arc<tokio::sync::Notify>,
) -> Following {
    let dir = host("");
    let config = KmsgConfig {
        poll_interval: interval,
        ..KmsgConfig::default()
    };
    let source = KmsgSource::new(dir.path(), config, resume);
    let (tx, events) = mpsc::channel(256);
    let stop = CancellationToken::new();
    let mut reader = source.reader(tx);
    reader.enter(Mode::Syslog);
    let start = source.start;
    let stopper = stop.clone();
    let task = tokio::spawn(async move {
        let result = reader.follow(polls, start, interval, &nudge, &stopper).await;
        reader.checkpoint().await;
        result.map(|_| ()).map_err(|e| match e {
            FollowError::Klog(e) => e.to_string(),
            FollowError::Scan(e) => e.to_string(),
        })
    });
    Following {
        events,
        stats: source.stats(),
        stop,
        task,
    }
}

/// Follows `polls` through the `syslog(2)` reader of a source that resumes at `resume`, until
/// the polls ran out and a checkpoint at `until` or later came; returns what it sent.
async fn follow(
    resume: Option<KmsgPosition>,
    polls: Polls,
    until: u64,
) -> (Vec<KmsgEvent>, Arc<KmsgStats>, Result<(), String>) {
    let Following {
        events: mut rx,
        stats,
        stop,
        task,
    } = spawn_follow(resume, polls, Duration::from_millis(10), Arc::default());
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(SourceEvent::Kmsg(e))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let done = matches!(&e, KmsgEvent::Checkpoint(p) if p.seq >= until);
        events.push(e);
        if done {
            break;
        }
    }
    stop.cancel();
    let result = task.await.expect("reader");
    while let Ok(Some(SourceEvent::Kmsg(e))) =
        tokio::time::timeout(Duration::from_millis(50), rx.recv()).await
    {
        events.push(e);
    }
    (events, stats, result)
}

fn checkpoints(events: &[KmsgEvent]) -> Vec<&KmsgPosition> {
    events
        .iter()
        .filter_map(|e| match e {
            KmsgEvent::Checkpoint(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn same_boot(seq: u64, usec: Option<UsecCursor>, syslog: bool) -> Option<KmsgPosition> {
    Some(KmsgPosition {
        boot_id: BOOT.into(),
        seq,
        syslog,
        usec,
    })
}

#[tokio::test]
async fn the_syslog_reader_assembles_the_oom_report_of_a_new_boot() {
    let log = as_syslog(LOG);
    let old = Some(KmsgPosition {
        boot_id: "another-boot".into(),
        seq: 9999,
        syslog: true,
        usec: None,
    });
    let (events, stats, result) = follow(old, Polls::new(&log, &[]), 80).await;
    result.expect("followed");
    let kills: Vec<&OomKill> = events
        .iter()
        .filter_map(|e| match e {
            KmsgEvent::OomKill { kill, .. } => Some(kill.as_ref()),
            _ => None,
        })
        .collect();
    assert_eq!(kills.len(), 1, "{events:?}");
    let kill = kills[0];
    assert_eq!((kill.pid, kill.comm.as_str()), (15888, "sh"));
    assert!(
        kill.memcg_limit_kib.is_some() && !kill.top_tasks.is_empty(),
        "{kill:?}"
    );
    assert_eq!(kill.invoker.as_ref().map(|i| i.comm.as_str()), Some("sh"));
    assert_eq!(kill.before, None, "the report is the first thing in the buffer");
    assert_eq!(stats.records.load(Ordering::Relaxed), 80);
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 0);
    let last = *checkpoints(&events).last().expect("a checkpoint");
    assert_eq!(
        last,
        &KmsgPosition {
            boot_id: BOOT.into(),
            seq: 80,
            syslog: true,
            usec: Some(UsecCursor {
                usec: 989_785_346,
                count: 1
            }),
        }
    );
}

#[tokio::test]
async fn the_syslog_reader_resumes_by_timestamp_and_never_passes_an_open_report() {
    let log = as_syslog(LOG);
    let kill_at = Some(UsecCursor {
        usec: 989_785_346,
        count: 1,
    });
    // Resumed at the kill (a position of either reader): nothing more to report.
    for syslog in [true, false] {
        let (events, stats, _) = follow(same_boot(420, kill_at, syslog), Polls::new(&log, &[]), 0).await;
        assert!(kill_pids(&events).is_empty(), "{events:?}");
        assert_eq!(stats.records.load(Ordering::Relaxed), 0);
    }
    // Resumed in the middle of the report: the kill, with what is left of it.
    let mid = Some(UsecCursor {
        usec: 989_785_318,
        count: 1,
    });
    let (events, _, _) = follow(same_boot(7, mid, true), Polls::new(&log, &[]), 1).await;
    assert_eq!(kill_pids(&events), [15888]);

    // A report cut off at the end of the buffer: the checkpoint stays before it, and
    // carries the cursor before its first line.
    let before = "<6>[  900.000000] eth0: link up\n<6>[  900.000000] eth0: carrier on\n";
    let cut: String = log.lines().take(40).map(|l| format!("{l}\n")).collect();
    let (events, _, _) = follow(None, Polls::new("", &[&format!("{before}{cut}")]), 2).await;
    let last = *checkpoints(&events).last().expect("a checkpoint");
    assert_eq!(last.seq, 2, "before the open report");
    assert_eq!(
        last.usec,
        Some(UsecCursor {
            usec: 900_000_000,
            count: 2
        })
    );
}

#[tokio::test]
async fn the_syslog_reader_starts_at_the_end_and_reads_only_what_comes_after() {
    let first = "<6>[    1.000000] old\n<6>[    2.000000] old too\n";
    let log = as_syslog(LOG);
    let second = format!("{first}{log}");
    let (events, stats, result) = follow(None, Polls::new(first, &[first, &second]), 80).await;
    result.expect("followed");
    assert_eq!(kill_pids(&events), [15888]);
    assert_eq!(stats.records.load(Ordering::Relaxed), 80, "only the new lines");
    let kill_before = events.iter().find_map(|e| match e {
        KmsgEvent::OomKill { kill, .. } => Some(kill.before),
        _ => None,
    });
    assert_eq!(
        kill_before,
        Some(Some(UsecCursor {
            usec: 2_000_000,
            count: 1
        })),
        "a restart while the kill is held reads the report again"
    );
    // A position from an older podmortem (no timestamp): also from the end.
    let (events, stats, _) = follow(same_boot(5, None, false), Polls::new(first, &[&second]), 80).await;
    assert_eq!(kill_pids(&events), [15888]);
    assert_eq!(stats.records.load(Ordering::Relaxed), 80);
}

#[tokio::test]
async fn the_syslog_reader_counts_overwritten_garbage_and_cut_lines() {
    // Polled at 2 s; by the next poll the buffer starts at 10 s, 3 lines in 2 s.
    let first = "<6>[    1.000000] a\n<6>[    2.000000] b\n";
    let wrapped = "<6>[   10.000000] x\nnot a kernel line\n<6>[   11.000000] \u{1b}y\n<6>[   12.000000] z\n<6>[   12.500000] cut sh";
    let (events, stats, result) = follow(None, Polls::new(first, &[first, wrapped]), 3).await;
    result.expect("followed");
    assert_eq!(
        stats.lost.load(Ordering::Relaxed),
        12,
        "8 s at 1.5 lines a second"
    );
    assert!(
        stats.malformed.load(Ordering::Relaxed) >= 2,
        "the garbage line and the cut one"
    );
    assert_eq!(stats.records.load(Ordering::Relaxed), 4, "x, the garbage, y, z");
    assert_eq!(checkpoints(&events).last().map(|p| p.seq), Some(3));
}

#[tokio::test]
async fn a_log_without_timestamps_is_an_error_naming_the_kernel_parameter() {
    let (events, _, result) = follow(None, Polls::new("<6>no time here\n", &[]), 0).await;
    let error = result.expect_err("cannot follow");
    assert!(error.contains("printk.time"), "{error}");
    assert!(events.is_empty());
    let error = KmsgError::Unfollowable {
        path: "/host/dev/kmsg".into(),
        device_error: Some("Operation not permitted (os error 1)".into()),
        source: ScanError::NoTimestamps,
    }
    .to_string();
    assert!(
        error.contains("printk.time=1") && error.contains("/host/dev/kmsg"),
        "{error}"
    );
}

#[test]
fn a_refused_syslog_names_the_capability_and_the_device_tried() {
    let refused = || {
        KlogError::Call {
        action: "SYSLOG_ACTION_READ_ALL",
        source: std::io::Error::from_raw_os_error(nix::libc::EPERM),
        hint: " (reading the kernel log needs CAP_SYSLOG while kernel.dmesg_restrict=1, and a seccomp profile that allows syslog(2))",
    }
    };
    assert!(refused().is_permission());
    let error = KmsgError::Syslog {
        path: "/host/dev/kmsg".into(),
        device_error: Some("Operation not permitted (os error 1)".into()),
        source: refused(),
    }
    .to_string();
    assert!(error.contains("CAP_SYSLOG"), "{error}");
    assert!(
        error.contains("/host/dev/kmsg could not be used either: Operation not permitted"),
        "{error}"
    );
    let forced = KmsgError::Syslog {
        path: "/host/dev/kmsg".into(),
        device_error: None,
        source: refused(),
    }
    .to_string();
    assert!(forced.contains("was not tried (kmsg.reader: syslog)"), "{forced}");
}

#[test]
fn positions_written_before_the_cursor_still_load_and_new_ones_round_trip() {
    let old: KmsgPosition = serde_json::from_str(r#"{"boot_id":"b","seq":42}"#).expect("old form");
    assert_eq!(
        old,
        same_boot(42, None, false)
            .map(|p| KmsgPosition {
                boot_id: "b".into(),
                ..p
            })
            .expect("p")
    );
    assert_eq!(
        serde_json::to_string(&old).expect("json"),
        r#"{"boot_id":"b","seq":42}"#,
        "written as before"
    );
    let new = same_boot(
        7,
        Some(UsecCursor {
            usec: 989_785_346,
            count: 2,
        }),
        true,
    )
    .expect("p");
    let json = serde_json::to_string(&new).expect("json");
    assert_eq!(
        json,
        format!(r#"{{"boot_id":"{BOOT}","seq":7,"syslog":true,"usec":{{"usec":989785346,"count":2}}}}"#)
    );
    assert_eq!(serde_json::from_str::<KmsgPosition>(&json).expect("back"), new);
    // A syslog(2) position resumes the device reader by timestamp, not by its own count.
    let dir = host(LOG);
    let source = KmsgSource::new(dir.path(), KmsgConfig::default(), Some(new));
    assert!(matches!(source.start, Start::AfterUsec(c) if c.usec == 989_785_346));
}

#[tokio::test]
async fn the_device_reader_resumes_after_a_syslog_position() {
    let dir = host(LOG);
    let at = |usec| same_boot(3, Some(UsecCursor { usec, count: 1 }), true);
    let (events, _) = read(dir.path(), at(989_785_346), 420).await;
    assert!(kill_pids(&events).is_empty(), "{events:?}");
    let (events, _) = read(dir.path(), at(989_785_318), 420).await;
    assert_eq!(kill_pids(&events), [15888]);
}

#[tokio::test]
async fn auto_reads_through_syslog_when_the_device_is_missing() {
    if let Err(error) = Klog::open() {
        panic!("this test reads the real kernel log through syslog(2) and needs root (as `make test` runs): {error}");
    }
    // No dev/kmsg under this host root: auto falls back to syslog(2) on the real kernel.
    let dir = host("");
    std::fs::remove_file(dir.path().join("dev/kmsg")).expect("rm");
    let config = KmsgConfig {
        poll_interval: Duration::from_millis(20),
        ..KmsgConfig::default()
    };
    let source = KmsgSource::new(dir.path(), config, None);
    let stats = source.stats();
    let (tx, mut rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wrote = std::fs::write("/dev/kmsg", "podmortem unit test: auto fell back to syslog(2)\n").is_ok();
    let event = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    stop.cancel();
    task.await.expect("source");
    assert!(
        wrote,
        "this test writes a record to /dev/kmsg and needs root (as `make test` runs)"
    );
    match event {
        Ok(Some(SourceEvent::Kmsg(KmsgEvent::Checkpoint(p)))) => {
            assert!(p.syslog && p.usec.is_some(), "{p:?}");
        }
        other => panic!("expected a checkpoint from the syslog(2) reader, got {other:?}"),
    }
    assert!(stats.records.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        stats.oom_kills.load(Ordering::Relaxed),
        0,
        "a user record is not a kill"
    );
}

/// Follows `polls` through the `syslog(2)` reader with an hour-long poll interval, on tokio's
/// paused clock; nudges it a second in, and returns the kill it then read and how long after
/// the nudge it came (virtual time: "at once" and "at the next poll" are told apart exactly).
async fn kill_after_a_nudge(polls: Polls) -> (Box<OomKill>, Duration) {
    let nudge = Arc::new(tokio::sync::Notify::new());
    let Following {
        events: mut rx,
        stop,
        task,
        ..
    } = spawn_follow(None, polls, Duration::from_secs(3600), Arc::clone(&nudge));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let nudged = tokio::time::Instant::now();
    nudge.notify_one();
    let kill = loop {
        match rx.recv().await {
            Some(SourceEvent::Kmsg(KmsgEvent::OomKill { kill, .. })) => break kill,
            Some(_) => {}
            None => panic!("the reader stopped without the kill"),
        }
    };
    let after = nudged.elapsed();
    stop.cancel();
    let _ = task.await.expect("reader");
    (kill, after)
}

/// containerd's `TaskOOM` nudges the `syslog(2)` reader: the kill is read at once, not at the
/// next poll an hour later.
#[tokio::test(start_paused = true)]
async fn a_nudge_reads_the_kernel_log_at_once() {
    let first = "<6>[    1.000000] old\n";
    let second = format!("{first}{}", as_syslog(LOG));
    // What opening read, the poll at once, then the poll the nudge asks for.
    let (kill, after) = kill_after_a_nudge(Polls::new(first, &[first, &second])).await;
    assert_eq!(kill.pid, 15888);
    assert!(
        after < Duration::from_secs(1),
        "read {after:?} after the nudge: at the next poll, not at once"
    );
}

/// On cgroup v1, containerd hears of an OOM before the kernel has printed all of its report:
/// the nudged poll finds half of it, and a second poll 100 ms later the rest.
#[tokio::test(start_paused = true)]
async fn a_nudge_polls_again_for_a_report_still_being_printed() {
    let first = "<6>[    1.000000] old\n";
    let log = as_syslog(LOG);
    let lines: Vec<&str> = log.lines().collect();
    let half: String = lines[..lines.len() / 2]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let (half, full) = (format!("{first}{half}"), format!("{first}{log}"));
    let (kill, after) = kill_after_a_nudge(Polls::new(first, &[first, &half, &full])).await;
    assert_eq!(kill.pid, 15888);
    assert!(
        after >= NUDGE_AGAIN && after < Duration::from_secs(1),
        "read {after:?} after the nudge"
    );
}

/// Two CPUs may log a record with a timestamp just below the one before it: each record is
/// still handled once, poll after poll.
#[tokio::test]
async fn records_out_of_timestamp_order_are_handled_once() {
    let buf = "<6>[  100.000000] a\n<6>[  100.000001] b\n<6>[  100.000000] c\n";
    let (events, stats, result) = follow(None, Polls::new("", &[buf, buf, buf]), 3).await;
    result.expect("followed");
    assert!(!checkpoints(&events).is_empty());
    assert_eq!(stats.records.load(Ordering::Relaxed), 3, "{events:?}");
}

/// A position the device reader saved (its sequence number, no cursor) given to the
/// `syslog(2)` reader: it starts at the end of the buffer and reads what comes after, instead
/// of skipping as many of its own records as the device's sequence number.
#[tokio::test]
async fn the_syslog_reader_resumes_from_a_device_position_without_a_cursor() {
    let first = "<6>[    1.000000] old\n<6>[    2.000000] old too\n";
    let second = format!("{first}{}", as_syslog(LOG));
    let device = same_boot(50_000, None, false);
    let (events, _, result) = follow(device, Polls::new(first, &[first, &second]), 80).await;
    result.expect("followed");
    assert_eq!(kill_pids(&events), [15888]);
}

/// The `syslog(2)` reader's own count, saved before it had a timestamp, is not taken for a
/// device sequence number: reading starts at the beginning.
#[test]
fn a_syslog_position_without_a_cursor_starts_at_the_beginning() {
    let dir = host("");
    let source = KmsgSource::new(dir.path(), KmsgConfig::default(), same_boot(12, None, true));
    assert_eq!(source.start, Start::Beginning);
    let source = KmsgSource::new(dir.path(), KmsgConfig::default(), same_boot(12, None, false));
    assert_eq!(source.start, Start::After(12, None));
}

/// A storm of `TaskOOM`s (a container stuck at its limit) does not turn into back-to-back
/// reads of the whole kernel buffer: nudges that come while the second poll is due wait for it.
#[tokio::test(start_paused = true)]
async fn a_storm_of_nudges_polls_at_most_twice_per_nudge_window() {
    let first = "<6>[    1.000000] old\n";
    let polls = Polls::new(first, &[]);
    let reads = Arc::clone(&polls.reads);
    let nudge = Arc::new(tokio::sync::Notify::new());
    let following = spawn_follow(None, polls, Duration::from_secs(3600), Arc::clone(&nudge));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = reads.load(Ordering::Relaxed);
    let storm = Duration::from_secs(1);
    let nudges = 1000;
    for _ in 0..nudges {
        nudge.notify_one();
        tokio::time::sleep(storm / nudges).await;
    }
    let polled = reads.load(Ordering::Relaxed) - before;
    let windows = (storm.as_millis() / NUDGE_AGAIN.as_millis()) as usize;
    assert!(
        polled >= windows && polled <= 2 * (windows + 1),
        "{polled} polls for {nudges} nudges in {storm:?}"
    );
    following.stop.cancel();
    let _ = following.task.await.expect("reader");
}

/// Each kill wakes the memory sampler, so that a dying container's kill counter is read before
/// its cgroup goes.
#[tokio::test]
async fn a_kill_wakes_the_memory_sampler() {
    let dir = host(LOG);
    let nudge = Arc::new(tokio::sync::Notify::new());
    let other_boot = KmsgPosition {
        boot_id: "another-boot".into(),
        seq: 9999,
        syslog: false,
        usec: None,
    };
    let source = KmsgSource::new(dir.path(), KmsgConfig::default(), Some(other_boot))
        .with_oom_nudge(Arc::clone(&nudge));
    let woken = nudge.notified();
    let (tx, mut rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, stop.clone()));
    let mut killed = false;
    while let Ok(Some(SourceEvent::Kmsg(e))) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        if matches!(e, KmsgEvent::OomKill { .. }) {
            killed = true;
            break;
        }
    }
    assert!(killed, "the fixture holds a kill");
    tokio::time::timeout(Duration::from_secs(1), woken)
        .await
        .expect("the sampler was woken");
    stop.cancel();
    task.await.expect("source");
}
