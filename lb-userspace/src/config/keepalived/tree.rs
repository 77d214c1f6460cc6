//! keepalived.conf as a tree of statements: `keyword args... [{ children }]`,
//! one statement per line (a block may open on the keyword's line and close
//! on its own), `!` and `#` comments to the end of the line, double quotes
//! around words with spaces, `include PATTERN` read in place (relative to
//! the including file, `*` and `?` wildcards, as keepalived's glob).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};

/// Nested includes deeper than this are a loop.
const MAX_INCLUDE_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub keyword: String,
    pub args: Vec<String>,
    /// Some for a block (`keyword args { ... }`).
    pub children: Option<Vec<Node>>,
    /// "file:line", for warnings.
    pub at: String,
}

impl Node {
    /// The block's statements (empty for a plain statement).
    pub fn children(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Open,
    Close,
    EndOfLine,
}

/// Splits one file into tokens, each with its line number.
fn tokens(text: &str) -> Vec<(Token, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let mut chars = line.chars().peekable();
        while let Some(&c) = chars.peek() {
            match c {
                '!' | '#' => break,
                '{' => {
                    chars.next();
                    out.push((Token::Open, line_no));
                }
                '}' => {
                    chars.next();
                    out.push((Token::Close, line_no));
                }
                '"' => {
                    chars.next();
                    let word: String = chars.by_ref().take_while(|&c| c != '"').collect();
                    out.push((Token::Word(word), line_no));
                }
                c if c.is_whitespace() => {
                    chars.next();
                }
                _ => {
                    let mut word = String::new();
                    while let Some(&c) = chars.peek() {
                        if c.is_whitespace() || matches!(c, '{' | '}' | '!' | '#' | '"') {
                            break;
                        }
                        word.push(c);
                        chars.next();
                    }
                    out.push((Token::Word(word), line_no));
                }
            }
        }
        out.push((Token::EndOfLine, line_no));
    }
    out
}

/// Does `name` match a glob `pattern` of `*` and `?`?
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// The files an include pattern names, sorted (as glob(3) returns them).
fn expand_include(pattern: &str, base: &Path) -> Result<Vec<PathBuf>> {
    let path = base.join(pattern);
    let file_pattern = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !file_pattern.contains(['*', '?']) {
        // Only regular files: `include /dev/zero` must not read forever.
        if !path.is_file() {
            bail!(
                "include {pattern}: {} is not a regular file",
                path.display()
            );
        }
        return Ok(vec![path]);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("include {pattern}: reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| glob_match(file_pattern.as_bytes(), e.file_name().as_encoded_bytes()))
        .filter(|e| e.path().is_file())
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// Reads a keepalived.conf (and its includes) into statements.
pub fn read(path: &Path) -> Result<Vec<Node>> {
    read_nested(path, 0)
}

fn read_nested(path: &Path, depth: usize) -> Result<Vec<Node>> {
    if depth > MAX_INCLUDE_DEPTH {
        bail!(
            "{}: includes nested deeper than {MAX_INCLUDE_DEPTH} (a loop?)",
            path.display()
        );
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_nested(&text, path, base, depth)
}

/// Statements of `text` (named `origin` in messages); includes are read
/// relative to `base`.
pub fn parse(text: &str, origin: &Path, base: &Path) -> Result<Vec<Node>> {
    parse_nested(text, origin, base, 0)
}

fn parse_nested(text: &str, origin: &Path, base: &Path, depth: usize) -> Result<Vec<Node>> {
    let toks = tokens(text);
    let mut pos = 0;
    parse_block(&toks, &mut pos, origin, base, depth, None)
}

/// Parses statements until the end of input or the `}` closing a block
/// opened on line `opened_at`.
fn parse_block(
    toks: &[(Token, usize)],
    pos: &mut usize,
    file: &Path,
    base: &Path,
    depth: usize,
    opened_at: Option<usize>,
) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    let at = |line: usize| format!("{}:{line}", file.display());
    loop {
        let Some((tok, line)) = toks.get(*pos) else {
            return match opened_at {
                None => Ok(nodes),
                Some(l) => Err(anyhow!("{}: this block is never closed with `}}`", at(l))),
            };
        };
        *pos += 1;
        match tok {
            Token::EndOfLine => {}
            Token::Close => {
                return match opened_at {
                    Some(_) => Ok(nodes),
                    None => Err(anyhow!("{}: `}}` closes no block", at(*line))),
                };
            }
            Token::Open => bail!("{}: `{{` without a keyword before it", at(*line)),
            Token::Word(keyword) => {
                let mut args = Vec::new();
                let mut children = None;
                while let Some((tok, _)) = toks.get(*pos) {
                    match tok {
                        Token::Word(w) => {
                            args.push(w.clone());
                            *pos += 1;
                        }
                        Token::Open => {
                            *pos += 1;
                            children =
                                Some(parse_block(toks, pos, file, base, depth, Some(*line))?);
                            break;
                        }
                        // `}` ends the statement and is read by the caller.
                        Token::Close | Token::EndOfLine => break,
                    }
                }
                if keyword == "include" && children.is_none() {
                    for pattern in &args {
                        for included in expand_include(pattern, base)? {
                            nodes.extend(read_nested(&included, depth + 1)?);
                        }
                    }
                    continue;
                }
                nodes.push(Node {
                    keyword: keyword.clone(),
                    args,
                    children,
                    at: at(*line),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<Node>> {
        let dir =
            std::env::temp_dir().join(format!("lb-tree-{}-{}", std::process::id(), text.len()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keepalived.conf");
        fs::write(&path, text).unwrap();
        let nodes = read(&path);
        fs::remove_dir_all(&dir).unwrap();
        nodes
    }

    #[test]
    fn blocks_comments_quotes_and_one_line_blocks() {
        let nodes = parse_text(
            "! comment\nglobal_defs {\n  router_id LVS # trailing\n  notification_email {\n a@b\n }\n}\n\
             vrrp_instance VI_1 { state MASTER }\nx \"a b\" c\n",
        )
        .unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].keyword, "global_defs");
        assert_eq!(nodes[0].children()[0].args, vec!["LVS"]);
        assert_eq!(nodes[0].children()[1].children()[0].keyword, "a@b");
        assert_eq!(nodes[1].args, vec!["VI_1"]);
        assert_eq!(nodes[1].children()[0].args, vec!["MASTER"]);
        assert_eq!(nodes[2].args, vec!["a b", "c"]);
        assert!(nodes[2].at.ends_with(":9"), "{}", nodes[2].at);
    }

    #[test]
    fn unbalanced_braces_are_errors_with_their_line() {
        let e = parse_text("a {\n b 1\n").unwrap_err().to_string();
        assert!(e.contains(":1: this block is never closed"), "{e}");
        let e = parse_text("a 1\n}\n").unwrap_err().to_string();
        assert!(e.contains(":2: `}` closes no block"), "{e}");
    }

    #[test]
    fn globs_match_like_glob3() {
        assert!(glob_match(b"*.conf", b"a.conf"));
        assert!(glob_match(b"vs?.conf", b"vs1.conf"));
        assert!(!glob_match(b"*.conf", b"a.conf.bak"));
    }
}
