//! Helpers for checking connector options (every problem is collected, not just the first).

use rill_engine::config::{ConfigError, Spanned};

/// `Some` value, or `None` with its error added to `errors` (building collects every error).
pub(crate) fn keep<T>(r: Result<T, ConfigError>, errors: &mut Vec<ConfigError>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

/// Which of `choices` the option `name` names (the first when it is not set); an unknown one is
/// an error naming the choices, and counts as the first.
pub(crate) fn choice(value: &Option<Spanned<String>>, name: &str, choices: &[&str], errors: &mut Vec<ConfigError>) -> usize {
    let Some(v) = value else { return 0 };
    match choices.iter().position(|c| *c == v.value) {
        Some(i) => i,
        None => {
            errors.push(ConfigError::new(Some(&v.span), format!("unknown `{name}`: `{}`", v.value)).hint(format!("`{name}` is {}", choices.join(" or "))));
            0
        }
    }
}
