use super::*;
use proptest::prelude::*;

const V2_POD: &str =
    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c1a2e_7b2d_4c1e_9a8f_0123456789ab.slice";
const V2_CONTAINER: &str =
    "cri-containerd-3f6a1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8.scope";
const V1_POD: &str = "/kubepods/burstable/pod6f1c1a2e-7b2d-4c1e-9a8f-0123456789ab";
const V1_CONTAINER: &str = "9b1e5f0c2d3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cgroup")
        .join(name)
}

/// A throwaway host root holding `sys/fs/cgroup/<files>` (relative paths) with the given texts.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = root.path().join(CGROUP_MOUNT).join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    root
}

#[test]
fn v2_fixture_end_to_end() {
    let fs = CgroupFs::detect(&fixture("v2")).unwrap();
    assert_eq!(fs.version(), CgroupVersion::V2);
    assert_eq!(fs.hierarchy(), fixture("v2").join("sys/fs/cgroup"));

    let container = fs.cgroup_of_pid(4242).unwrap();
    assert_eq!(container, format!("{V2_POD}/{V2_CONTAINER}"));

    let stats = fs.read_memory(&container).unwrap();
    assert_eq!(
        stats,
        MemoryStats {
            version: CgroupVersion::V2,
            usage_bytes: 66_961_408,
            limit_bytes: Some(67_108_864),
            peak_bytes: Some(67_108_864),
            inactive_file_bytes: Some(1_310_720),
            failcnt: None,
            oom: Some(1),
            oom_kill: Some(1),
            oom_group_kill: Some(0),
            max_events: Some(12),
            high_events: Some(0),
            under_oom: None,
            pressure: Some(Pressure {
                some: PressureLine {
                    avg10: 1.23,
                    avg60: 0.50,
                    avg300: 0.10,
                    total_us: 123_456
                },
                full: Some(PressureLine {
                    avg10: 0.80,
                    avg60: 0.20,
                    avg300: 0.05,
                    total_us: 65_432
                }),
            }),
        }
    );
    assert_eq!(stats.working_set_bytes(), 66_961_408 - 1_310_720);

    let pod = fs.read_memory(V2_POD).unwrap();
    assert_eq!(pod.usage_bytes, 67_633_152);
    assert_eq!(pod.limit_bytes, None, "memory.max is `max`");
    assert_eq!(pod.inactive_file_bytes, Some(1_441_792));
    assert!(pod.pressure.is_some());
}

#[test]
fn v1_fixture_end_to_end() {
    let fs = CgroupFs::detect(&fixture("v1")).unwrap();
    assert_eq!(
        fs.version(),
        CgroupVersion::V1,
        "hybrid: unified/ is there but v1 holds memory"
    );
    assert_eq!(fs.hierarchy(), fixture("v1").join("sys/fs/cgroup/memory"));

    let container = fs.cgroup_of_pid(5151).unwrap();
    assert_eq!(container, format!("{V1_POD}/{V1_CONTAINER}"));

    let stats = fs.read_memory(&container).unwrap();
    assert_eq!(
        stats,
        MemoryStats {
            version: CgroupVersion::V1,
            usage_bytes: 33_521_664,
            limit_bytes: Some(33_554_432),
            peak_bytes: Some(33_554_432),
            inactive_file_bytes: Some(552_960),
            failcnt: Some(2711),
            oom: None,
            oom_kill: Some(1),
            oom_group_kill: None,
            max_events: None,
            high_events: None,
            under_oom: Some(false),
            pressure: None,
        }
    );
    assert_eq!(stats.working_set_bytes(), 33_521_664 - 552_960);

    let pod = fs.read_memory(V1_POD).unwrap();
    assert_eq!(pod.limit_bytes, None, "page-rounded i64::MAX is unlimited");
    assert_eq!(pod.inactive_file_bytes, None, "no memory.stat in the pod fixture");
    assert_eq!(pod.working_set_bytes(), pod.usage_bytes);

    // The root cgroup, copied from a real host.
    let root = fs.read_memory("/").unwrap();
    assert_eq!(root.limit_bytes, None);
    assert!(root.inactive_file_bytes.is_some());
}

