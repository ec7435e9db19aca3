use super::*;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

/// Creates a regular file (and its parents) with the given mode.
fn file(root: &Path, path: &str, mode: u32) {
    let path = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Creates a file (and its parents) holding `text`.
fn text(root: &Path, path: &str, text: &[u8]) {
    let path = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn dir(root: &Path, path: &str) {
    fs::create_dir_all(root.join(path.trim_start_matches('/'))).unwrap();
}

/// Creates a symlink (and its link's parents).
fn link(root: &Path, path: &str, target: &str) {
    let path = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    symlink(target, path).unwrap();
}

/// Creates an overlay whiteout (a 0/0 character device); false when not permitted.
fn whiteout(root: &Path, path: &str) -> bool {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let path = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    match mknod(
        &path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(0, 0),
    ) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => {
            println!("skipped: mknod of a whiteout is not permitted here");
            false
        }
        Err(e) => panic!("mknod {}: {e}", path.display()),
    }
}

/// A merged-usr Debian-like host root.
fn debian() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "etc",
        "usr/local/bin",
        "usr/local/sbin",
    ] {
        dir(r, d);
    }
    link(r, "bin", "usr/bin");
    link(r, "sbin", "usr/sbin");
    link(r, "lib", "usr/lib");
    file(r, "usr/sbin/iscsiadm", 0o755);
    root
}

fn found(path: &str, target: &str) -> ProgramLookup {
    ProgramLookup::Found {
        path: path.to_owned(),
        target: target.to_owned(),
    }
}

fn resolved(tree: &dyn Tree, path: &str) -> Option<String> {
    resolve(tree, path)
        .unwrap()
        .map(|r| r.path.to_string_lossy().into_owned())
}

#[test]
fn merged_usr_program_through_sbin_link() {
    let root = debian();
    let host = HostView::new(root.path());
    assert_eq!(
        host.find_program("iscsiadm", &["/sbin", "/bin"]).unwrap(),
        found("/sbin/iscsiadm", "/usr/sbin/iscsiadm")
    );
    assert_eq!(
        host.find_program("iscsiadm", DEFAULT_PATH).unwrap(),
        found("/usr/sbin/iscsiadm", "/usr/sbin/iscsiadm")
    );
    let dirs = vec!["/usr/local/bin/".to_owned(), "/sbin/".to_owned()];
    assert_eq!(
        host.find_program("iscsiadm", &dirs).unwrap(),
        found("/sbin/iscsiadm", "/usr/sbin/iscsiadm")
    );
    assert_eq!(
        host.find_program("/sbin/iscsiadm", &[] as &[&str]).unwrap(),
        found("/sbin/iscsiadm", "/usr/sbin/iscsiadm")
    );
    assert_eq!(
        host.find_program("multipath", &["/sbin", "/bin"]).unwrap(),
        ProgramLookup::Missing {
            searched: vec!["/sbin/multipath".to_owned(), "/bin/multipath".to_owned()]
        }
    );
    assert_eq!(host.file("/lib").unwrap().as_deref(), Some("/usr/lib"));
    assert_eq!(host.file("/bin/../lib").unwrap().as_deref(), Some("/usr/lib"));
    assert_eq!(host.file("/lib/nothing").unwrap(), None);
    assert_eq!(host.file("/").unwrap().as_deref(), Some("/"));
    assert_eq!(host.root(), root.path());
    assert_eq!(host.tree().root(), root.path());
}

#[test]
fn absolute_links_stay_in_the_tree() {
    let root = debian();
    let r = root.path();
    file(r, "opt/tool/bin/tool", 0o755);
    link(r, "usr/local/bin/tool", "/opt/tool/bin/tool");
    // Exists on the agent's own filesystem, not in the fixture.
    link(r, "usr/local/bin/sh", "/bin/sh");
    assert!(Path::new("/bin/sh").exists());
    // The fixture's own file, by its path on the agent's filesystem.
    let outside = r.join("usr/sbin/iscsiadm");
    link(r, "usr/local/bin/outside", outside.to_str().unwrap());
    let host = HostView::new(r);
    assert_eq!(
        host.find_program("tool", DEFAULT_PATH).unwrap(),
        found("/usr/local/bin/tool", "/opt/tool/bin/tool")
    );
    assert!(matches!(
        host.find_program("sh", DEFAULT_PATH).unwrap(),
        ProgramLookup::Missing { .. }
    ));
    assert!(matches!(
        host.find_program("outside", DEFAULT_PATH).unwrap(),
        ProgramLookup::Missing { .. }
    ));
    // Once the fixture has a /bin/sh (through its /bin link), the link finds it.
    file(r, "usr/bin/dash", 0o755);
    link(r, "usr/bin/sh", "dash");
    assert_eq!(
        host.find_program("sh", &["/usr/local/bin"]).unwrap(),
        found("/usr/local/bin/sh", "/usr/bin/dash")
    );
}

