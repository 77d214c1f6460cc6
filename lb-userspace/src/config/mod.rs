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

/// Reads, parses and validates an lb.toml file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
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