#[test]
fn detect_fails_without_memory_hierarchy() {
    let empty = tempfile::tempdir().unwrap();
    let err = CgroupFs::detect(empty.path()).unwrap_err();
    assert!(matches!(err, CgroupError::NoMemoryHierarchy { .. }));
    let message = err.to_string();
    assert!(
        message.contains("sys/fs/cgroup/memory/memory.usage_in_bytes"),
        "{message}"
    );
    assert!(message.contains("sys/fs/cgroup/cgroup.controllers"), "{message}");

    let no_memory = tree(&[("cgroup.controllers", "cpuset cpu io pids\n")]);
    assert!(matches!(
        CgroupFs::detect(no_memory.path()),
        Err(CgroupError::NoMemoryHierarchy { .. })
    ));
    // A controller whose name merely contains "memory" is not it.
    let lookalike = tree(&[("cgroup.controllers", "cpu memoryx\n")]);
    assert!(CgroupFs::detect(lookalike.path()).is_err());
}

#[test]
fn vanished_cgroup_and_process_are_gone() {
    let fs = CgroupFs::detect(&fixture("v2")).unwrap();
    let err = fs
        .read_memory(&format!("{V2_POD}/cri-containerd-0000.scope"))
        .unwrap_err();
    assert!(err.is_gone(), "{err}");
    assert!(err.to_string().contains("cri-containerd-0000.scope"), "{err}");

    let err = fs.cgroup_of_pid(999_999).unwrap_err();
    assert!(err.is_gone(), "{err}");

    // A cgroup directory without the usage file is not gone: it is the wrong kind of cgroup.
    let root = tree(&[
        ("cgroup.controllers", "memory\n"),
        ("leaf/memory.stat", "anon 1\n"),
    ]);
    let fs = CgroupFs::detect(root.path()).unwrap();
    let err = fs.read_memory("/leaf").unwrap_err();
    assert!(!err.is_gone());
    assert!(matches!(err, CgroupError::Read { .. }), "{err}");
}

#[test]
fn truncated_and_garbage_values() {
    let root = tree(&[
        ("cgroup.controllers", "memory\n"),
        ("empty/memory.current", ""),
        ("garbage/memory.current", "12kB\n"),
        ("negative/memory.current", "-1\n"),
        ("overflow/memory.current", "18446744073709551616\n"),
        ("ok/memory.current", "4096\n"),
        ("ok/memory.max", "12 34\n"),
        ("ok/memory.peak", ""),
        (
            "ok/memory.stat",
            "anon\ninactive_file x\ninactive_file 1 2\ninactive_file 100\n",
        ),
        ("ok/memory.events", "oom\noom_kill -3\nmax 5\n\u{0}\u{ff}\n"),
        ("ok/memory.pressure", "some avg10=1.0 avg60=0.5\n"),
    ]);
    let fs = CgroupFs::detect(root.path()).unwrap();
    for bad in ["empty", "garbage", "negative", "overflow"] {
        let err = fs.read_memory(bad).unwrap_err();
        assert!(matches!(err, CgroupError::Parse { .. }), "{bad}: {err}");
        assert!(err.to_string().contains(bad), "{err}");
    }
    let stats = fs.read_memory("ok").unwrap();
    assert_eq!(stats.usage_bytes, 4096);
    assert_eq!(stats.limit_bytes, None);
    assert_eq!(stats.peak_bytes, None);
    assert_eq!(
        stats.inactive_file_bytes,
        Some(100),
        "malformed lines are skipped"
    );
    assert_eq!(stats.oom, None);
    assert_eq!(stats.oom_kill, None);
    assert_eq!(stats.max_events, Some(5));
    assert_eq!(stats.oom_group_kill, None);
    assert_eq!(stats.pressure, None, "truncated pressure line");
    assert_eq!(stats.working_set_bytes(), 3996);

    // Inactive cache above usage (the two files are read at different times) saturates.
    let stats = MemoryStats {
        inactive_file_bytes: Some(5000),
        ..stats
    };
    assert_eq!(stats.working_set_bytes(), 0);
}