#[test]
fn dot_dot_never_climbs_above_the_root() {
    let root = debian();
    let r = root.path();
    link(r, "usr/bin/x", "../../../../../etc/passwd");
    let host = HostView::new(r);
    assert!(matches!(
        host.find_program("x", &["/usr/bin"]).unwrap(),
        ProgramLookup::Missing { .. }
    ));
    assert_eq!(host.file("/../../..").unwrap().as_deref(), Some("/"));
    assert_eq!(
        host.file("../usr/../../bin").unwrap().as_deref(),
        Some("/usr/bin")
    );
    file(r, "etc/passwd", 0o644);
    assert_eq!(host.file("/usr/bin/x").unwrap().as_deref(), Some("/etc/passwd"));
    assert_eq!(
        host.find_program("x", &["/usr/bin"]).unwrap(),
        ProgramLookup::NotExecutable {
            path: "/usr/bin/x".to_owned(),
            kind: EntryKind::File
        }
    );
    file(r, "etc/passwd", 0o700);
    assert_eq!(
        host.find_program("x", &["/usr/bin"]).unwrap(),
        found("/usr/bin/x", "/etc/passwd")
    );
}

#[test]
fn symlink_loops_are_errors() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    link(r, "loop/a", "b");
    link(r, "loop/b", "/loop/a");
    link(r, "loop/self", "self");
    link(r, "loop/deeper", "deeper/deeper/deeper");
    link(r, "loop/up", "../loop/up/x");
    let tree = RootDir::new(r);
    for name in ["a", "b", "self", "deeper", "up"] {
        let err = find_program(&tree, name, &["/loop"]).unwrap_err();
        assert!(matches!(err, HostError::SymlinkLoop { .. }), "{name}: {err}");
        assert!(err.to_string().contains(name), "{err}");
    }
    // Exactly 40 links are followed; 41 are too many.
    file(r, "chain/end", 0o755);
    for i in 0..41 {
        let target = if i == 40 {
            "end".to_owned()
        } else {
            format!("l{}", i + 1)
        };
        link(r, &format!("chain/l{i}"), &target);
    }
    assert_eq!(resolved(&tree, "/chain/l1").as_deref(), Some("/chain/end"));
    assert!(matches!(
        resolve(&tree, "/chain/l0"),
        Err(HostError::SymlinkLoop { .. })
    ));
}

#[test]
fn lookup_work_is_bounded() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let deep = |n: usize| vec!["d"; n].join("/");
    dir(r, &deep(200));
    let tree = RootDir::new(r);
    // Depths 1 to 150 in all: 11,325 lookups.
    assert_eq!(resolved(&tree, &deep(150)), Some(format!("/{}", deep(150))));
    assert!(matches!(
        resolve(&tree, &deep(200)),
        Err(HostError::TooManyLookups { .. })
    ));
    // Links into the depths cannot multiply the work either: 11 links, 600 components.
    link(r, "deep", &format!("/{}", deep(100)));
    link(r, &format!("{}/back", deep(100)), "/deep");
    assert_eq!(resolved(&tree, "deep/back/back"), Some(format!("/{}", deep(100))));
    let err = resolve(&tree, &format!("deep{}", "/back".repeat(5))).unwrap_err();
    assert!(matches!(err, HostError::TooManyLookups { .. }), "{err}");
}

#[test]
fn not_executable_and_directories() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    file(r, "a/plain", 0o644);
    dir(r, "a/prog/");
    file(r, "b/prog", 0o100);
    dir(r, "c/onlydir");
    let tree = RootDir::new(r);
    assert_eq!(
        find_program(&tree, "plain", &["/a", "/b"]).unwrap(),
        ProgramLookup::NotExecutable {
            path: "/a/plain".to_owned(),
            kind: EntryKind::File
        }
    );
    assert_eq!(
        find_program(&tree, "prog", &["/a", "/b"]).unwrap(),
        found("/b/prog", "/b/prog")
    );
    assert_eq!(
        find_program(&tree, "onlydir", &["/a", "/c"]).unwrap(),
        ProgramLookup::NotExecutable {
            path: "/c/onlydir".to_owned(),
            kind: EntryKind::Dir
        }
    );
    // A PATH entry that is a file is skipped; empty and relative entries start at the root.
    file(r, "prog", 0o755);
    assert_eq!(
        find_program(&tree, "prog", &["/a/plain", "", "b"]).unwrap(),
        found("/prog", "/prog")
    );
    assert_eq!(
        find_program(&tree, "prog", &["b", ""]).unwrap(),
        found("b/prog", "/b/prog")
    );
    // A name with a slash is that path only.
    assert_eq!(
        find_program(&tree, "a/plain", DEFAULT_PATH).unwrap(),
        ProgramLookup::NotExecutable {
            path: "a/plain".to_owned(),
            kind: EntryKind::File
        }
    );
    assert_eq!(
        find_program(&tree, "/a/none", DEFAULT_PATH).unwrap(),
        ProgramLookup::Missing {
            searched: vec!["/a/none".to_owned()]
        }
    );
}

