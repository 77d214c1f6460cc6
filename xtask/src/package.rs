//! `cargo xtask package [--verify]`: a Debian package of the agent, built
//! with dpkg-deb from a staged tree: the binary, the systemd unit, an
//! example /etc/lb/lb.toml (the seed's, a conffile), /etc/default/lb-userspace
//! and the man page generated from the CLI's clap definition. `--verify`
//! installs it with `dpkg -i` into a scratch root (never the host's package
//! database), checks every file and that the installed binary accepts the
//! installed config, then removes and purges it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, workspace_root};

const PACKAGE: &str = "lb-userspace";
const MAINTAINER: &str = "lb developers <lb@localhost>";
/// (source in the workspace, path in the package, mode)
const FILES: &[(&str, &str, u32)] = &[
    (
        "target/release/lb-userspace",
        "usr/sbin/lb-userspace",
        0o755,
    ),
    (
        "packaging/lb-userspace.service",
        "lib/systemd/system/lb-userspace.service",
        0o644,
    ),
    ("packaging/default", "etc/default/lb-userspace", 0o644),
    ("configs/seed-dr.toml", "etc/lb/lb.toml", 0o644),
    (
        "configs/seed-nat.toml",
        "usr/share/doc/lb-userspace/examples/seed-nat.toml",
        0o644,
    ),
    (
        "configs/tun.toml",
        "usr/share/doc/lb-userspace/examples/tun.toml",
        0o644,
    ),
];
const MAN_PAGE: &str = "usr/share/man/man8/lb-userspace.8.gz";
/// Files an upgrade must not overwrite once the operator edited them.
const CONFFILES: &[&str] = &["/etc/lb/lb.toml", "/etc/default/lb-userspace"];

