//! Namespace fields (`team: payments`): columns right after `namespace` in every namespaced
//! table. Rules map a namespace (by name or glob, fleet-wide or per cluster, or by copying one of
//! the namespace's labels) to a value; [`NamespaceFields`] resolves them for one cluster.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    model::catalog::{Catalog, is_identifier},
};

/// One rule of a namespace field: which namespaces it applies to, and the value it gives them,
/// either a constant (`value`) or one of the namespace's labels (`label`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceRule {
    /// A namespace name, or a glob (`*` any run of characters, `?` one); every namespace when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The field's value for matching namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Copy this label of the namespace; the rule does not match a namespace without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Checks the namespace field rules declared at `place`: names like cluster fields (and not one
/// of theirs), each rule a `value` or a `label`, and globs that are not empty.
pub(crate) fn check_namespace_fields(
    place: &str,
    fields: &BTreeMap<String, Vec<NamespaceRule>>,
    cluster_fields: &[String],
    catalog: &Catalog,
) -> Result<()> {
    let bad = |why: String| Err(Error::Registry(format!("{place}: {why}")));
    for (name, rules) in fields {
        check_field_name(name, catalog).or_else(|why| bad(format!("namespace field `{name}` {why}")))?;
        if cluster_fields.contains(name) {
            return bad(format!("namespace field `{name}` is also a cluster field"));
        }
        for rule in rules {
            if rule.value.is_some() == rule.label.is_some() {
                return bad(format!("namespace field `{name}`: give each rule either `value` or `label`"));
            }
            if rule.namespace.as_deref() == Some("") || rule.label.as_deref() == Some("") {
                return bad(format!("namespace field `{name}`: empty `namespace` or `label`"));
            }
        }
    }
    Ok(())
}

/// Why `name` cannot be an extra column: not an identifier, or the name of a column of one of
/// `catalog`'s tables.
pub(crate) fn check_field_name(name: &str, catalog: &Catalog) -> std::result::Result<(), String> {
    if !is_identifier(name) {
        return Err("must be a lower-case SQL identifier".into());
    }
    if catalog.tables().any(|(_, table)| table.has_column(name)) {
        return Err("has the name of a table column".into());
    }
    Ok(())
}

/// The namespace fields of one cluster: their rules, and the namespaces' labels for the rules
/// that copy a label.
#[derive(Debug, Clone, Default)]
pub struct NamespaceFields {
    names: Vec<String>,
    /// Per field: the cluster's rules, then the fleet's.
    rules: Vec<Vec<NamespaceRule>>,
    /// Labels by namespace name.
    labels: HashMap<String, BTreeMap<String, String>>,
}

impl NamespaceFields {
    /// The fields `names` (in column order), each with its rules (the cluster's, then the fleet's).
    pub(crate) fn new(names: Vec<String>, rules: Vec<Vec<NamespaceRule>>) -> Self {
        Self { names, rules, labels: HashMap::new() }
    }

    /// The field names, in column order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether a rule copies a label, so the namespaces' labels must be listed first.
    pub fn needs_labels(&self) -> bool {
        self.rules.iter().flatten().any(|rule| rule.label.is_some())
    }

    /// Sets the namespaces' labels (by namespace name).
    pub fn set_labels(&mut self, labels: HashMap<String, BTreeMap<String, String>>) {
        self.labels = labels;
    }

    /// Each field's value for `namespace`: the first matching rule's, or `None`.
    pub fn values(&self, namespace: &str) -> impl Iterator<Item = Option<&str>> {
        let labels = self.labels.get(namespace);
        self.rules.iter().map(move |rules| {
            rules.iter().find_map(|rule| {
                if !rule.namespace.as_deref().is_none_or(|pattern| glob_matches(pattern, namespace)) {
                    return None;
                }
                match (&rule.value, &rule.label) {
                    (Some(value), _) => Some(value.as_str()),
                    (None, Some(label)) => labels?.get(label).map(String::as_str),
                    (None, None) => None,
                }
            })
        })
    }
}

/// Whether `text` matches a glob of `*` (any run of characters) and `?` (one character).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches("pay-*", "pay-eu"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "aXXbYbc"));
        assert!(glob_matches("team-?", "team-1"));
        assert!(!glob_matches("team-?", "team-12"));
        assert!(!glob_matches("pay-*", "xpay-eu"));
        assert!(glob_matches("kube-system", "kube-system"));
    }
}
