//! Kubernetes label selectors in their string form, as `kubectl get -l` takes them: requirements
//! joined by commas, each `key`, `!key`, `key=value`, `key==value`, `key!=value`,
//! `key in (a,b)` or `key notin (a,b)`. The grammar and meaning are apimachinery's
//! (`pkg/labels/selector.go`, <https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors>):
//! every requirement must hold; `!=` and `notin` also match objects without the label.

use crate::{Error, Result};

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key`: the label is set.
    Exists(String),
    /// `!key`: the label is not set.
    NotExists(String),
    /// `key in (values)`, `key=value`, `key==value`: set to one of the values.
    In(String, Vec<String>),
    /// `key notin (values)`, `key!=value`: not set, or set to none of the values.
    NotIn(String, Vec<String>),
}

/// Parses a selector; an empty (or all blank) string selects everything (no requirement).
///
/// # Errors
/// [`Error::Query`] naming the requirement that is not in the grammar above, or a key that is
/// not a label key (`[prefix/]name`, at most 63 characters of `[A-Za-z0-9._-]` in the name).
pub fn parse(selector: &str) -> Result<Vec<Requirement>> {
    split(selector)?.into_iter().map(requirement).collect()
}

/// The requirements of `selector`, split at the commas outside parentheses.
fn split(selector: &str) -> Result<Vec<&str>> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (at, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or_else(|| bad(selector, "an unmatched `)`"))?,
            ',' if depth == 0 => {
                parts.push(&selector[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(bad(selector, "an unclosed `(`"));
    }
    parts.push(&selector[start..]);
    if parts.len() == 1 && parts[0].trim().is_empty() {
        return Ok(Vec::new());
    }
    Ok(parts)
}

fn requirement(text: &str) -> Result<Requirement> {
    let text = text.trim();
    if let Some(key) = text.strip_prefix('!') {
        return Ok(Requirement::NotExists(key_of(key.trim(), text)?));
    }
    for (operator, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = text.split_once(operator) {
            let values = vec![value_of(value.trim(), text)?];
            let key = key_of(key.trim(), text)?;
            return Ok(if negated { Requirement::NotIn(key, values) } else { Requirement::In(key, values) });
        }
    }
    for (operator, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((key, rest)) = text.split_once(operator) {
            let list = rest
                .trim()
                .strip_prefix('(')
                .and_then(|rest| rest.strip_suffix(')'))
                .ok_or_else(|| bad(text, "a set in parentheses after `in` or `notin`"))?;
            let values = list.split(',').map(|value| value_of(value.trim(), text)).collect::<Result<Vec<_>>>()?;
            let key = key_of(key.trim(), text)?;
            return Ok(if negated { Requirement::NotIn(key, values) } else { Requirement::In(key, values) });
        }
    }
    Ok(Requirement::Exists(key_of(text, text)?))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name.
fn key_of(key: &str, requirement: &str) -> Result<String> {
    let name = key.rsplit_once('/').map_or(key, |(prefix, name)| if prefix.is_empty() { "" } else { name });
    if name.is_empty() || !value_like(name) {
        return Err(bad(requirement, "a label key (`[prefix/]name`)"));
    }
    Ok(key.to_owned())
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9._-]`.
fn value_of(value: &str, requirement: &str) -> Result<String> {
    if !value.is_empty() && !value_like(value) {
        return Err(bad(requirement, "a label value (at most 63 of A-Z a-z 0-9 . _ -)"));
    }
    Ok(value.to_owned())
}

fn value_like(text: &str) -> bool {
    text.len() <= 63 && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn bad(requirement: &str, expected: &str) -> Error {
    Error::Query(format!("label selector `{requirement}`: expected {expected}"))
}

#[cfg(test)]
mod tests {
    use super::{Requirement::*, *};

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn every_operator_of_the_kubernetes_syntax() {
        let parsed = parse("app=web, tier==front,env!=prod,zone in (a, b),team notin (x),canary,!legacy").unwrap();
        assert_eq!(
            parsed,
            vec![
                In("app".into(), strings(&["web"])),
                In("tier".into(), strings(&["front"])),
                NotIn("env".into(), strings(&["prod"])),
                In("zone".into(), strings(&["a", "b"])),
                NotIn("team".into(), strings(&["x"])),
                Exists("canary".into()),
                NotExists("legacy".into()),
            ]
        );
        assert_eq!(
            parse("app.kubernetes.io/name=x").unwrap(),
            vec![In("app.kubernetes.io/name".into(), strings(&["x"]))]
        );
        assert_eq!(parse("a=").unwrap(), vec![In("a".into(), strings(&[""]))], "an empty value is a value");
        assert!(parse("  ").unwrap().is_empty());
    }

    #[test]
    fn what_is_not_a_selector_is_refused_with_the_requirement() {
        for selector in ["a in (x", "a in x", "=x", "a b", "a=x y", "a,,b", "a)"] {
            let err = parse(selector).unwrap_err().to_string();
            assert!(err.starts_with("query: label selector"), "{selector}: {err}");
        }
    }
}