fn run(cmd: &mut Command, what: &str) -> Result<std::process::Output> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// lb-userspace's version, from its Cargo.toml.
fn version(root: &Path) -> Result<String> {
    let manifest = fs::read_to_string(root.join("lb-userspace/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim_matches('"').to_string())
        .context("no version in lb-userspace/Cargo.toml")
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Builds the .deb; returns its path.
pub fn build() -> Result<PathBuf> {
    let root = workspace_root();
    cargo(&["build", "--release", "-p", "lb-userspace"])?;
    let version = version(&root)?;
    let arch = String::from_utf8(
        run(
            Command::new("dpkg").arg("--print-architecture"),
            "dpkg --print-architecture",
        )?
        .stdout,
    )?
    .trim()
    .to_string();
    let out_dir = root.join("target/package");
    let stage = out_dir.join(format!("{PACKAGE}_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    println!("==> package: staging {}", stage.display());
    for (source, dest, mode) in FILES {
        let dest = stage.join(dest);
        fs::create_dir_all(dest.parent().unwrap_or(&stage))?;
        fs::copy(root.join(source), &dest)
            .with_context(|| format!("copying {source} into the package"))?;
        set_mode(&dest, *mode)?;
    }
    let man = run(
        Command::new(root.join("target/release/lb-userspace")).arg("manpage"),
        "lb-userspace manpage",
    )?
    .stdout;
    let man_path = stage.join(MAN_PAGE);
    fs::create_dir_all(man_path.parent().unwrap_or(&stage))?;
    let gz = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    {
        use std::io::Write as _;
        gz.stdin.as_ref().context("gzip stdin")?.write_all(&man)?;
    }
    let gz = gz.wait_with_output()?;
    if !gz.status.success() {
        bail!("gzip failed ({})", gz.status);
    }
    fs::write(&man_path, gz.stdout)?;
    set_mode(&man_path, 0o644)?;
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    fs::write(
        debian.join("control"),
        format!(
            "Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\n\
             Section: net\nPriority: optional\nDepends: libc6, bird2\n\
             Description: XDP load balancer replacing LVS (ipvsadm) + keepalived\n \
             One program: an XDP data plane with IPVS's schedulers and DR/TUN/NAT\n \
             forwarding, keepalived's health checks and VRRP, ipvsadm-like listing.\n"
        ),
    )?;
    fs::write(debian.join("conffiles"), CONFFILES.join("\n") + "\n")?;
    let deb = out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    run(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&stage)
            .arg(&deb),
        "dpkg-deb --build",
    )?;
    println!("==> package: {}", deb.display());
    Ok(deb)
}

/// Installs `deb` into a scratch root with dpkg -i and checks it.
pub fn verify(deb: &Path) -> Result<()> {
    let scratch = workspace_root().join("target/package/verify-root");
    if scratch.exists() {
        fs::remove_dir_all(&scratch)?;
    }
    let admin = scratch.join("var/lib/dpkg");
    fs::create_dir_all(admin.join("info"))?;
    fs::create_dir_all(admin.join("updates"))?;
    fs::write(admin.join("status"), "")?;
    let dpkg = |args: &[&str]| {
        let mut cmd = Command::new("dpkg");
        // libc6 and bird2 are not in the scratch root's database: only this
        // package's own files are checked here.
        cmd.arg(format!("--root={}", scratch.display()))
            .arg("--force-depends")
            .args(args);
        cmd
    };
    println!("==> package: dpkg -i into {}", scratch.display());
    run(dpkg(&["-i"]).arg(deb), "dpkg -i (into the scratch root)")?;
    for (_, dest, _) in FILES {
        if !scratch.join(dest).is_file() {
            bail!("dpkg -i did not install /{dest}");
        }
    }
    if !scratch.join(MAN_PAGE).is_file() {
        bail!("dpkg -i did not install /{MAN_PAGE}");
    }
    let listed = String::from_utf8(run(&mut dpkg(&["-L", PACKAGE]), "dpkg -L")?.stdout)?;
    if !listed.contains("/usr/sbin/lb-userspace") {
        bail!("dpkg -L does not list the binary:\n{listed}");
    }
    let binary = scratch.join("usr/sbin/lb-userspace");
    run(
        Command::new(&binary)
            .args(["check", "--config"])
            .arg(scratch.join("etc/lb/lb.toml")),
        "the installed lb-userspace check of the installed /etc/lb/lb.toml",
    )?;
    let man = run(
        Command::new("sh").arg("-c").arg(format!(
            "gzip -dc {} | head -c 4096",
            scratch.join(MAN_PAGE).display()
        )),
        "reading the man page",
    )?;
    if !String::from_utf8_lossy(&man.stdout).contains(".TH lb-userspace 8") {
        bail!("the man page has no `.TH lb-userspace 8` header");
    }
    verify_unit(&scratch, &binary)?;
    run(&mut dpkg(&["-r", PACKAGE]), "dpkg -r")?;
    if binary.exists() {
        bail!("dpkg -r left the binary behind");
    }
    if !scratch.join("etc/lb/lb.toml").exists() {
        bail!("dpkg -r removed the conffile /etc/lb/lb.toml (only purge may)");
    }
    run(&mut dpkg(&["--purge", PACKAGE]), "dpkg --purge")?;
    if scratch.join("etc/lb/lb.toml").exists() {
        bail!("dpkg --purge left /etc/lb/lb.toml behind");
    }
    fs::remove_dir_all(&scratch)?;
    println!("==> package: installs, lists, checks its config, removes and purges");
    Ok(())
}

/// systemd-analyze verify of the installed unit. The scratch root has no
/// systemd of its own, so a copy whose commands point at the installed
/// binary is verified on the host (systemd checks they are executable);
/// any complaint (an unknown key, a bad value) fails.
fn verify_unit(scratch: &Path, binary: &Path) -> Result<()> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("    systemd-analyze not installed: unit syntax not verified");
        return Ok(());
    }
    let unit = fs::read_to_string(scratch.join("lib/systemd/system/lb-userspace.service"))?;
    let dir = scratch.join("unit-check");
    fs::create_dir_all(&dir)?;
    let copy = dir.join("lb-userspace.service");
    fs::write(
        &copy,
        unit.replace("/usr/sbin/lb-userspace", &binary.display().to_string()),
    )?;
    let out = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy),
        "systemd-analyze verify of the unit",
    )?;
    let complaints =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !complaints.trim().is_empty() {
        bail!("systemd-analyze verify complains about the unit:\n{complaints}");
    }
    println!("    systemd-analyze verify: unit OK");
    Ok(())
}