#[test]
fn bad_program_names_are_refused() {
    let tree = RootDir::new(Path::new("/nonexistent-podmortem-root"));
    let long = "x".repeat(256);
    for name in ["", "a\0b", ".", "..", long.as_str()] {
        let err = find_program(&tree, name, DEFAULT_PATH).unwrap_err();
        assert!(
            matches!(err, HostError::InvalidName { what: "program", .. }),
            "{name:?}: {err}"
        );
    }
    assert!(matches!(
        find_program(&tree, &"x".repeat(255), DEFAULT_PATH).unwrap(),
        ProgramLookup::Missing { .. }
    ));
    let long_path = format!("/{}", "a/".repeat(2048));
    assert!(matches!(
        find_program(&tree, &long_path, DEFAULT_PATH),
        Err(HostError::InvalidName { what: "path", .. })
    ));
    // A missing root holds nothing.
    assert_eq!(resolve(&tree, "/").unwrap(), None);
}

/// A tree that refuses access below one directory, as a directory of mode 000 would.
struct Denying {
    inner: RootDir,
    denied: PathBuf,
}

impl Tree for Denying {
    fn lstat(&self, path: &Path) -> Result<Option<Entry>, HostError> {
        if path.starts_with(&self.denied) && path != self.denied {
            return Err(HostError::io(
                path,
                io::Error::from_raw_os_error(nix::libc::EACCES),
            ));
        }
        self.inner.lstat(path)
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        self.inner.read_link(path)
    }

    fn host_path(&self, path: &Path) -> Result<Option<PathBuf>, HostError> {
        self.inner.host_path(path)
    }

    fn describe(&self) -> String {
        "denying".to_owned()
    }
}

#[test]
fn an_error_in_one_path_dir_does_not_hide_a_later_hit() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    file(r, "ok/prog", 0o755);
    file(r, "ok/plain", 0o644);
    dir(r, "denied");
    let tree = Denying {
        inner: RootDir::new(r),
        denied: PathBuf::from("/denied"),
    };
    assert_eq!(
        find_program(&tree, "prog", &["/denied", "/ok"]).unwrap(),
        found("/ok/prog", "/ok/prog")
    );
    for name in ["none", "plain"] {
        let err = find_program(&tree, name, &["/denied", "/ok"]).unwrap_err();
        match &err {
            HostError::Io { path, source } => {
                assert_eq!(path, &Path::new("/denied").join(name));
                assert_eq!(source.raw_os_error(), Some(nix::libc::EACCES));
            }
            other => panic!("{other}"),
        }
        assert!(!err.is_not_found());
    }
}

#[test]
fn resolve_edge_cases() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    file(r, "d/f", 0o644);
    link(r, "d/to-f", "f");
    link(r, "d/to-d", "/d/");
    link(r, "d/dangling", "nowhere");
    let tree = RootDir::new(r);
    assert_eq!(resolved(&tree, ""), None);
    assert_eq!(resolved(&tree, "/d/f/"), None);
    assert_eq!(resolved(&tree, "/d/f/."), None);
    assert_eq!(resolved(&tree, "/d/f/.."), None);
    assert_eq!(resolved(&tree, "/d/to-f/"), None);
    assert_eq!(resolved(&tree, "/d/dangling"), None);
    assert_eq!(resolved(&tree, "/d/f/x"), None);
    assert_eq!(resolved(&tree, "d//./f").as_deref(), Some("/d/f"));
    assert_eq!(resolved(&tree, "/d/to-d/to-d/to-f").as_deref(), Some("/d/f"));
    assert_eq!(resolved(&tree, "/d/to-d/..").as_deref(), Some("/"));
    assert_eq!(resolved(&tree, "/d/.").as_deref(), Some("/d"));
    let dir = resolve(&tree, "/d/to-d").unwrap().unwrap();
    assert_eq!(dir.entry.kind, EntryKind::Dir);
    let f = resolve(&tree, "/d/to-f").unwrap().unwrap();
    assert_eq!(
        f.entry,
        Entry {
            kind: EntryKind::File,
            mode: 0o644
        }
    );
    // The trait itself never follows a symlink among the parents.
    assert_eq!(tree.lstat(Path::new("/d/to-d/f")).unwrap(), None);
    assert_eq!(
        tree.lstat(Path::new("/d/to-f")).unwrap().map(|e| e.kind),
        Some(EntryKind::Symlink)
    );
    assert_eq!(tree.read_link(Path::new("/d/to-d")).unwrap(), Path::new("/d/"));
    assert!(tree.read_link(Path::new("/d/f")).is_err());
    assert!(tree.read_link(Path::new("/d/none")).unwrap_err().is_not_found());
    assert_eq!(
        tree.host_path(Path::new("/x/../d/./f")).unwrap(),
        Some(r.join("d/f"))
    );
    assert!(tree.describe().contains(&r.display().to_string()));
    assert!(matches!(
        resolve(&tree, "/d/\0"),
        Err(HostError::InvalidName { what: "path", .. })
    ));
}

