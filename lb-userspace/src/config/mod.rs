//! lb.toml: schema, parsing and validation. Errors name the file, line and
//! column and what was expected; a file with any error is refused whole.

pub mod keepalived;
mod schema;
mod validate;
mod values;

pub use schema::*;
pub use values::*;

use std::{fmt, ops::Range, path::Path};

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    /// 1-based; 0 when the error has no location (e.g. unreadable file).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.origin, self.line, self.column, self.message
            )
        }
    }
}

/// All problems found in one file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Maps byte offsets of a source text to 1-based line:column.
pub(crate) struct Locator<'a> {
    origin: &'a str,
    text: &'a str,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(origin: &'a str, text: &'a str) -> Self {
        Self { origin, text }
    }

    pub(crate) fn error(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let before = &self.text[..span.start.min(self.text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                (line, column)
            }
            None => (0, 0),
        };
        ConfigError {
            origin: self.origin.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Parses and validates lb.toml text. `origin` names it in errors.
pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigErrors> {
    let locator = Locator::new(origin, text);
    let config: Config = toml::from_str(text).map_err(|e| {
        // toml's message may span several lines with a source excerpt; the
        // first line of `message()` is the reason, the span gives the place.
        ConfigErrors(vec![
            locator.error(e.span(), e.message().trim().to_string()),
        ])
    })?;
    let errors = validate::validate(&config, &locator);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Permission bits that let others change a file (or replace it in its
/// directory).
const GROUP_WRITE: u32 = 0o020;
const OTHER_WRITE: u32 = 0o002;
const STICKY: u32 = 0o1000;

/// As sshd's StrictModes: a config that others may write is refused, since
/// whoever can change it steers the traffic. Refused: a world-writable
/// file, a group-writable one whose group is not root, and a file in a
/// world-writable directory without the sticky bit.
pub fn check_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the config file: {e}"))?;
    let mode = meta.mode();
    if mode & OTHER_WRITE != 0 || (mode & GROUP_WRITE != 0 && meta.gid() != 0) {
        return Err(format!(
            "refused: writable by others (mode {:03o}); run chmod go-w on it",
            mode & 0o777
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::metadata(dir)
        && d.mode() & OTHER_WRITE != 0
        && d.mode() & STICKY == 0
    {
        return Err(format!(
            "refused: its directory {} is writable by everyone (anyone could replace the file)",
            dir.display()
        ));
    }
    Ok(())
}

/// Reads, parses and validates an lb.toml file (refused when others may
/// write it: check_permissions).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    check_permissions(path).map_err(|message| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            line: 0,
            column: 0,
            message,
        }])
    })?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    parse(&origin, &text)
}

/// Parts of a valid config that this version of the agent reads but does
/// not act on yet, one line each, for the startup log and `check`.
/// (Everything is acted on now; the hook stays for keys that are parsed
/// before they are implemented.)
pub fn not_acted_on(_config: &Config) -> Vec<String> {
    Vec::new()
}

#[cfg(test)]
mod tests;
