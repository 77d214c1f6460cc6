//! The agent's files under /run: a lock per pin path (held for the agent's
//! life, holding its pid) and the status it publishes. `reload` and
//! `status` find the agent of a pin path through them.

use std::{
    fs,
    io::{Read as _, Seek as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};
use nix::fcntl::{Flock, FlockArg};

use crate::status::AgentStatus;

/// Where the lock and status files live.
pub const RUN_DIR: &str = "/run/lb-userspace";

/// One agent per pin path: its files are named after it.
fn stem(pin_dir: &Path) -> String {
    pin_dir.to_string_lossy().replace('/', "_")
}

fn lock_path(pin_dir: &Path) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{}.lock", stem(pin_dir)))
}

/// The BIRD the agent runs for [bgp]: its generated config and control socket.
pub fn bird_paths(pin_dir: &Path) -> (PathBuf, PathBuf) {
    let stem = stem(pin_dir);
    (
        Path::new(RUN_DIR).join(format!("{stem}.bird.conf")),
        Path::new(RUN_DIR).join(format!("{stem}.bird.ctl")),
    )
}

fn handover_path(pin_dir: &Path) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{}.handover.json", stem(pin_dir)))
}

/// `--keep-dataplane`: what the next agent needs to adopt the data plane.
pub fn write_handover(pin_dir: &Path, contents: &[u8]) -> Result<()> {
    fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
    let path = handover_path(pin_dir);
    fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
}

/// The handover a previous agent left, if any.
pub fn read_handover(pin_dir: &Path) -> Result<Option<Vec<u8>>> {
    let path = handover_path(pin_dir);
    match fs::read(&path) {
        Ok(contents) => Ok(Some(contents)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn remove_handover(pin_dir: &Path) -> Result<()> {
    let path = handover_path(pin_dir);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn status_path(pin_dir: &Path) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{}.status.json", stem(pin_dir)))
}

/// An exclusive flock held for the agent's life: the kernel drops it when
/// the process dies, however it dies. The file holds the agent's pid.
pub struct AgentLock {
    _flock: Flock<fs::File>,
    pin_dir: PathBuf,
}

impl Drop for AgentLock {
    fn drop(&mut self) {
        // Still held here, so no other agent can be between lock and use.
        let _ = fs::remove_file(status_path(&self.pin_dir));
        let _ = fs::remove_file(lock_path(&self.pin_dir));
    }
}

impl AgentLock {
    pub fn acquire(pin_dir: &Path) -> Result<Self> {
        fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
        let path = lock_path(pin_dir);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let mut flock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            anyhow!(
                "another lb-userspace is running with --pin-path {} ({e}); stop it first",
                pin_dir.display()
            )
        })?;
        flock.set_len(0)?;
        flock.rewind()?;
        write!(flock, "{}", std::process::id())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            _flock: flock,
            pin_dir: pin_dir.to_path_buf(),
        })
    }
}

/// The pid of the agent running with `pin_dir`, or an error saying none is.
pub fn running_agent_pid(pin_dir: &Path) -> Result<i32> {
    let not_running = || {
        anyhow!(
            "no lb-userspace is running with --pin-path {}",
            pin_dir.display()
        )
    };
    let path = lock_path(pin_dir);
    let file = fs::File::open(&path).map_err(|_| not_running())?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // We got the lock: nobody holds it.
        Ok(_) => Err(not_running()),
        Err((mut file, _)) => {
            let mut pid = String::new();
            file.read_to_string(&mut pid)
                .with_context(|| format!("reading {}", path.display()))?;
            pid.trim()
                .parse()
                .with_context(|| format!("{}: no pid in it", path.display()))
        }
    }
}

/// Publishes the agent's status (written whole, then renamed into place:
/// a reader never sees half a file).
pub fn write_status(pin_dir: &Path, status: &AgentStatus) -> Result<()> {
    let path = status_path(pin_dir);
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(status)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
}

/// The status the agent running with `pin_dir` published last.
pub fn read_status(pin_dir: &Path) -> Result<AgentStatus> {
    running_agent_pid(pin_dir)?;
    let path = status_path(pin_dir);
    let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Removes what an agent that could not exit cleanly (SIGKILL) left for
/// `pin_dir`: lock, status, handover. Only once no agent runs with it.
pub fn remove_leftovers(pin_dir: &Path) {
    let (bird_conf, bird_ctl) = bird_paths(pin_dir);
    for path in [
        lock_path(pin_dir),
        status_path(pin_dir),
        handover_path(pin_dir),
        bird_conf,
        bird_ctl,
    ] {
        let _ = fs::remove_file(path);
    }
}

/// How often `reload` looks for the agent's answer.
const RELOAD_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// `lb-userspace reload`: SIGHUP to the agent running with `pin_dir`, then
/// its verdict from the status it publishes (the agent re-reads the file it
/// was started with). Err when it refused the file or did not answer.
pub fn request_reload(pin_dir: &Path, timeout: std::time::Duration) -> Result<String> {
    let pid = running_agent_pid(pin_dir)?;
    let before = read_status(pin_dir)?.reloads.attempts();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("signalling lb-userspace (pid {pid})"))?;
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(RELOAD_POLL);
        let status = read_status(pin_dir)?;
        if status.reloads.attempts() > before {
            let last = status.reloads.last.unwrap_or_default();
            return if last.starts_with("ok") {
                Ok(last)
            } else {
                Err(anyhow!("{last}"))
            };
        }
    }
    Err(anyhow!(
        "lb-userspace (pid {pid}) got SIGHUP but did not report a reload within {timeout:?}; see its log"
    ))
}
