//! The `podmortem` command line: help, config checking, and bad config files.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use podmortem_e2e::agent::Agent;

fn podmortem(args: &[&str]) -> std::process::Output {
    Command::new(Agent::binary().unwrap())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn broken_config_names_file_line_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("podmortem.yaml");
    std::fs::write(
        &path,
        "node_name: w1\ncri:\n  resync_interval: 30s\n  resync_intervall: 5s\n",
    )
    .unwrap();
    let out = podmortem(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:4:", path.display())), "{stderr}");
    assert!(stderr.contains("resync_intervall"), "{stderr}");
    assert!(out.stdout.is_empty());

    std::fs::write(&path, "exit:\n  runtime_grace: [1, 2\n").unwrap();
    let out = podmortem(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&path.display().to_string()));

    let missing = dir.path().join("absent.yaml");
    let out = podmortem(&["run", "--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn check_config_prints_the_effective_configuration_with_flags_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("podmortem.yaml");
    std::fs::write(&path, "node_name: from-file\ncri:\n  resync_interval: 1m\n").unwrap();
    let out = podmortem(&[
        "check-config",
        "--config",
        path.to_str().unwrap(),
        "--host-root",
        "/host",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("node_name: from-file"), "{stdout}");
    assert!(stdout.contains("host_root: /host"), "{stdout}");
    assert!(stdout.contains("resync_interval: 1m"), "{stdout}");
    assert!(
        stdout.contains("containerd_address: /run/containerd/containerd.sock"),
        "{stdout}"
    );
}

#[test]
fn help_explains_the_commands_and_flags() {
    let out = podmortem(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "check-config", "explains why pods crash"] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    let out = podmortem(&["run", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--containerd-address",
        "--node-name",
        "--host-root",
        "--state-dir",
        "--config",
        "--output",
        "NODE_NAME",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let out = podmortem(&["run", "--output", "xml"]);
    assert_eq!(out.status.code(), Some(2));
}
