//! What every XDP object of this crate needs once: a panic handler (the
//! verifier guarantees it is never reached) and the license section.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The license section, in the binary that invokes it (a static of the
/// library would be dropped by the linker as unreferenced).
#[macro_export]
macro_rules! license {
    () => {
        #[unsafe(link_section = "license")]
        #[unsafe(no_mangle)]
        static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
    };
}
