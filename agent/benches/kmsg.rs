//! Kernel log parse throughput: records per second through the record parser and the OOM
//! report assembler, on a log where one record in `1/OOM_SHARE` belongs to an OOM report.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use podmortem::sources::kmsg::oom::Assembler;
use podmortem::sources::kmsg::record::parse_record;

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
}
