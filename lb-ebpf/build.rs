use which::which;

/// Building this crate has an undeclared dependency on the `bpf-linker` binary.
/// Rerun when it changes (e.g. reinstalled by `cargo xtask setup`).
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found in PATH: run `cargo xtask setup` (it installs it with cargo install)",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
    // bpf-linker asks LLVM to keep memcpy for the kernel's in-order pattern
    // matching (--bpf-expand-memcpy-in-order), which also stops LLVM from
    // expanding memset and memmove: every struct initialisation with padding
    // and every MAC copy became a call of compiler-builtins' byte loops (BPF
    // subprograms) on the per-packet path. clang's default is to expand them
    // into loads and stores; so is ours.
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
}
