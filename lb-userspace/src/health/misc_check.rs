//! keepalived MISC_CHECK: run misc_path; exit 0 = up. With misc_dynamic,
//! exit 1 = down and exit 2..=255 = up with weight (code - 2).

use std::time::Duration;

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::process::Command;

use super::CheckResult;

/// misc_dynamic: exit codes at or above this set the weight to code - 2.
const DYNAMIC_WEIGHT_BASE: i32 = 2;

#[derive(Debug, Clone)]
pub struct MiscCheck {
    /// A command line, run by /bin/sh -c as keepalived's scripts are.
    pub misc_path: String,
    pub misc_timeout: Duration,
    pub misc_dynamic: bool,
}

impl MiscCheck {
    pub async fn check(&self) -> CheckResult {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.misc_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own process group, so a timeout kills what it started too.
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return CheckResult::Failure(format!("cannot run {:?}: {e}", self.misc_path)),
        };
        let status = match tokio::time::timeout(self.misc_timeout, child.wait()).await {
            Err(_) => {
                if let Some(pid) = child.id() {
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
                let _ = child.kill().await;
                return CheckResult::Failure(format!(
                    "{:?} timed out after {:?} (killed)",
                    self.misc_path, self.misc_timeout
                ));
            }
            Ok(Err(e)) => {
                return CheckResult::Failure(format!("waiting for {:?}: {e}", self.misc_path));
            }
            Ok(Ok(status)) => status,
        };
        match status.code() {
            Some(0) => CheckResult::Success { weight: None },
            Some(code) if self.misc_dynamic && code >= DYNAMIC_WEIGHT_BASE => {
                CheckResult::Success {
                    weight: Some((code - DYNAMIC_WEIGHT_BASE) as u32),
                }
            }
            Some(code) => {
                CheckResult::Failure(format!("{:?} exited with code {code}", self.misc_path))
            }
            None => CheckResult::Failure(format!("{:?} was killed by a signal", self.misc_path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn misc(cmd: &str, dynamic: bool) -> MiscCheck {
        MiscCheck {
            misc_path: cmd.into(),
            misc_timeout: Duration::from_secs(2),
            misc_dynamic: dynamic,
        }
    }

    #[tokio::test]
    async fn exit_codes() {
        assert_eq!(
            misc("exit 0", false).check().await,
            CheckResult::Success { weight: None }
        );
        match misc("exit 1", false).check().await {
            CheckResult::Failure(r) => assert!(r.contains("code 1"), "{r}"),
            other => panic!("{other:?}"),
        }
        // Without misc_dynamic, any non-zero code is a failure.
        assert!(matches!(
            misc("exit 7", false).check().await,
            CheckResult::Failure(_)
        ));
    }

    #[tokio::test]
    async fn misc_dynamic_sets_the_weight() {
        assert_eq!(
            misc("exit 7", true).check().await,
            CheckResult::Success { weight: Some(5) }
        );
        assert_eq!(
            misc("exit 2", true).check().await,
            CheckResult::Success { weight: Some(0) }
        );
        assert!(matches!(
            misc("exit 1", true).check().await,
            CheckResult::Failure(_)
        ));
    }

    #[tokio::test]
    async fn a_script_past_its_timeout_is_killed() {
        let dir = std::env::temp_dir().join(format!("lb-misc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("survived");
        let check = MiscCheck {
            misc_path: format!("sleep 3; touch {}", marker.display()),
            misc_timeout: Duration::from_millis(200),
            misc_dynamic: false,
        };
        match check.check().await {
            CheckResult::Failure(r) => assert!(r.contains("timed out"), "{r}"),
            other => panic!("{other:?}"),
        }
        // Had the shell not been killed, it would create the marker.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!marker.exists(), "the script outlived its timeout");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
