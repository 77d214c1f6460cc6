use which::which;

/// Building this crate has an undeclared dependency on the `bpf-linker` binary.
/// Rerun when it changes (e.g. reinstalled by `cargo xtask setup`).
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found in PATH: run `cargo xtask setup` (it installs it with cargo install)",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