#[test]
fn overlay_layers() {
    let upper = tempfile::tempdir().unwrap();
    let middle = tempfile::tempdir().unwrap();
    let lower = tempfile::tempdir().unwrap();
    let (u, m, l) = (upper.path(), middle.path(), lower.path());
    dir(u, "usr/bin");
    link(u, "bin", "usr/bin");
    file(l, "usr/bin/tool", 0o755);
    file(l, "usr/bin/other", 0o755);
    file(m, "usr/bin/other", 0o644);
    file(l, "opt/app/run", 0o755);
    file(u, "opt", 0o644);
    file(l, "srv/a/b", 0o755);
    file(m, "srv/a", 0o755);
    let tree = Layers::new(vec![u.to_path_buf(), m.to_path_buf(), l.to_path_buf()]);
    assert_eq!(tree.layers().len(), 3);
    assert!(tree.describe().contains(&u.display().to_string()));
    // Program in a lower layer, found through the upper layer's symlink.
    assert_eq!(
        find_program(&tree, "tool", &["/bin"]).unwrap(),
        found("/bin/tool", "/usr/bin/tool")
    );
    assert_eq!(
        tree.host_path(Path::new("/usr/bin/tool")).unwrap(),
        Some(l.join("usr/bin/tool"))
    );
    // A higher layer overrides a lower one.
    assert!(matches!(
        find_program(&tree, "other", &["/bin"]).unwrap(),
        ProgramLookup::NotExecutable { .. }
    ));
    // A file in a higher layer hides a directory below it.
    assert_eq!(resolved(&tree, "/opt/app/run"), None);
    assert_eq!(
        tree.lstat(Path::new("/opt")).unwrap().map(|e| e.kind),
        Some(EntryKind::File)
    );
    assert_eq!(resolved(&tree, "/srv/a/b"), None);
    assert_eq!(resolved(&tree, "/srv/a").as_deref(), Some("/srv/a"));
    assert_eq!(resolved(&tree, "/").as_deref(), Some("/"));
    assert_eq!(resolved(&Layers::new(Vec::new()), "/"), None);

    if whiteout(u, "usr/bin/tool") {
        assert!(matches!(
            find_program(&tree, "tool", &["/bin"]).unwrap(),
            ProgramLookup::Missing { .. }
        ));
        // Seen as one directory, a whiteout is just a device.
        assert_eq!(
            resolve(&RootDir::new(u), "/bin/tool")
                .unwrap()
                .map(|r| r.entry.kind),
            Some(EntryKind::Other)
        );
        // A whiteout in the middle hides a directory's lower contents, not the upper's.
        file(u, "etc/conf/a", 0o644);
        file(l, "etc/conf/b", 0o644);
        assert_eq!(resolved(&tree, "/etc/conf/b").as_deref(), Some("/etc/conf/b"));
        assert!(whiteout(m, "etc/conf"));
        assert_eq!(resolved(&tree, "/etc/conf/b"), None);
        assert_eq!(resolved(&tree, "/etc/conf/a").as_deref(), Some("/etc/conf/a"));
        // A whiteout of a whole directory in the upper layer.
        assert!(whiteout(u, "srv"));
        assert_eq!(resolved(&tree, "/srv"), None);
    }
}

/// Writes a kernel's module files into a host root.
fn modules_host(lib_link: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    text(
        r,
        "proc/modules",
        b"dm_crypt 61440 0 - Live 0xffffffffc0a00000\nnbd 65536 0 - Live 0x0\n",
    );
    text(r, "proc/sys/kernel/osrelease", b"6.1.0-18-amd64\n");
    let modules = "usr/lib/modules/6.1.0-18-amd64";
    text(
        r,
        &format!("{modules}/modules.builtin"),
        b"kernel/drivers/block/loop.ko\nkernel/fs/ext4/ext4.ko\n\xff\xfe\n",
    );
    text(
        r,
        &format!("{modules}/modules.dep"),
        b"kernel/drivers/md/dm-raid.ko.xz: kernel/drivers/md/dm-mod.ko.xz\n\
          junk line\n\
          kernel/drivers/scsi/iscsi_tcp.ko.zst: kernel/drivers/scsi/libiscsi_tcp.ko.zst\n\
          kernel/fs/zonefs/zonefs.ko:\n\
          kernel/fs/nfs/nfs.ko.gz: kernel/net/sunrpc/sunrpc.ko.gz\n",
    );
    link(r, "lib", lib_link);
    root
}

