//! Compiles lb-ebpf for bpfel-unknown-none (nightly, build-std=core, BTF) and
//! places its binaries (`lb`, `lb-baselines`) in OUT_DIR for include_bytes.
use anyhow::{Context as _, anyhow};

/// The eBPF binaries include_bytes takes.
const OBJECTS: [&str; 3] = ["lb", "lb-baselines", "lb-rs-decap"];

fn main() -> anyhow::Result<()> {
    // Fuzzing builds only the parsers, with sanitizer flags that must not
    // reach the BPF build: LB_SKIP_EBPF leaves empty objects (loading one
    // says what happened).
    println!("cargo:rerun-if-env-changed=LB_SKIP_EBPF");
    if std::env::var_os("LB_SKIP_EBPF").is_some() {
        let out = std::env::var("OUT_DIR").context("OUT_DIR")?;
        for name in OBJECTS {
            std::fs::write(std::path::Path::new(&out).join(name), [])?;
        }
        return Ok(());
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("no workspace dir"))?
        .join("lb-ebpf");
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
