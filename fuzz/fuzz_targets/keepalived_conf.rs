//! keepalived.conf import: never panics, and whatever it writes is TOML.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// Includes resolve in an empty directory: the fuzzer's patterns read
/// nothing of the machine's.
fn empty_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lb-fuzz-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the include directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(imported) =
        lb_userspace::config::keepalived::import_text(text, Path::new("fuzz.conf"), empty_dir())
    {
        toml::from_str::<toml::Table>(&imported.toml).expect("the importer wrote invalid TOML");
    }
});