#[test]
fn kernel_modules() {
    for lib_link in ["usr/lib", "/usr/lib"] {
        let root = modules_host(lib_link);
        let r = root.path();
        let host = HostView::new(r);
        assert_eq!(host.kernel_release().unwrap(), "6.1.0-18-amd64");
        for (name, want) in [
            ("dm-crypt", ModuleState::Loaded),
            ("dm_crypt", ModuleState::Loaded),
            ("nbd", ModuleState::Loaded),
            ("loop", ModuleState::Builtin),
            ("ext4", ModuleState::Builtin),
            (
                "dm_raid",
                ModuleState::Available {
                    path: "/lib/modules/6.1.0-18-amd64/kernel/drivers/md/dm-raid.ko.xz".to_owned(),
                },
            ),
            (
                "iscsi-tcp",
                ModuleState::Available {
                    path: "/lib/modules/6.1.0-18-amd64/kernel/drivers/scsi/iscsi_tcp.ko.zst".to_owned(),
                },
            ),
            (
                "zonefs",
                ModuleState::Available {
                    path: "/lib/modules/6.1.0-18-amd64/kernel/fs/zonefs/zonefs.ko".to_owned(),
                },
            ),
            (
                "nfs",
                ModuleState::Available {
                    path: "/lib/modules/6.1.0-18-amd64/kernel/fs/nfs/nfs.ko.gz".to_owned(),
                },
            ),
            ("zfs", ModuleState::Missing),
            ("dm", ModuleState::Missing),
            ("dm-mod", ModuleState::Missing),
        ] {
            assert_eq!(host.module(name).unwrap(), want, "{name} with /lib -> {lib_link}");
        }
        for bad in ["", "a/b", "a b", "x\0", "a:b"] {
            assert!(
                matches!(
                    host.module(bad),
                    Err(HostError::InvalidName { what: "module", .. })
                ),
                "{bad:?}"
            );
        }

        let modules = r.join("usr/lib/modules/6.1.0-18-amd64");
        fs::remove_file(modules.join("modules.dep")).unwrap();
        assert_eq!(host.module("zfs").unwrap(), ModuleState::Missing);
        assert_eq!(host.module("loop").unwrap(), ModuleState::Builtin);
        fs::remove_file(modules.join("modules.builtin")).unwrap();
        match host.module("zfs").unwrap() {
            ModuleState::Unknown { reason } => assert!(reason.contains("6.1.0-18-amd64"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(host.module("nbd").unwrap(), ModuleState::Loaded);

        fs::write(r.join("proc/sys/kernel/osrelease"), "../../etc\n").unwrap();
        assert!(matches!(host.kernel_release(), Err(HostError::Parse { .. })));
        assert!(matches!(host.module("zfs"), Err(HostError::Parse { .. })));
        fs::write(r.join("proc/sys/kernel/osrelease"), " \n").unwrap();
        assert!(matches!(host.kernel_release(), Err(HostError::Parse { .. })));

        fs::remove_file(r.join("proc/modules")).unwrap();
        let err = host.module("nbd").unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains("proc/modules"), "{err}");
    }
}

#[test]
fn module_index_parsing() {
    assert!(kernel::same_module("dm-crypt", "dm_crypt"));
    assert!(!kernel::same_module("dm-crypt", "dm-crypt2"));
    assert!(kernel::is_loaded("a_b 1 0 - Live 0x0\n\n  \n", "a-b"));
    assert!(!kernel::is_loaded("", "a"));
    assert!(!kernel::is_builtin("kernel/x/.ko\n.ko\nkernel/x/y.ko.bak\n", ""));
    assert!(!kernel::is_builtin("kernel/x/y.ko.bak\n", "y"));
    assert_eq!(kernel::find_in_dep("x.ko.xz:\n", "x"), Some("x.ko.xz"));
    assert_eq!(kernel::find_in_dep("x.ko.xz\n", "x"), None);
    assert_eq!(
        kernel::find_in_dep("/lib/modules/1/y.ko: x.ko\n", "y"),
        Some("/lib/modules/1/y.ko")
    );
}

#[test]
fn too_large_files_are_errors() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    text(r, "proc/sys/kernel/osrelease", &[b'1'; 5000]);
    let err = HostView::new(r).kernel_release().unwrap_err();
    assert!(matches!(err, HostError::TooLarge { limit: 4096, .. }), "{err}");
    text(r, "small", b"12345");
    assert!(matches!(
        read_bounded(&r.join("small"), 4),
        Err(HostError::TooLarge { .. })
    ));
    assert_eq!(read_bounded(&r.join("small"), 5).unwrap(), b"12345");
    // The last component is never followed.
    link(r, "to-small", "small");
    assert!(read_bounded(&r.join("to-small"), 5).is_err());
}

#[test]
fn daemons_from_fake_proc() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let host = HostView::new(r);
    assert!(host.daemons().unwrap_err().is_not_found());
    text(r, "proc/1/comm", b"systemd\n");
    text(r, "proc/300/comm", b"kubelet\n");
    text(r, "proc/7/comm", b"kubelet\n");
    text(r, "proc/42/comm", b"a-daemon-with-a\n");
    text(r, "proc/43/comm", b"iscsid");
    text(r, "proc/44/comm", b"bad\xff\n");
    text(r, "proc/45/comm", b"a-much-longer-name-than-the-kernel-keeps\n");
    text(r, "proc/self/comm", b"ignored\n");
    text(r, "proc/12abc/comm", b"ignored\n");
    text(r, "proc/uptime", b"1.0 2.0\n");
    // Unreadable: a comm that is a directory, a process gone (no comm).
    dir(r, "proc/99/comm");
    dir(r, "proc/100");
    let scan = host.daemons().unwrap();
    assert_eq!(scan.running("kubelet"), Some(7));
    assert_eq!(scan.running("systemd"), Some(1));
    assert_eq!(scan.running("a-daemon-with-a-long-name"), Some(42));
    assert_eq!(scan.running("a-daemon-with-a"), Some(42));
    assert_eq!(scan.running("a-daemon-with"), None);
    assert_eq!(scan.running("iscsid"), Some(43));
    assert_eq!(scan.running("a-much-longer-name"), Some(45));
    assert_eq!(scan.running("bad\u{fffd}"), None);
    assert_eq!(scan.running("ignored"), None);
    assert_eq!(scan.running(""), None);
    assert_eq!(scan.unreadable(), 2);
    assert!(scan.complete());
    assert_eq!(scan.len(), 6);
    assert!(!scan.is_empty());
    let names: Vec<_> = scan.iter().map(|(comm, pid)| (comm.into_owned(), pid)).collect();
    assert!(names.contains(&("bad\u{fffd}".to_owned(), 44)), "{names:?}");
    assert!(names.contains(&("a-much-longer-n".to_owned(), 45)), "{names:?}");
}

