//! The real xdp-bench, when the kernel lets it run: `xdp-bench drop` and
//! `tx` for a few seconds on one end of a veth pair in a namespace of our
//! own. Debian's 1.3.1 needs tracepoints this kernel lacks; then the
//! report says so instead of failing.

use lb_testbed::netns;
use std::process::{Command, Output};

const SECONDS: &str = "3";
const LIBXDP_DIR: &str = "/sys/fs/bpf/xdp";

fn run_cmd(args: &[&str]) -> Option<Output> {
    Command::new(args[0]).args(&args[1..]).output().ok()
}

pub fn run() -> Vec<String> {
    if run_cmd(&["xdp-bench", "--help"]).is_none() {
        return vec!["xdp-bench is not installed (xdp-tools)".to_string()];
    }
    // libxdp makes its lock directory in bpffs; leave none behind.
    let libxdp_dir = std::path::Path::new(LIBXDP_DIR);
    let had_libxdp_dir = libxdp_dir.exists();
    let ns = format!("lbxb{}", std::process::id());
    let mut out = Vec::new();
    if netns::create_with_veth(&ns, "xb0", "xb1").is_ok() {
        for mode in ["drop", "tx"] {
            // nsenter, not ip netns exec: libxdp needs the host's bpffs.
            let net = netns::nsenter_net(&ns);
            let text = run_cmd(&[
                "nsenter",
                &net,
                "timeout",
                SECONDS,
                "xdp-bench",
                mode,
                "xb0",
            ])
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default();
            let reason = failure_reason(&text);
            let summary = text
                .lines()
                .rfind(|l| l.contains("rx/s") || l.contains("pkt/s"));
            out.push(match summary {
                Some(line) => format!(
                    "xdp-bench {mode} ran (idle veth, no traffic generator): {}",
                    line.trim()
                ),
                None => format!("xdp-bench {mode} could not run here: {reason}"),
            });
        }
    } else {
        out.push("xdp-bench not run: no namespace with a veth pair could be made".to_string());
    }
    netns::destroy_namespace(&ns);
    if !had_libxdp_dir {
        // Only when empty: then it is the one xdp-bench just made.
        let _ = std::fs::remove_dir(libxdp_dir);
    }
    out
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
    use super::failure_reason;

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
}
