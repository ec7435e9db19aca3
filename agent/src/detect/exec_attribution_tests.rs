use super::*;
use crate::catalogue::{CatalogueEntries, CatalogueMode};
use crate::sources::logs::exec_failure::parse_line;

fn shipped() -> Catalogue {
    Catalogue::build(CatalogueMode::Extend, &CatalogueEntries::default()).expect("catalogue")
}

fn container() -> ContainerInfo {
    let mut c = ContainerInfo::unknown("c1");
    c.name = "manager".into();
    c.path_env = Some("/usr/sbin:/usr/bin:/sbin:/bin".into());
    c
}

fn missing_in(dirs: &[&str], program: &str) -> Option<Lookup> {
    Some(Lookup::Done(ProgramLookup::Missing {
        searched: dirs.iter().map(|d| format!("{d}/{program}")).collect(),
    }))
}

fn found_at(path: &str, target: &str) -> Option<Lookup> {
    Some(Lookup::Done(ProgramLookup::Found {
        path: path.into(),
        target: target.into(),
    }))
}

fn post_mortem(line: &str, on_host: Option<Lookup>, in_image: Option<Lookup>) -> PostMortem {
    PostMortem {
        log_tail: vec!["starting".into(), line.into()],
        log_error: None,
        exec_failure: parse_line(line),
        on_host,
        in_image,
        erofs: None,
    }
}

const NSENTER: &str = "nsenter: can't execute 'iscsiadm': No such file or directory";
const SHELL: &str = "sh: iscsiadm: not found";

#[test]
fn nsenter_and_a_host_without_the_program_is_a_missing_host_dependency() {
    let pm = post_mortem(NSENTER, missing_in(&["/usr/sbin", "/sbin"], "iscsiadm"), None);
    let a = attribute(&container(), 127, &pm, &shipped(), Some("debian")).expect("attributed");
    assert_eq!(a.kind, Some(FindingKind::MissingHostDependency));
    assert_eq!(a.program, "iscsiadm");
    assert_eq!(
        a.what,
        "the host lacks iscsiadm (package open-iscsi), which it ran in the host's namespaces: \
         `nsenter: can't execute 'iscsiadm': No such file or directory`"
    );
    assert!(a
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("apt-get install -y open-iscsi")));
    let sources: Vec<EvidenceSource> = a.evidence.iter().map(|e| e.source).collect();
    assert_eq!(
        sources,
        [EvidenceSource::Log, EvidenceSource::Host, EvidenceSource::Image]
    );
    assert_eq!(
        a.evidence[1].message,
        "the host lacks iscsiadm (searched /usr/sbin:/sbin)"
    );
}

#[test]
fn nsenter_and_a_host_that_has_it_or_cannot_be_read_is_not_a_host_finding() {
    let pm = post_mortem(NSENTER, found_at("/sbin/iscsiadm", "/usr/sbin/iscsiadm"), None);
    let a = attribute(&container(), 127, &pm, &shipped(), Some("debian")).expect("explained");
    assert_eq!(a.kind, None);
    assert!(
        a.what.contains("although the host has it at /usr/sbin/iscsiadm"),
        "{}",
        a.what
    );

    let pm = post_mortem(NSENTER, Some(Lookup::Unknown("permission denied".into())), None);
    let a = attribute(&container(), 127, &pm, &shipped(), None).expect("explained");
    assert_eq!(
        a.kind, None,
        "never a MissingHostDependency from an unreadable host"
    );
}