#[test]
fn os_release_parsing() {
    let parsed = os_release::parse(
        "# comment\n\
         NAME=\"Debian GNU/Linux\"\n\
         PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n\
         VERSION_ID='12'\n\
         ID=debian\n\
         ID_LIKE=\"rhel  centos fedora\"\n\
         junk\n\
         =x\n\
         BAD KEY=y\n\
         ID=two words\n\
         ID=\"unterminated\n\
         ID='it's'\n\
         ID=\"a\"b\n\
         ID=$HOME\n\
         VERSION=\"12 (\\\"bookworm\\\")\"\n\
         \u{e4}=1\n",
    );
    assert_eq!(
        parsed,
        OsRelease {
            id: "debian".to_owned(),
            id_like: vec!["rhel".to_owned(), "centos".to_owned(), "fedora".to_owned()],
            pretty_name: "Debian GNU/Linux 12 (bookworm)".to_owned(),
            version_id: "12".to_owned(),
        }
    );
    let escaped = os_release::parse("PRETTY_NAME=\"a \\\"b\\\" \\\\ \\$ \\x\"\nID=\"\"\n");
    assert_eq!(escaped.pretty_name, "a \"b\" \\ $ \\x");
    assert_eq!(escaped.id, "");
    assert_eq!(os_release::parse(""), OsRelease::default());
}

#[test]
fn os_release_from_the_tree() {
    let root = debian();
    let r = root.path();
    let host = HostView::new(r);
    assert_eq!(host.os_release(), OsRelease::default());
    text(r, "usr/lib/os-release", b"ID=debian\nVERSION_ID=\"12\"\n");
    assert_eq!(host.os_release().id, "debian");
    link(r, "etc/os-release", "../usr/lib/os-release");
    assert_eq!(host.os_release().version_id, "12");
    fs::remove_file(r.join("etc/os-release")).unwrap();
    link(r, "etc/os-release", "/usr/lib/os-release");
    assert_eq!(host.os_release().version_id, "12");
    fs::remove_file(r.join("etc/os-release")).unwrap();
    text(r, "etc/os-release", b"ID=flatcar\n");
    assert_eq!(host.os_release().id, "flatcar");
    fs::remove_file(r.join("etc/os-release")).unwrap();
    // A directory is not an os-release file; the fallback is read.
    dir(r, "etc/os-release");
    assert_eq!(host.os_release().id, "debian");
}

