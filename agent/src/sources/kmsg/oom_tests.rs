use super::*;
use crate::sources::kmsg::record::parse_record;

/// Runs a fixture through the record parser and the assembler.
fn kills(fixture: &str) -> Vec<OomKill> {
    let mut asm = Assembler::default();
    fixture
        .lines()
        .filter_map(|l| {
            let r = parse_record(l.as_bytes()).expect("fixture record");
            asm.feed(r.seq, r.usec, r.text)
        })
        .collect()
}

const ID_618: &str = "61246bb6cc9fa00366a6b96cca3c9e94a9f20fa3dbcdee11f0b59fbf1a09a4d8";

#[test]
fn kernel_6_18_memcg_kill_recorded_on_this_machine() {
    let k = kills(include_str!("../../../tests/fixtures/kmsg/6.18-memcg-v1.kmsg"));
    assert_eq!(k.len(), 1);
    let k = &k[0];
    assert_eq!((k.pid, k.comm.as_str(), k.uid), (15888, "sh", Some(0)));
    assert_eq!((k.first_seq, k.seq, k.usec), (341, 420, 989_785_346));
    assert_eq!(k.scope, Some(OomScope::Memcg));
    assert_eq!(k.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
    let memcg = format!("/kubepods/burstable/pod00003b22-e2e0-4000-8000-b56b573446d6/{ID_618}");
    assert_eq!(k.task_memcg.as_deref(), Some(memcg.as_str()));
    assert_eq!(k.oom_memcg.as_deref(), Some(memcg.as_str()));
    assert_eq!(
        (k.total_vm_kib, k.anon_rss_kib, k.file_rss_kib, k.shmem_rss_kib),
        (Some(51428), Some(32388), Some(1424), Some(0))
    );
    assert_eq!((k.pgtables_kib, k.oom_score_adj), (Some(112), Some(0)));
    assert_eq!(k.rss_bytes(), Some((32388 + 1424) * 1024));
    assert_eq!(
        (k.memcg_usage_kib, k.memcg_limit_kib, k.memcg_failcnt),
        (Some(32768), Some(32768), Some(0))
    );
    let inv = k.invoker.as_ref().expect("invoker");
    assert_eq!(inv.comm, "sh");
    assert_eq!(inv.gfp_mask.as_deref(), Some("0xcc0(GFP_KERNEL)"));
    assert_eq!((inv.order, inv.oom_score_adj), (Some(0), Some(0)));
    assert_eq!(
        k.top_tasks,
        [TaskMemory {
            pid: 15888,
            comm: "sh".into(),
            rss_pages: 8453
        }]
    );
}

#[test]
fn kernel_4_14_legacy_memcg_kill() {
    let k = kills(include_str!(
        "../../../tests/fixtures/kmsg/4.14-memcg-legacy.kmsg"
    ));
    assert_eq!(k.len(), 1);
    let k = &k[0];
    assert_eq!((k.pid, k.comm.as_str(), k.uid), (21877, "java", None));
    assert_eq!(k.scope, Some(OomScope::Memcg));
    assert_eq!(k.constraint, None);
    assert!(k
        .task_memcg
        .as_deref()
        .is_some_and(|m| m.starts_with("/kubepods/burstable/pod6a1b2c3d")));
    assert_eq!(k.oom_memcg, k.task_memcg);
    assert_eq!(
        (k.anon_rss_kib, k.file_rss_kib, k.pgtables_kib),
        (Some(518_716), Some(1048), None)
    );
    assert_eq!(
        (k.memcg_usage_kib, k.memcg_limit_kib, k.memcg_failcnt),
        (Some(524_288), Some(524_288), Some(3211))
    );
    let inv = k.invoker.as_ref().expect("invoker");
    assert_eq!(
        (inv.comm.as_str(), inv.order, inv.oom_score_adj),
        ("java", Some(0), Some(969))
    );
    assert_eq!(
        k.top_tasks.iter().map(|t| t.pid).collect::<Vec<_>>(),
        [21877, 21861]
    );
}

#[test]
fn kernel_5_4_child_killed_against_the_pod_limit() {
    let k = kills(include_str!(
        "../../../tests/fixtures/kmsg/5.4-pod-limit-child.kmsg"
    ));
    assert_eq!(k.len(), 1);
    let k = &k[0];
    assert_eq!((k.pid, k.comm.as_str(), k.uid), (30211, "gunicorn", Some(1000)));
    assert_eq!(
        k.oom_memcg.as_deref(),
        Some("/kubepods/burstable/pod0b8f4e2a-7777-8888-9999-aaaabbbbcccc")
    );
    assert!(k
        .task_memcg
        .as_deref()
        .is_some_and(|m| m.starts_with("/kubepods/burstable/pod0b8f4e2a-7777-8888-9999-aaaabbbbcccc/8b1d")));
    assert_eq!(k.oom_score_adj, Some(994));
    assert_eq!(k.top_tasks[0].pid, 30211);
    assert_eq!(k.top_tasks.len(), 3);
}

#[test]
fn kernel_6_1_global_oom_keeps_the_largest_tasks() {
    let k = kills(include_str!("../../../tests/fixtures/kmsg/6.1-global.kmsg"));
    assert_eq!(k.len(), 1);
    let k = &k[0];
    assert_eq!(k.scope, Some(OomScope::Global));
    assert_eq!(k.oom_memcg, None);
    assert!(k.task_memcg.as_deref().is_some_and(|m| m.ends_with("c0ffee00")));
    assert_eq!((k.pid, k.comm.as_str()), (4242, "java"));
    let top: Vec<&str> = k.top_tasks.iter().map(|t| t.comm.as_str()).collect();
    assert_eq!(top, ["java", "python3", "postgres", "kubelet", "systemd-udevd"]);
    assert_eq!(k.invoker.as_ref().map(|i| i.comm.as_str()), Some("postgres"));
}

#[test]
fn a_kill_without_its_report_still_counts_and_reports_do_not_mix() {
    let mut asm = Assembler::default();
    let k = asm
        .feed(9, 1, "Out of memory: Killed process 77 (a (b) c) total-vm:10kB, anon-rss:4kB, file-rss:0kB, shmem-rss:0kB, UID:5 pgtables:1kB oom_score_adj:-5")
        .expect("kill");
    assert_eq!(
        (k.pid, k.comm.as_str(), k.scope),
        (77, "a (b) c", Some(OomScope::Global))
    );
    assert_eq!((k.first_seq, k.uid, k.oom_score_adj), (9, Some(5), Some(-5)));
    // A report that never kills is abandoned when the next one starts.
    assert!(asm
        .feed(
            10,
            2,
            "x invoked oom-killer: gfp_mask=0x0(), order=0, oom_score_adj=0"
        )
        .is_none());
    assert_eq!(asm.open_since(), Some(10));
    assert!(asm
        .feed(
            11,
            3,
            "y invoked oom-killer: gfp_mask=0x0(), order=0, oom_score_adj=0"
        )
        .is_none());
    assert_eq!(asm.abandoned, 1);
    let k = asm
        .feed(12, 4, "Memory cgroup out of memory: Killed process 5 (y) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB")
        .expect("kill");
    assert_eq!(k.invoker.map(|i| i.comm), Some("y".to_owned()));
    assert_eq!(asm.open_since(), None);
}

#[test]
fn oom_looking_text_that_is_not_a_report_line_is_ignored() {
    for text in [
        "Killed process",
        "Killed process abc (x) total-vm:1kB",
        "Killed process 12 (x) nothing",
        "oom-kill:",
        "oom-kill:constraint=CONSTRAINT_MEMCG,task=x",
        "memory: usage lots",
        "Task in /a",
        "[garbage",
        "[  12] 1 2 3",
        "invoked oom-killer:",
    ] {
        assert!(
            !matches!(
                parse_line(text),
                Some(OomLine::Killed(_) | OomLine::Summary { .. } | OomLine::Task(_))
            ),
            "{text}"
        );
    }
}

proptest::proptest! {
    #[test]
    fn no_input_panics_the_parsers(lines in proptest::collection::vec(".{0,200}", 0..40), raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let mut asm = Assembler::default();
        for (i, line) in lines.iter().enumerate() {
            let _ = asm.feed(i as u64, 0, line);
            let _ = parse_line(line);
        }
        let _ = parse_record(&raw);
        let mut splitter = crate::sources::kmsg::record::Splitter::new(64);
        splitter.feed(&raw, |r| { let _ = parse_record(r); });
    }

    #[test]
    fn mutated_report_lines_never_panic(cut in 0usize..300, insert in ".{0,8}") {
        for line in include_str!("../../../tests/fixtures/kmsg/6.1-global.kmsg").lines() {
            let mut s: String = line.chars().take(cut).collect();
            s.push_str(&insert);
            s.extend(line.chars().skip(cut));
            let _ = parse_record(s.as_bytes()).map(|r| parse_line(r.text));
        }
    }
}
