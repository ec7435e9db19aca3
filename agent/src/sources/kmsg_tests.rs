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
    if std::fs::File::open("/dev/kmsg").is_err() {
        println!("skipped: /dev/kmsg is not readable here");
        return;
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