#[test]
fn real_host() {
    let host = HostView::new(Path::new("/"));
    match host.find_program("sh", DEFAULT_PATH).unwrap() {
        ProgramLookup::Found { path, target } => {
            assert!(path.ends_with("/sh"), "{path}");
            assert!(Path::new(&target).is_file(), "{target}");
        }
        other => panic!("no sh on this machine: {other:?}"),
    }
    let comm = fs::read_to_string("/proc/self/comm").unwrap();
    let scan = host.daemons().unwrap();
    let pid = scan.running(comm.trim_end_matches('\n'));
    assert!(
        matches!(pid, Some(pid) if pid <= std::process::id()),
        "{comm:?}: {pid:?}"
    );
    assert!(!host.kernel_release().unwrap().is_empty());
    let _ = host.os_release();
    match fs::read_to_string("/proc/modules") {
        Ok(modules) => match modules.split_whitespace().next() {
            Some(name) => assert_eq!(host.module(name).unwrap(), ModuleState::Loaded),
            None => println!("skipped: no module loaded"),
        },
        Err(e) => println!("skipped: cannot read /proc/modules: {e}"),
    }
}

/// What a random tree entry is.
#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(u32),
    Link(String),
    Whiteout,
}

/// Paths made of the names random trees use, `.` and `..`, absolute or not, maybe with a
/// trailing slash.
const PATHS: &str = "/?([ab]{1,2}|\\.|\\.\\.)(/([ab]{1,2}|\\.|\\.\\.)){0,4}/?";

fn entries() -> impl Strategy<Value = Vec<(String, Kind)>> {
    let kind = prop_oneof![
        Just(Kind::Dir),
        (0u32..0o1000).prop_map(Kind::File),
        prop_oneof!["[ab./]{0,10}", PATHS].prop_map(Kind::Link),
        Just(Kind::Whiteout),
    ];
    proptest::collection::vec(("[ab]{1,2}(/[ab]{1,2}){0,2}", kind), 0..14)
}

/// Builds a random tree below `root`: directories and files first, then symlinks and
/// whiteouts, each only where its parent is a real directory, so nothing is created through a
/// symlink (which could point anywhere on this machine).
fn build(root: &Path, entries: &[(String, Kind)]) {
    for (path, kind) in entries {
        let host = root.join(path);
        match kind {
            Kind::Dir => {
                let _ = fs::create_dir_all(&host);
            }
            Kind::File(mode) => {
                if host.parent().is_some_and(|p| fs::create_dir_all(p).is_ok())
                    && fs::write(&host, "x").is_ok()
                {
                    let _ = fs::set_permissions(&host, fs::Permissions::from_mode(*mode));
                }
            }
            Kind::Link(_) | Kind::Whiteout => {}
        }
    }
    let tree = RootDir::new(root);
    for (path, kind) in entries {
        let parent = Path::new("/").join(path);
        let parent = parent.parent().unwrap_or(Path::new("/"));
        let parent_is_dir = tree.lstat(parent).unwrap().map(|e| e.kind) == Some(EntryKind::Dir);
        if !parent_is_dir {
            continue;
        }
        match kind {
            Kind::Link(target) => {
                let _ = symlink(target, root.join(path));
            }
            Kind::Whiteout => {
                use nix::sys::stat::{makedev, mknod, Mode, SFlag};
                let _ = mknod(
                    &root.join(path),
                    SFlag::S_IFCHR,
                    Mode::from_bits_truncate(0o600),
                    makedev(0, 0),
                );
            }
            Kind::Dir | Kind::File(_) => {}
        }
    }
}

/// What a resolution reached: its path in the tree, kind and permission bits.
type Reached = Option<(PathBuf, EntryKind, u32)>;

/// What the kernel makes of `path` in `root` (`openat2` with `RESOLVE_IN_ROOT`): `None` when
/// absent, `Err` with the errno otherwise. The path reached is read back from
/// `/proc/self/fd`.
fn kernel_resolve(root: &Path, path: &str) -> Result<Reached, nix::errno::Errno> {
    use nix::errno::Errno;
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use nix::sys::stat::SFlag;
    use std::os::fd::AsRawFd;
    let root = fs::canonicalize(root).unwrap();
    let dir = fs::File::open(&root).unwrap();
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(dir.as_raw_fd(), path, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(e),
    };
    let stat = nix::sys::stat::fstat(fd);
    let reached = fs::read_link(format!("/proc/self/fd/{fd}"));
    nix::unistd::close(fd)?;
    let (stat, reached) = (stat?, reached.unwrap());
    let in_tree = Path::new("/").join(reached.strip_prefix(&root).unwrap());
    let kind = match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => EntryKind::File,
        SFlag::S_IFDIR => EntryKind::Dir,
        SFlag::S_IFLNK => EntryKind::Symlink,
        _ => EntryKind::Other,
    };
    Ok(Some((in_tree, kind, stat.st_mode & 0o7777)))
}

