//! SQL text in one place: identifiers and literals.
//!
//! Every table, column, index and schema name that goes into a statement is an [`Ident`]: checked
//! when it is built (PostgreSQL keeps at most 63 bytes of a name, `NAMEDATALEN - 1`, and
//! silently truncates longer ones: <https://www.postgresql.org/docs/15/sql-syntax-lexical.html#SQL-SYNTAX-IDENTIFIERS>)
//! and always written double-quoted, so reserved words (`group`, `default`) and any character
//! are safe. Values go in as bind parameters; [`literal`] is only for the few places where
//! PostgreSQL takes no parameter (DDL).

use std::fmt;

use crate::{Error, Result};

/// The longest identifier PostgreSQL keeps, in bytes.
pub const MAX_IDENT_BYTES: usize = 63;

/// Hex digits of the hash that ends a shortened derived name.
const HASH_SUFFIX_DIGITS: usize = 12;

/// A PostgreSQL identifier, at most [`MAX_IDENT_BYTES`] bytes, without NUL; displayed quoted
/// (`"kubernetes_pods"`, with any `"` doubled).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// A name given as is (a catalog table or column, a registry field).
    ///
    /// # Errors
    /// [`Error::Schema`] when the name is empty, holds a NUL, or is longer than 63 bytes.
    pub fn new(name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('\0') || name.len() > MAX_IDENT_BYTES {
            return Err(Error::Schema(format!(
                "`{name}` cannot be a PostgreSQL identifier (1 to {MAX_IDENT_BYTES} bytes, no NUL)"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    /// A name made of `parts` joined with `_` (an index or partition named after its table).
    /// A name longer than 63 bytes keeps its start and ends in `_` and 12 hex digits of a hash
    /// of the whole name, so two long names that share a prefix stay distinct.
    pub fn derived(parts: &[&str]) -> Self {
        let name = parts.join("_");
        if name.len() <= MAX_IDENT_BYTES && !name.is_empty() && !name.contains('\0') {
            return Self(name);
        }
        let hash = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(name.as_bytes()));
        let mut keep = MAX_IDENT_BYTES - 1 - HASH_SUFFIX_DIGITS;
        while !name.is_char_boundary(keep) {
            keep -= 1;
        }
        let start = name[..keep].replace('\0', "");
        Self(format!("{start}_{}", &hash[..HASH_SUFFIX_DIGITS]))
    }

    /// The name, unquoted.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.replace('"', "\"\""))
    }
}

/// A schema-qualified name, displayed as `"schema"."name"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qualified {
    pub schema: Ident,
    pub name: Ident,
}

impl fmt::Display for Qualified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Identifiers as a comma-separated list: `"a", "b"`.
pub fn list<'a>(idents: impl IntoIterator<Item = &'a Ident>) -> String {
    idents.into_iter().map(Ident::to_string).collect::<Vec<_>>().join(", ")
}

/// A SQL string literal (`'it''s'`), for DDL, where PostgreSQL takes no bind parameter.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A piece of a statement: SQL text, or where the `n`-th value goes (a bind parameter or a
/// [`literal`], as the caller writes statements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Value(usize),
}

/// `(columns) > (values)` (`<` when `forward` is false), as PostgreSQL's row comparison means it,
/// spelled with each column's own operators:
/// `a >= $0 AND (a > $0 OR (a = $0 AND (b > $1 OR (b = $1 AND c > $2))))`.
///
/// A row comparison runs `record_gt`, which is not leakproof: under row-level security
/// PostgreSQL evaluates it only after the policy, never in an index scan, so a viewer's keyset
/// page would read every row before the cursor. Text comparison is leakproof (`pg_proc.proleakproof`
/// of `text_gt`, `text_ge`, `texteq`), so this form's first condition starts the index scan at
/// the cursor (<https://www.postgresql.org/docs/15/ddl-rowsecurity.html>, and "Row Constructor
/// Comparison" in <https://www.postgresql.org/docs/15/functions-comparisons.html>).
pub fn keyset(columns: &[String], forward: bool) -> Vec<Piece> {
    let (strict, loose) = if forward { (">", ">=") } else { ("<", "<=") };
    let text = |s: String| Piece::Text(s);
    let Some((first, _)) = columns.split_first() else { return vec![text("true".to_owned())] };
    let mut pieces = vec![text(format!("{first} {loose} ")), Piece::Value(0), text(" AND (".to_owned())];
    let last = columns.len() - 1;
    for (n, column) in columns.iter().enumerate() {
        pieces.extend([text(format!("{column} {strict} ")), Piece::Value(n)]);
        if n < last {
            pieces.extend([text(format!(" OR ({column} = ")), Piece::Value(n), text(" AND (".to_owned())]);
        }
    }
    pieces.push(text(")".repeat(2 * last + 1)));
    pieces
}

/// [`keyset`] as SQL text, the `n`-th value written as `value(n)` (a [`literal`], or a
/// parameter such as `$1`).
pub fn keyset_sql(columns: &[String], forward: bool, value: impl Fn(usize) -> String) -> String {
    keyset(columns, forward)
        .into_iter()
        .map(|piece| match piece {
            Piece::Text(text) => text,
            Piece::Value(n) => value(n),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyset_condition_spells_the_row_comparison_out() {
        let columns = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let values = ["x".to_owned(), "y".to_owned(), "z".to_owned()];
        let literal_value = |n: usize| literal(&values[n]);
        assert_eq!(
            keyset_sql(&columns, true, literal_value),
            "a >= 'x' AND (a > 'x' OR (a = 'x' AND (b > 'y' OR (b = 'y' AND (c > 'z')))))"
        );
        assert_eq!(keyset_sql(&columns[..1], false, literal_value), "a <= 'x' AND (a < 'x')");
    }

    #[test]
    fn names_are_quoted_with_quotes_doubled() {
        assert_eq!(Ident::new("group").unwrap().to_string(), "\"group\"");
        assert_eq!(Ident::new("a\"b").unwrap().to_string(), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn a_name_postgresql_would_truncate_is_refused() {
        assert!(Ident::new(&"x".repeat(63)).is_ok());
        assert!(Ident::new(&"x".repeat(64)).is_err());
        assert!(Ident::new("").is_err());
    }

    #[test]
    fn long_derived_names_keep_a_hash_and_stay_distinct() {
        let table = "kubernetes_cluster_role_binding_subjects";
        let a = Ident::derived(&[table, "field", "business_unit_primary"]);
        let b = Ident::derived(&[table, "field", "business_unit_secondary"]);
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), MAX_IDENT_BYTES);
        assert!(a.as_str().starts_with("kubernetes_cluster_role_binding_subjects_field_"));
        assert_eq!(Ident::derived(&["t", "p00"]).as_str(), "t_p00", "short names are kept as they are");
    }
}