#[test]
fn v2_limit_max_and_v1_unlimited() {
    let root = tree(&[
        ("cgroup.controllers", "memory\n"),
        ("a/memory.current", "1\n"),
        ("a/memory.max", "max\n"),
        ("b/memory.current", "1\n"),
        ("b/memory.max", "1073741824\n"),
    ]);
    let fs = CgroupFs::detect(root.path()).unwrap();
    assert_eq!(fs.read_memory("a").unwrap().limit_bytes, None);
    assert_eq!(fs.read_memory("b").unwrap().limit_bytes, Some(1 << 30));

    let root = tree(&[
        ("memory/memory.usage_in_bytes", "0\n"),
        ("memory/rounded/memory.usage_in_bytes", "1\n"),
        ("memory/rounded/memory.limit_in_bytes", "9223372036854771712\n"),
        ("memory/max/memory.usage_in_bytes", "1\n"),
        ("memory/max/memory.limit_in_bytes", "9223372036854775807\n"),
        ("memory/big/memory.usage_in_bytes", "1\n"),
        ("memory/big/memory.limit_in_bytes", "4611686018427387904\n"),
        ("memory/set/memory.usage_in_bytes", "1\n"),
        ("memory/set/memory.limit_in_bytes", "4611686018427383808\n"),
        (
            "memory/set/memory.oom_control",
            "oom_kill_disable 1\nunder_oom 1\n",
        ),
        ("memory/odd/memory.usage_in_bytes", "1\n"),
        ("memory/odd/memory.oom_control", "under_oom 2\noom_kill\n"),
    ]);
    let fs = CgroupFs::detect(root.path()).unwrap();
    assert_eq!(fs.version(), CgroupVersion::V1);
    for unlimited in ["rounded", "max", "big"] {
        assert_eq!(
            fs.read_memory(unlimited).unwrap().limit_bytes,
            None,
            "{unlimited}"
        );
    }
    let set = fs.read_memory("set").unwrap();
    assert_eq!(set.limit_bytes, Some(4_611_686_018_427_383_808));
    assert_eq!(set.under_oom, Some(true));
    assert_eq!(set.oom_kill, None, "kernels before 4.13 have no oom_kill line");
    let odd = fs.read_memory("odd").unwrap();
    assert_eq!((odd.under_oom, odd.oom_kill), (None, None));
}

#[test]
fn systemd_paths_expand() {
    let uid = "6f1c1a2e_7b2d_4c1e_9a8f_0123456789ab";
    let id = "3f6a1b2c";
    for (cri, want) in [
        (
            format!("kubepods-burstable-pod{uid}.slice:cri-containerd:{id}"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{id}.scope"
            ),
        ),
        (
            format!("kubepods-besteffort-pod{uid}.slice:crio:{id}"),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/crio-{id}.scope"
            ),
        ),
        (
            format!("kubepods-pod{uid}.slice:cri-containerd:{id}"),
            format!("/kubepods.slice/kubepods-pod{uid}.slice/cri-containerd-{id}.scope"),
        ),
        ("-.slice:docker:abc".to_owned(), "/docker-abc.scope".to_owned()),
        (":cri-containerd:abc".to_owned(), "/system.slice/cri-containerd-abc.scope".to_owned()),
        ("a-b.slice::abc".to_owned(), "/a.slice/a-b.slice/abc.scope".to_owned()),
        ("a.slice:p:sub.slice".to_owned(), "/a.slice/sub.slice".to_owned()),
        // cgroupfs driver paths are already paths in the hierarchy.
        (format!("/kubepods/burstable/pod{uid}/{id}"), format!("/kubepods/burstable/pod{uid}/{id}")),
    ] {
        assert_eq!(cgroup_from_cri(&cri).as_deref(), Some(want.as_str()), "{cri}");
    }
    for bad in [
        "",
        "kubepods",
        "kubepods.slice:cri-containerd",
        "kubepods.slice:cri-containerd:a:b",
        "kubepods.slice:cri-containerd:",
        "kubepods:cri-containerd:abc",
        ".slice:p:abc",
        "a--b.slice:p:abc",
        "-a.slice:p:abc",
        "a-.slice:p:abc",
        "a/b.slice:p:abc",
        "a.slice:p/q:abc",
        "a.slice:p:../abc",
    ] {
        assert_eq!(cgroup_from_cri(bad), None, "{bad:?}");
    }
}

#[test]
fn dotdot_cannot_escape() {
    let fs = CgroupFs::detect(&fixture("v2")).unwrap();
    let root = fs.hierarchy().to_path_buf();
    assert_eq!(fs.dir("/"), root);
    assert_eq!(fs.dir(""), root);
    assert_eq!(fs.dir("/../../../etc"), root.join("etc"));
    assert_eq!(fs.dir("a/./b/../../../../c//d/"), root.join("c/d"));
    assert_eq!(fs.dir("/kubepods.slice/.."), root);
    assert!(fs.read_memory("../../../../../../proc").unwrap_err().is_gone());
}

