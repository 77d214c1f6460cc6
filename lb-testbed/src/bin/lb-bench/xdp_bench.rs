//! The real xdp-bench next to our baselines, on the same veth and the same
//! traffic: in a namespace of our own, Debian's xdp-trafficgen (UDP over
//! IPv6, its default) sends from `xb1` to `xb0`, where Debian's xdp-bench
//! runs `drop`, `tx` and `pass`, then our own xdp_drop baseline. Debian's
//! xdp-tools 1.3.1 load tracepoint programs Linux 6.16 removed; the
//! bench builds an LD_PRELOAD shim (xdp_bench_shim.c, with cc) that lets
//! both tools run. Whatever cannot run is reported with its reason, never
//! a failure of the bench.

use super::Baselines;
use aya::programs::XdpMode;
use lb_testbed::netns;
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The interface xdp-bench (or our baseline) runs on, and the generator's.
const BENCH_IF: &str = "xb0";
const GEN_IF: &str = "xb1";
/// How long each xdp-bench run lasts; the generator starts a second into
/// it and stops a second before its end.
const BENCH_SECONDS: u64 = 6;
const GEN_START: Duration = Duration::from_secs(1);
const GEN_SECONDS: u64 = BENCH_SECONDS - 2;
/// Our baseline's window, inside the generator's run (after its start-up).
const OWN_WINDOW: Duration = Duration::from_secs(2);
const LIBXDP_DIR: &str = "/sys/fs/bpf/xdp";
const SHIM_SOURCE: &str = include_str!("xdp_bench_shim.c");
/// Where the shim is built (relative to the workspace root, as OUT_DIR).
const SHIM_LIB: &str = "target/bench/xdp-bench-shim.so";
const MPPS: f64 = 1e6;

fn run_cmd(args: &[&str]) -> Option<Output> {
    Command::new(args[0]).args(&args[1..]).output().ok()
}