/// What `resolve` reached, checking the invariants of a resolved path on the way.
fn our_resolve(tree: &dyn Tree, path: &str) -> Result<Reached, HostError> {
    let Some(found) = resolve(tree, path)? else {
        return Ok(None);
    };
    assert!(found.path.is_absolute());
    assert!(found
        .path
        .components()
        .all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_))));
    assert_ne!(found.entry.kind, EntryKind::Symlink);
    assert_eq!(tree.lstat(&found.path)?, Some(found.entry));
    assert!(tree.host_path(&found.path)?.is_some());
    Ok(Some((found.path, found.entry.kind, found.entry.mode)))
}

/// Checks that `resolve` in `tree` and the kernel in `root` agree on each path.
fn agree(tree: &dyn Tree, root: &Path, paths: &[String]) -> Result<(), TestCaseError> {
    for path in paths {
        let kernel = kernel_resolve(root, path);
        let ours = our_resolve(tree, path);
        match (&kernel, &ours) {
            (Ok(k), Ok(o)) => prop_assert_eq!(k, o, "{}", path),
            (Err(nix::errno::Errno::ELOOP), Err(HostError::SymlinkLoop { .. })) => {}
            _ => prop_assert!(false, "{path}: kernel {kernel:?}, ours {ours:?}"),
        }
    }
    Ok(())
}

/// A read-only overlay mount of some layers, unmounted when dropped.
struct Overlay(PathBuf);

impl Overlay {
    /// Mounts `layers` (upper first) as overlay lower layers at `target`; `None` when not
    /// permitted here.
    fn mount(layers: &[&Path], target: &Path) -> Option<Overlay> {
        use nix::mount::{mount, MsFlags};
        let lower: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
        let options = format!("lowerdir={}", lower.join(":"));
        match mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::MS_RDONLY,
            Some(options.as_str()),
        ) {
            Ok(()) => Some(Overlay(target.to_path_buf())),
            Err(e) => {
                println!("skipped: cannot mount an overlay here: {e}");
                None
            }
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// `resolve` on one directory agrees with the kernel's own resolution in a root.
    #[test]
    fn resolve_agrees_with_the_kernel(
        entries in entries(),
        paths in proptest::collection::vec(prop_oneof![PATHS, "/?[ab./]{0,14}"], 1..8),
    ) {
        let root = tempfile::tempdir().unwrap();
        build(root.path(), &entries);
        agree(&RootDir::new(root.path()), root.path(), &paths)?;
    }

    /// `resolve` over [`Layers`] agrees with the kernel's own overlayfs mounting the same
    /// layers.
    #[test]
    fn layers_agree_with_overlayfs(
        upper in entries(),
        middle in entries(),
        lower in entries(),
        paths in proptest::collection::vec(prop_oneof![PATHS, "/?[ab./]{0,14}"], 1..8),
    ) {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        for (dir, entries) in dirs.iter().zip([&upper, &middle, &lower]) {
            build(dir.path(), entries);
        }
        let layers: Vec<&Path> = dirs[..3].iter().map(|d| d.path()).collect();
        let mounted = dirs[3].path();
        let Some(_overlay) = Overlay::mount(&layers, mounted) else {
            return Ok(());
        };
        let tree = Layers::new(layers.iter().map(|l| l.to_path_buf()).collect());
        agree(&tree, mounted, &paths)?;
    }

    /// Arbitrary names, paths and link targets over random layers: never a panic, always an
    /// answer.
    #[test]
    fn lookups_never_panic(
        upper in entries(),
        lower in entries(),
        names in proptest::collection::vec(any::<String>(), 1..4),
        paths in proptest::collection::vec("[ab./\\x00]{0,16}", 1..4),
    ) {
        let (u, l) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        build(u.path(), &upper);
        build(l.path(), &lower);
        let layers = Layers::new(vec![u.path().to_path_buf(), l.path().to_path_buf()]);
        let root = RootDir::new(u.path());
        for tree in [&layers as &dyn Tree, &root] {
            for name in names.iter().chain(&paths) {
                let _ = find_program(tree, name, &["/a", "b", "", "/a/b/..", "/\0"]);
                let _ = find_program(tree, name, DEFAULT_PATH);
                if let Ok(Some(found)) = resolve(tree, name) {
                    prop_assert_ne!(found.entry.kind, EntryKind::Symlink);
                    prop_assert_eq!(tree.lstat(&found.path).unwrap(), Some(found.entry));
                }
            }
        }
    }
}
