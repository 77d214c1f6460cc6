//! The data plane's clock: CLOCK_MONOTONIC at tick resolution. Flows,
//! templates and locality entries expire after seconds, so a few
//! milliseconds of lag cost nothing, while the precise clock
//! (bpf_ktime_get_ns) costs a clocksource read on every packet (tens of
//! nanoseconds on a VM's kvm-clock). The agent compares with the precise
//! CLOCK_MONOTONIC: a timestamp lags it by at most one tick.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}
