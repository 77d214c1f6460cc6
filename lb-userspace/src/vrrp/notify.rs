//! keepalived's notify scripts: notify_master / notify_backup / notify_fault
//! run as given; `notify` gets "INSTANCE <name> <STATE> <priority>"
//! appended. Run by /bin/sh, not waited for (a slow script never delays
//! VRRP), reaped in the background.

use tokio::process::Command;
use tracing::warn;

use super::state::State;

#[derive(Debug, Clone, Default)]
pub struct NotifyScripts {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    pub any: Option<String>,
}

/// The command lines to run for entering `state`.
pub fn commands(
    scripts: &NotifyScripts,
    instance: &str,
    state: State,
    priority: u8,
) -> Vec<String> {
    let specific = match state {
        State::Master => scripts.master.clone(),
        State::Backup => scripts.backup.clone(),
        State::Fault => scripts.fault.clone(),
        State::Init => None,
    };
    let generic = scripts
        .any
        .as_ref()
        .filter(|_| state != State::Init)
        .map(|s| format!("{s} INSTANCE \"{instance}\" {} {priority}", state.name()));
    specific.into_iter().chain(generic).collect()
}

pub fn run(scripts: &NotifyScripts, instance: &str, state: State, priority: u8) {
    for cmd in commands(scripts, instance, state, priority) {
        match Command::new("/bin/sh").arg("-c").arg(&cmd).spawn() {
            Ok(mut child) => {
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
            }
            Err(e) => warn!("vrrp_instance {instance}: cannot run notify script {cmd:?}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_then_generic_with_keepalived_arguments() {
        let s = NotifyScripts {
            master: Some("/etc/lb/master.sh".into()),
            any: Some("/etc/lb/notify.sh".into()),
            ..Default::default()
        };
        assert_eq!(
            commands(&s, "VI_1", State::Master, 100),
            vec![
                "/etc/lb/master.sh".to_string(),
                "/etc/lb/notify.sh INSTANCE \"VI_1\" MASTER 100".to_string()
            ]
        );
        assert_eq!(
            commands(&s, "VI_1", State::Backup, 100),
            vec!["/etc/lb/notify.sh INSTANCE \"VI_1\" BACKUP 100".to_string()]
        );
    }
}
