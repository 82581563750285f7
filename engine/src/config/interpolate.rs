//! `${VAR}` and `${VAR:-default}` in a pipeline's values: replaced by the environment variable
//! (or the default where it is unset or empty), as Docker Compose and Vector do. `$${` is a
//! literal `${`. Only values are interpolated, never keys. A plain scalar stays plain, so
//! `parallelism: ${P:-2}` is a number.
//!
//! The values put in are remembered ([`Interpolated`]) so that what Rill shows of a pipeline —
//! `validate`, `graph`, configuration errors — shows `${VAR}` where the file has it, never the
//! value (a password in a Kafka property, a token in a URL).

use super::yaml::{Node, NodeKind};
use super::ConfigError;

/// (value put in, what the file says) for each substitution.
#[derive(Clone, Debug, Default)]
pub struct Interpolated(Vec<(String, String)>);

impl Interpolated {
    /// `text` with every interpolated value (of 3 characters or more) written back as the
    /// `${VAR}` it came from.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (value, from) in &self.0 {
            if value.chars().count() >= 3 {
                out = out.replace(value.as_str(), from);
            }
        }
        out
    }

    /// Whether `value` holds something read from the environment (of 3 characters or more),
    /// as opposed to being written in the file.
    pub fn from_environment(&self, value: &str) -> bool {
        self.0.iter().any(|(v, _)| v.chars().count() >= 3 && value.contains(v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Interpolates every value under `node`; a variable that is unset and has no default is an
/// error at its value.
pub(crate) fn interpolate(node: &mut Node, errors: &mut Vec<ConfigError>, done: &mut Interpolated) {
    let span = node.span.clone();
    match &mut node.kind {
        NodeKind::Scalar { text, .. } => {
            if text.contains('$') {
                match expand(text, |v| std::env::var(v).ok()) {
                    Ok((new, used)) => {
                        *text = new;
                        done.0.extend(used);
                        // Longest first, so that a value inside another is not replaced first.
                        done.0.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
                    }
                    Err(e) => errors.push(ConfigError::new(Some(&span), e).hint("set it (`export NAME=...`), or give a default: `${NAME:-default}`")),
                }
            }
        }
        NodeKind::Seq(items) => items.iter_mut().for_each(|n| interpolate(n, errors, done)),
        NodeKind::Map(entries) => entries.iter_mut().for_each(|(_, v)| interpolate(v, errors, done)),
    }
}

/// `text` with its references replaced through `lookup`, and what went in for each.
fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<(String, Vec<(String, String)>), String> {
    let (mut out, mut used, mut rest) = (String::new(), Vec::new(), text);
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(body) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let end = body.find('}').ok_or_else(|| format!("`{tail}`: `${{` without its closing `}}`"))?;
        let inner = &body[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{inner}}}` is not a variable reference (write `${{NAME}}` or `${{NAME:-default}}`)"));
        }
        let value = match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => {
                used.push((v.clone(), format!("${{{name}}}")));
                v
            }
            (None, Some(d)) => d.to_string(),
            (None, None) => return Err(format!("the environment variable `{name}` (`${{{name}}}`) is not set")),
        };
        out.push_str(&value);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok((out, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_defaults_and_escapes() {
        let env = |v: &str| match v {
            "HOST" => Some("db.internal".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let e = |t: &str| expand(t, env).map(|(s, _)| s);
        assert_eq!(e("postgres://${HOST}:5432/x").unwrap(), "postgres://db.internal:5432/x");
        assert_eq!(e("${PORT:-5432}").unwrap(), "5432");
        assert_eq!(e("${EMPTY:-fallback}").unwrap(), "fallback", "empty counts as unset");
        assert_eq!(e("${HOST:-other}").unwrap(), "db.internal");
        assert_eq!(e("cost: $5 and $${HOST}").unwrap(), "cost: $5 and ${HOST}");
        assert!(e("${MISSING}").unwrap_err().contains("`MISSING`"));
        assert!(e("${HOST").unwrap_err().contains("closing"));
        assert!(e("${a b}").unwrap_err().contains("not a variable reference"));
        let (_, used) = expand("${HOST}/${PORT:-1}", env).unwrap();
        assert_eq!(used, vec![("db.internal".to_string(), "${HOST}".to_string())], "defaults are not secrets");
        let i = Interpolated(used);
        assert_eq!(i.scrub("connecting to db.internal"), "connecting to ${HOST}");
    }
}