#[test]
fn a_shell_that_does_not_find_the_program_in_the_image_is_command_not_found() {
    let pm = post_mortem(
        SHELL,
        missing_in(&["/usr/sbin"], "iscsiadm"),
        missing_in(&["/usr/sbin", "/usr/bin", "/sbin", "/bin"], "iscsiadm"),
    );
    let a = attribute(&container(), 127, &pm, &shipped(), Some("rhel")).expect("attributed");
    assert_eq!(a.kind, Some(FindingKind::CommandNotFound));
    assert_eq!(
        a.what,
        "it ran iscsiadm, which is not in its image: `sh: iscsiadm: not found`"
    );
    let hint = a.hint.expect("hint");
    assert!(hint.starts_with("Fix the pod's command/args or the image: iscsiadm is not on the image's PATH (/usr/sbin:/usr/bin:/sbin:/bin)."), "{hint}");
    assert!(
        hint.contains("iscsiadm is a host tool (iscsi-initiator-utils)"),
        "{hint}"
    );
    assert!(hint.ends_with("the host lacks it too."), "{hint}");

    // The image could not be looked into: an exit with the log line, not a verdict.
    let pm = post_mortem(SHELL, None, Some(Lookup::Unknown("snapshot gone".into())));
    let a = attribute(&container(), 127, &pm, &shipped(), None).expect("explained");
    assert_eq!(a.kind, None);
    assert!(
        a.what
            .ends_with("the image could not be checked for iscsiadm: snapshot gone"),
        "{}",
        a.what
    );

    // The image has it: the PATH is wrong, not the image.
    let pm = post_mortem(SHELL, None, found_at("/usr/sbin/iscsiadm", "/usr/sbin/iscsiadm"));
    let a = attribute(&container(), 127, &pm, &shipped(), None).expect("explained");
    assert_eq!(a.kind, None);
}

#[test]
fn the_runtime_not_finding_the_command_is_command_not_found() {
    let message = "failed to create containerd task: failed to create shim task: OCI runtime create failed: \
        runc create failed: unable to start container process: exec: \"iscsiadm\": executable file not found in $PATH: unknown";
    let pm = PostMortem {
        exec_failure: parse_line(message),
        in_image: missing_in(&["/bin"], "iscsiadm"),
        ..PostMortem::default()
    };
    let a = attribute(&container(), 127, &pm, &shipped(), None).expect("attributed");
    assert_eq!(a.kind, Some(FindingKind::CommandNotFound));
    assert_eq!(a.program, "iscsiadm");
}

#[test]
fn no_program_no_attribution() {
    let pm = post_mortem("panic: runtime error: index out of range", None, None);
    assert_eq!(attribute(&container(), 2, &pm, &shipped(), None), None);
    let e = log_evidence(&container(), &pm).expect("the tail is still evidence");
    assert_eq!(
        e.message,
        "last log line: panic: runtime error: index out of range"
    );
}

#[test]
fn only_exits_the_failure_explains_are_attributed() {
    let absent = || missing_in(&["/bin"], "iscsiadm");
    let mut pm = post_mortem(SHELL, absent(), absent());
    // Killed by a signal: the old log line is not why.
    assert_eq!(attribute(&container(), 137, &pm, &shipped(), None), None);
    // Exit 1 right after the line: a script that stops on the missing tool.
    assert!(attribute(&container(), 1, &pm, &shipped(), None).is_some());
    // Exit 1 long after it: something else failed.
    pm.log_tail
        .extend(["retrying".into(), "connecting".into(), "fatal: timeout".into()]);
    assert_eq!(attribute(&container(), 1, &pm, &shipped(), None), None);
    assert!(attribute(&container(), 127, &pm, &shipped(), None).is_some());
    // A mount's "helper" for a type nobody catalogued is a bad option, not a missing helper.
    let line = "mount: /mnt: bad option; for several filesystems (e.g. nfs, cifs) you might need a \
                /sbin/mount.<type> helper program. (mount -t ext4 -o bogus /dev/sdb /mnt)";
    let pm = post_mortem(line, absent(), None);
    assert!(
        pm.exec_failure.is_some(),
        "the parser sees a mount helper failure"
    );
    assert_eq!(attribute(&container(), 32, &pm, &shipped(), None), None);
    let nfs = line.replace("ext4", "nfs");
    let pm = post_mortem(&nfs, absent(), None);
    let a = attribute(&container(), 32, &pm, &shipped(), None).expect("mount.nfs is catalogued");
    assert_eq!(a.kind, Some(FindingKind::MissingHostDependency));
    assert_eq!(a.program, "mount.nfs");
}
