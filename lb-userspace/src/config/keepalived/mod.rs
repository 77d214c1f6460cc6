//! `lb-userspace import-keepalived keepalived.conf > lb.toml`: reads
//! keepalived.conf (tree.rs: blocks, comments, quotes, includes) and writes
//! the same configuration as lb.toml (convert.rs), with a warning for every
//! keyword that cannot be carried over.

mod convert;
mod tree;

use std::path::Path;

use anyhow::{Context as _, Result};

/// The lb.toml text and the warnings (file:line: what was not carried over).
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<String>,
}

pub fn import(path: &Path) -> Result<Imported> {
    convert_nodes(&tree::read(path)?, path)
}

/// As `import`, for text already read (includes relative to `include_base`).
pub fn import_text(text: &str, origin: &Path, include_base: &Path) -> Result<Imported> {
    convert_nodes(&tree::parse(text, origin, include_base)?, origin)
}

fn convert_nodes(nodes: &[tree::Node], path: &Path) -> Result<Imported> {
    let mut converter = convert::Converter::default();
    let table = converter.convert(nodes);
    let mut body = toml::to_string(&table).context("writing lb.toml")?;
    if !body.ends_with('\n') {
        body.push('\n');
    }
    Ok(Imported {
        toml: format!(
            "# Imported from {} by lb-userspace import-keepalived.\n# Check it with: lb-userspace check --config FILE\n\n{body}",
            path.display()
        ),
        warnings: converter.warnings,
    })
}

#[cfg(test)]
mod tests;
