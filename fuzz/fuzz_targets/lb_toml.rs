//! lb.toml: parsing and validation, then planning, never panic; errors are
//! values with a location.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match lb_userspace::config::parse("fuzz.toml", text) {
        Ok(config) => {
            let _ = lb_userspace::planning::plan::plan(&config);
        }
        Err(errors) => assert!(!errors.0.is_empty(), "an error without a message"),
    }
});