/// Builds the shim; Err says why it could not.
fn build_shim() -> Result<PathBuf, String> {
    let lib = PathBuf::from(SHIM_LIB);
    if let Some(dir) = lib.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let source = lib.with_extension("c");
    std::fs::write(&source, SHIM_SOURCE).map_err(|e| format!("writing the shim: {e}"))?;
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&lib)
        .arg(&source)
        .arg("-ldl")
        .output()
        .map_err(|e| format!("running cc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cc failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::canonicalize(&lib).map_err(|e| format!("{}: {e}", lib.display()))
}

/// A command in namespace `ns` with the shim preloaded (nsenter, not ip
/// netns exec: libxdp needs the host's bpffs).
fn tool(ns: &str, shim: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(netns::nsenter_net(ns))
        .arg("env")
        .arg(format!("LD_PRELOAD={}", shim.display()))
        .args(args);
    c
}

fn mac_of(ns: &str, iface: &str) -> Option<String> {
    let out = run_cmd(&["ip", "-n", ns, "link", "show", "dev", iface])?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
}

/// xdp-trafficgen from GEN_IF to `dst_mac` for GEN_SECONDS.
fn start_generator(ns: &str, shim: &Path, dst_mac: &str) -> std::io::Result<Child> {
    let seconds = GEN_SECONDS.to_string();
    tool(
        ns,
        shim,
        &[
            "timeout",
            &seconds,
            "xdp-trafficgen",
            "udp",
            "-m",
            dst_mac,
            GEN_IF,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
}

/// xdp-bench `mode` on BENCH_IF under the generator's traffic: its output.
fn xdp_bench(ns: &str, shim: &Path, mode: &str, dst_mac: &str) -> String {
    let seconds = BENCH_SECONDS.to_string();
    let bench = tool(
        ns,
        shim,
        &["timeout", &seconds, "xdp-bench", mode, BENCH_IF],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn();
    let Ok(bench) = bench else {
        return "could not start xdp-bench".to_string();
    };
    thread::sleep(GEN_START);
    let generator = start_generator(ns, shim, dst_mac).and_then(|g| g.wait_with_output());
    let out = bench.wait_with_output();
    let mut text = out
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default();
    if let Ok(g) = generator
        && !g.status.success()
        && g.status.code() != Some(TIMEOUT_EXIT)
    {
        text.push_str(&String::from_utf8_lossy(&g.stderr));
    }
    text
}

/// timeout(1)'s exit status when it stopped the command.
const TIMEOUT_EXIT: i32 = 124;

/// The rate while traffic flowed: the median of xdp-bench's per-second
/// "Summary N rx/s" lines with traffic, the first and last (partial
/// seconds) left out when there are enough.
fn steady_rate(output: &str) -> Option<f64> {
    let mut rates: Vec<f64> = output
        .lines()
        .filter(|l| l.trim_start().starts_with("Summary"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .filter(|r| *r > 0.0)
        .collect();
    if rates.len() >= 3 {
        rates.remove(0);
        rates.pop();
    }
    if rates.is_empty() {
        return None;
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    Some(rates[rates.len() / 2])
}

/// Frames an XDP program on `iface` in `ns` dropped (veth's xdp_drops).
fn xdp_drops(ns: &str, iface: &str) -> u64 {
    netns::exec_in(ns, &["ethtool", "-S", iface]).map_or(0, |out| {
        super::live_veth::sum_xdp_drops(&String::from_utf8_lossy(&out.stdout))
    })
}

/// Our xdp_drop baseline on BENCH_IF under the same traffic: packets/s
/// over OWN_WINDOW in the generator's run.
fn own_drop(
    ns: &str,
    shim: &Path,
    dst_mac: &str,
    baselines: &mut Baselines,
) -> anyhow::Result<f64> {
    with_xdp_drop(ns, BENCH_IF, baselines, || -> anyhow::Result<f64> {
        let generator = start_generator(ns, shim, dst_mac)?;
        thread::sleep(GEN_START);
        let (before, start) = (xdp_drops(ns, BENCH_IF), Instant::now());
        thread::sleep(OWN_WINDOW);
        let (after, elapsed) = (xdp_drops(ns, BENCH_IF), start.elapsed());
        generator.wait_with_output()?;
        Ok((after - before) as f64 / elapsed.as_secs_f64())
    })?
}

pub fn run(baselines: &mut Baselines) -> Vec<String> {
    if run_cmd(&["xdp-bench", "--help"]).is_none() {
        return vec!["xdp-bench is not installed (xdp-tools)".to_string()];
    }
    let shim = match build_shim() {
        Ok(shim) => shim,
        Err(e) => return vec![format!("xdp-bench not run: the LD_PRELOAD shim: {e}")],
    };
    // libxdp makes its lock directory in bpffs; leave none behind.
    let libxdp_dir = Path::new(LIBXDP_DIR);
    let had_libxdp_dir = libxdp_dir.exists();
    let ns = format!("lbxb{}", std::process::id());
    let mut out = vec![format!(
        "Debian's xdp-tools (xdp-bench on {BENCH_IF}, xdp-trafficgen udp on its veth peer {GEN_IF}, \
         one namespace), with the project's LD_PRELOAD shim for the tracepoints Linux 6.16 removed; \
         per-second rates while traffic flowed (median):"
    )];
    match netns::create_with_veth(&ns, BENCH_IF, GEN_IF).map_err(|e| format!("{e:#}")) {
        Ok(()) => measure(&ns, &shim, baselines, &mut out),
        Err(e) => out.push(format!(
            "xdp-bench not run: no namespace with a veth pair: {e}"
        )),
    }
    netns::destroy_namespace(&ns);
    if !had_libxdp_dir {
        // Only when empty: then it is the one xdp-bench just made.
        let _ = std::fs::remove_dir(libxdp_dir);
    }
    out
}

fn measure(ns: &str, shim: &Path, baselines: &mut Baselines, out: &mut Vec<String>) {
    // veth delivers XDP_TX only to a peer with an XDP program: xdp-bench
    // tx's frames come back to the generator's side, so it gets one.
    let _ = netns::exec_in(ns, &["ethtool", "-K", GEN_IF, "tx", "off"]);
    let Some(mac) = mac_of(ns, BENCH_IF) else {
        out.push(format!("xdp-bench not run: no MAC address on {BENCH_IF}"));
        return;
    };
    for mode in ["drop", "tx", "pass"] {
        let text = if mode == "tx" {
            with_xdp_drop(ns, GEN_IF, baselines, || xdp_bench(ns, shim, mode, &mac))
        } else {
            Ok(xdp_bench(ns, shim, mode, &mac))
        };
        out.push(match text {
            Ok(text) => match steady_rate(&text) {
                Some(rate) => format!("- xdp-bench {mode}: {:.2} Mpps", rate / MPPS),
                None => format!(
                    "- xdp-bench {mode} could not run here: {}",
                    failure_reason(&text)
                ),
            },
            Err(e) => format!("- xdp-bench {mode} not run: {e:#}"),
        });
    }
    out.push(match own_drop(ns, shim, &mac, baselines) {
        Ok(rate) => format!(
            "- our xdp_drop baseline, same traffic: {:.2} Mpps",
            rate / MPPS
        ),
        Err(e) => format!("- our xdp_drop baseline not measured: {e:#}"),
    });
}

/// Runs `f` with our xdp_drop attached to `iface` in `ns` (native), and
/// detached after, whatever `f` returned.
fn with_xdp_drop<R>(
    ns: &str,
    iface: &str,
    baselines: &mut Baselines,
    f: impl FnOnce() -> R,
) -> anyhow::Result<R> {
    let link = in_namespace(ns, || {
        Ok(baselines.prog("xdp_drop")?.attach(iface, XdpMode::Driver)?)
    })?;
    let result = f();
    in_namespace(ns, || Ok(baselines.prog("xdp_drop")?.detach(link)?))?;
    Ok(result)
}

/// Runs `f` with the calling thread in namespace `ns` (interfaces resolve
/// there), then back in the host's.
fn in_namespace<T>(ns: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let netns_file = File::open(format!("/var/run/netns/{ns}"))?;
    let host = File::open("/proc/self/ns/net")?;
    nix::sched::setns(&netns_file, nix::sched::CloneFlags::CLONE_NEWNET)?;
    let result = f();
    nix::sched::setns(&host, nix::sched::CloneFlags::CLONE_NEWNET)?;
    result
}

/// Why xdp-bench failed, in one line: the missing tracepoint when that is
/// it (libxdp's other complaints, e.g. about its dispatcher, come first
/// and are not the cause), else its last error line.
fn failure_reason(output: &str) -> String {
    const MISSING_TRACEPOINT: &str = "failed to find kernel BTF type ID of 'xdp_redirect_map";
    if output.contains(MISSING_TRACEPOINT) {
        return "this kernel lacks the xdp_redirect_map tracepoints its statistics need"
            .to_string();
    }
    output
        .lines()
        .rfind(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("fail") || l.contains("error")
        })
        .or_else(|| output.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("no output")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::{failure_reason, steady_rate};

    #[test]
    fn the_missing_tracepoint_is_named_before_libxdp_s_other_complaints() {
        // What Debian's xdp-bench 1.3.1 prints on this kernel (abridged).
        let output = "  libbpf: prog 'xdp_pass': BPF program load failed: Operation not permitted\n\
             libbpf: prog 'tp_xdp_redirect_map_err': failed to find kernel BTF type ID of 'xdp_redirect_map_err': -3\n\
             Failed to attach XDP program: No such process\n";
        assert_eq!(
            failure_reason(output),
            "this kernel lacks the xdp_redirect_map tracepoints its statistics need"
        );
    }

    #[test]
    fn otherwise_the_last_error_line_says_why() {
        let output = "Loading...\nCouldn't attach: error -22\nbye\n";
        assert_eq!(failure_reason(output), "Couldn't attach: error -22");
        assert_eq!(failure_reason("just this\n"), "just this");
        assert_eq!(failure_reason(""), "no output");
    }

    #[test]
    fn the_steady_rate_leaves_out_idle_and_partial_seconds() {
        // xdp-bench drop's output on this machine (abridged): idle, a
        // partial second, full seconds, a partial one, idle.
        let output = "Dropping packets on xb0 (ifindex 2; driver veth)\n\
            Summary                         0 rx/s                  0 err/s\n\
            Summary                   3080225 rx/s                  0 err/s\n\
            Summary                   8471391 rx/s                  0 err/s\n\
            Summary                   6281028 rx/s                  0 err/s\n\
            Summary                   7000000 rx/s                  0 err/s\n\
            Summary                    120000 rx/s                  0 err/s\n\
            \n  Packets received    : 17832644\n  Average packets/s   : 5944215\n";
        assert_eq!(steady_rate(output), Some(7_000_000.0));
        assert_eq!(steady_rate("no summary"), None);
    }
}