#[test]
fn proc_cgroup_lines() {
    let v1 = "12:pids:/a\n3:cpu,cpuacct:/b\n2:memory:/kubepods/x\n0::/\n";
    assert_eq!(parse_proc_cgroup(v1, CgroupVersion::V1), Some("/kubepods/x"));
    assert_eq!(parse_proc_cgroup(v1, CgroupVersion::V2), Some("/"));
    assert_eq!(
        parse_proc_cgroup("4:cpu,memory:/m\n", CgroupVersion::V1),
        Some("/m")
    );
    assert_eq!(parse_proc_cgroup("4:memoryx:/m\n", CgroupVersion::V1), None);
    assert_eq!(parse_proc_cgroup("0::/a:b\n", CgroupVersion::V2), Some("/a:b"));
    assert_eq!(
        parse_proc_cgroup("0::\n1:name=systemd:/x\n", CgroupVersion::V2),
        None
    );
    assert_eq!(parse_proc_cgroup("", CgroupVersion::V2), None);
    assert_eq!(parse_proc_cgroup("0:", CgroupVersion::V2), None);
}

#[test]
fn pressure_files() {
    let cpu_old = "some avg10=0.00 avg60=0.01 avg300=0.02 total=3\n";
    assert_eq!(
        parse_pressure(cpu_old),
        Ok(Pressure {
            some: PressureLine {
                avg10: 0.0,
                avg60: 0.01,
                avg300: 0.02,
                total_us: 3
            },
            full: None
        })
    );
    assert!(parse_pressure("").is_err());
    assert!(
        parse_pressure("full avg10=0 avg60=0 avg300=0 total=0\n").is_err(),
        "no some line"
    );
    assert!(parse_pressure("some").is_err());
    assert!(parse_pressure("some avg10=NaN avg60=0 avg300=0 total=1").is_err());
    assert!(parse_pressure("some avg10=-1 avg60=0 avg300=0 total=1").is_err());
    assert!(parse_pressure("some avg10=1 avg60=0 avg300=0 total=1 junk").is_err());
    assert!(
        parse_pressure("some avg10=1 avg60=0 avg300=0 total=1\nsome avg10=1 avg60=0 avg300=0 total=1")
            .is_err()
    );
    let extra = "some avg10=1 avg60=2 avg300=3 total=4 future=5\nnote hello\n";
    assert_eq!(parse_pressure(extra).map(|p| p.some.avg60), Ok(2.0));
}

/// A real read of this machine's memory cgroup, when it runs cgroup v1.
#[test]
fn real_host_v1() {
    if !Path::new("/sys/fs/cgroup/memory").is_dir() {
        println!("skipped: /sys/fs/cgroup/memory is absent (not a cgroup v1 host)");
        return;
    }
    let fs = CgroupFs::detect(Path::new("/")).unwrap();
    assert_eq!(fs.version(), CgroupVersion::V1);
    let stats = fs.read_memory("/").unwrap();
    assert!(stats.usage_bytes > 0);
    assert!(stats.inactive_file_bytes.is_some());
    let mine = fs.cgroup_of_pid(std::process::id()).unwrap();
    assert!(mine.starts_with('/'), "{mine}");
}

proptest! {
    #[test]
    fn parsers_never_panic(text in any::<String>(), pick in "[-a-z:/.\\n0-9=_ ]{0,80}") {
        for text in [text.as_str(), pick.as_str()] {
            let _ = parse_pressure(text);
            let _ = parse_u64(text);
            let _ = parse_percent(text);
            let _ = keyed_value(text, "oom_kill");
            let _ = cgroup_from_cri(text);
            let _ = expand_slice(text);
            let _ = parse_proc_cgroup(text, CgroupVersion::V1);
            let _ = parse_proc_cgroup(text, CgroupVersion::V2);
            let _ = snippet(text);
        }
    }

    #[test]
    fn dir_stays_inside(path in "[a-z./]{0,40}") {
        let fs = CgroupFs {
            host_root: PathBuf::from("/h"),
            version: CgroupVersion::V2,
            memory_root: PathBuf::from("/h/sys/fs/cgroup"),
        };
        let dir = fs.dir(&path);
        prop_assert!(dir.starts_with("/h/sys/fs/cgroup"));
        prop_assert!(!dir.components().any(|c| matches!(c, std::path::Component::ParentDir)));
    }

    #[test]
    fn systemd_expansion_is_a_clean_path(slice in "[a-z-]{1,20}", name in "[a-z0-9]{1,8}") {
        if let Some(path) = cgroup_from_cri(&format!("{slice}.slice:p:{name}")) {
            prop_assert!(path.starts_with('/'));
            let unit = format!("/p-{name}.scope");
            prop_assert!(path.ends_with(&unit));
            prop_assert!(!path.contains("//"));
        }
    }
}
