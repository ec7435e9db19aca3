//! Kernel log parse throughput: records per second through the record parser and the OOM
//! report assembler, on a log where one record in `1/OOM_SHARE` belongs to an OOM report.
//! Then the CPU time of one poll of the `syslog(2)` reader on this machine's real buffer
//! (`SYSLOG_ACTION_READ_ALL` + finding the cursor + parsing what is new), with no new records
//! and with 100 new ones (written to `/dev/kmsg`); skipped where `syslog(2)` is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use podmortem::sources::kmsg::oom::Assembler;
use podmortem::sources::kmsg::record::parse_record;
use podmortem::sources::kmsg::syslog::{self, Klog, ReadAll, UsecCursor};

const REPORT: &str = include_str!("../tests/fixtures/kmsg/6.18-memcg-v1.kmsg");
const RECORDS: usize = 2_000_000;

fn main() {
    // Ordinary kernel chatter, with a full OOM report now and then.
    let chatter = [
        "eth0: renamed from veth3a1b2c",
        "IPv6: ADDRCONF(NETDEV_CHANGE): cali1234abcd: link becomes ready",
        "EXT4-fs (dm-3): mounted filesystem 4f1c2d3e-aaaa-bbbb-cccc-0123456789ab r/w with ordered data mode",
        "audit: type=1400 audit(1700000000.123:456): apparmor=\"DENIED\" operation=\"open\" profile=\"cri-containerd.apparmor.d\"",
    ];
    let report: Vec<&str> = REPORT.lines().map(|l| l.split_once(';').unwrap().1).collect();
    let mut log = Vec::with_capacity(RECORDS);
    let mut seq = 0u64;
    while log.len() < RECORDS {
        for line in chatter.iter().cycle().take(400) {
            log.push(format!("6,{seq},{},-;{line}", seq * 10));
            seq += 1;
        }
        for line in &report {
            log.push(format!("4,{seq},{},-;{line}", seq * 10));
            seq += 1;
        }
    }
    for round in 0..3 {
        let mut asm = Assembler::default();
        let mut kills = 0;
        let start = Instant::now();
        for raw in &log {
            let r = parse_record(raw.as_bytes()).unwrap();
            if asm.feed(r.seq, r.usec, r.text).is_some() {
                kills += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "kmsg parse round {round}: {} records ({kills} OOM kills) in {:.3} s: {:.2} M records/s",
            log.len(),
            secs,
            log.len() as f64 / secs / 1e6
        );
    }
    syslog_polls();
}

/// CPU time of this thread, in microseconds.
fn cpu_us() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    t.tv_sec() as f64 * 1e6 + t.tv_nsec() as f64 / 1e3
}

/// One poll: read the buffer, find the cursor from the end, parse the new lines. Returns the
/// new cursor and how many new lines there were.
fn poll(klog: &mut Klog, cursor: Option<UsecCursor>) -> (Option<UsecCursor>, usize) {
    let buf = klog.read_all().unwrap();
    let scan = syslog::scan(buf, cursor).unwrap();
    let mut cursor = cursor;
    let mut new = 0;
    syslog::new_lines(buf, &scan, cursor, |l| {
        new += 1;
        if let Ok(l) = l {
            cursor = Some(UsecCursor::advance(cursor, l.usec));
        }
    });
    (cursor, new)
}

fn syslog_polls() {
    let mut klog = match Klog::open() {
        Ok(k) => k,
        Err(error) => {
            println!("syslog poll: skipped ({error})");
            return;
        }
    };
    let lines = klog.contents().iter().filter(|b| **b == b'\n').count();
    println!(
        "syslog poll: real buffer {} KiB in {lines} lines, read buffer {} KiB",
        klog.contents().len() / 1024,
        klog.capacity() / 1024
    );
    let mut cursor = syslog::end_cursor(klog.contents());
    const POLLS: usize = 200;
    let start = cpu_us();
    let mut new = 0;
    for _ in 0..POLLS {
        let (c, n) = poll(&mut klog, cursor);
        cursor = c;
        new += n;
    }
    let idle = (cpu_us() - start) / POLLS as f64;
    println!("syslog poll, nothing new: {idle:.1} us CPU per poll ({new} new lines seen)");
    let start = cpu_us();
    for _ in 0..POLLS {
        klog.read_all().unwrap();
    }
    let call = (cpu_us() - start) / POLLS as f64;
    println!("  of which the syslog(2) call itself: {call:.1} us");
    let start = cpu_us();
    for _ in 0..POLLS {
        syslog::scan(klog.contents(), cursor).unwrap();
    }
    let scan = (cpu_us() - start) / POLLS as f64;
    println!("  of which finding the cursor: {scan:.2} us");
    if std::fs::OpenOptions::new().write(true).open("/dev/kmsg").is_err() {
        println!("syslog poll with new records: skipped (/dev/kmsg not writable)");
        return;
    }
    const ROUNDS: usize = 20;
    let mut total = 0.0;
    let mut new = 0;
    for round in 0..ROUNDS {
        for i in 0..100 {
            std::fs::write("/dev/kmsg", format!("podmortem bench round {round} line {i}\n")).unwrap();
        }
        let start = cpu_us();
        let (c, n) = poll(&mut klog, cursor);
        total += cpu_us() - start;
        cursor = c;
        new += n;
    }
    println!(
        "syslog poll, 100 new lines: {:.1} us CPU per poll ({} new lines per poll)",
        total / ROUNDS as f64,
        new / ROUNDS
    );
    println!(
        "at the default 200ms poll interval, idle: {:.3}% of one core",
        idle / 200_000.0 * 100.0
    );
}
