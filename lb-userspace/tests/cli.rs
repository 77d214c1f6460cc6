//! The CLI as an operator runs it, without root: keepalived.conf imports
//! that `check` accepts, and clear errors when no agent runs.

use std::{path::PathBuf, process::Command};

const BINARY: &str = env!("CARGO_BIN_EXE_lb-userspace");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keepalived")
        .join(name)
}

#[test]
fn imported_keepalived_confs_pass_check() {
    let dir = std::env::temp_dir().join(format!("lb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["seed.conf", "sample.conf"] {
        let out = Command::new(BINARY)
            .arg("import-keepalived")
            .arg(fixture(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.lines().all(|l| l.starts_with("warning: ")),
            "{stderr}"
        );
        let toml_path = dir.join(format!("{name}.toml"));
        std::fs::write(&toml_path, &out.stdout).unwrap();
        let check = Command::new(BINARY)
            .args(["check", "--config"])
            .arg(&toml_path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reload_and_status_say_when_no_agent_runs() {
    for command in ["reload", "status"] {
        let out = Command::new(BINARY)
            .args([command, "--pin-path", "/sys/fs/bpf/lb-no-such-agent"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "no lb-userspace is running with --pin-path /sys/fs/bpf/lb-no-such-agent"
            ),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn import_of_a_broken_file_names_the_line() {
    let path = std::env::temp_dir().join(format!("lb-broken-{}.conf", std::process::id()));
    std::fs::write(&path, "global_defs {\n  router_id X\n").unwrap();
    let out = Command::new(BINARY)
        .arg("import-keepalived")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":1: this block is never closed"),
        "{stderr}"
    );
}
