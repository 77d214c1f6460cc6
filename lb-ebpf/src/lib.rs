#![no_std]
//! Nothing here: the programs are the binaries `lb` and `lb-baselines`.
//! This library target exists so lb-userspace can name lb-ebpf as a
//! build-dependency (aya-template does the same).
