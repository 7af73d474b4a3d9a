//! The explorer's queries (`scheduler explore`): pages of `fleet_objects` or
//! `fleet_unhealthy_objects` under a [`Filter`], in a keyset order ([`Sort`]) with an exact total,
//! the facets of the same filter, one object with its history ([`detail`]), and how complete the
//! fleet's copy is ([`status`]).
//!
//! Every function runs on the caller's connection, inside the request's read-only transaction
//! whose role row-level security filters, so each row, count and facet is what that role may
//! see. Values are bound parameters; the only names that reach SQL text are the fixed columns and
//! a cluster field's column, checked against the relation's columns and quoted by [`Ident`].

pub mod detail;
pub mod list;
pub mod status;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::{
    fleet_view::{LABELS_COLUMN, UNHEALTHY_TABLE, VIEW},
    sql::Ident,
};
use crate::{
    Error, Result,
    model::selector::{self, Requirement},
};

/// The most rows one page holds.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Which relation a query reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `fleet_unhealthy_objects`: the objects not Current (problems first), a small table.
    #[default]
    Unhealthy,
    /// `fleet_objects`: every object with a health.
    All,
}

impl Source {
    fn relation(self) -> Ident {
        Ident::derived(&[match self {
            Self::Unhealthy => UNHEALTHY_TABLE,
            Self::All => VIEW,
        }])
    }
}

/// The keyset orders: the first column named, then the others of cluster, namespace, name, and
/// the uid last, so every row has one place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    #[default]
    Cluster,
    Namespace,
    Kind,
    Name,
}

impl Sort {
    /// The key's columns, in order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Cluster => &["cluster_name", "namespace", "name", "uid"],
            Self::Namespace => &["namespace", "cluster_name", "name", "uid"],
            Self::Kind => &["kind", "cluster_name", "namespace", "name", "uid"],
            Self::Name => &["name", "cluster_name", "namespace", "uid"],
        }
    }
}

/// What rows a query selects; every part must hold, and a list matches any of its values (an
/// empty list matches all).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub clusters: Vec<String>,
    /// Cluster (and namespace) fields and their wanted value: `region` = `eu-west`.
    pub fields: Vec<(String, String)>,
    pub namespaces: Vec<String>,
    pub api_groups: Vec<String>,
    pub kinds: Vec<String>,
    pub health: Vec<String>,
    /// The objects whose name starts with this.
    pub name_prefix: Option<String>,
    /// A label selector, parsed ([`selector::parse`]).
    pub selector: Vec<Requirement>,
}

impl Filter {
    /// Parses a label selector into [`Self::selector`].
    ///
    /// # Errors
    /// [`Error::Query`] as [`selector::parse`] says.
    pub fn with_selector(mut self, text: &str) -> Result<Self> {
        self.selector = selector::parse(text)?;
        Ok(self)
    }
}

/// A position in a keyset order: the key of the row a page ends (or starts) at, and which way the
/// next page goes. Shown to clients as an opaque string ([`Self::encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `true`: the rows after `key`; `false`: the rows before it (a previous page).
    pub forward: bool,
    pub key: Vec<String>,
}

impl Cursor {
    /// The cursor as URL-safe text: base64 of a JSON array, `>` or `<` first.
    pub fn encode(&self) -> String {
        let mut parts = vec![if self.forward { ">" } else { "<" }.to_owned()];
        parts.extend(self.key.iter().cloned());
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&parts).unwrap_or_default())
    }

    /// Reads a cursor [`Self::encode`] wrote for `sort`.
    ///
    /// # Errors
    /// [`Error::Query`] when the text is not such a cursor, or is one of another sort.
    pub fn decode(text: &str, sort: Sort) -> Result<Self> {
        let bad = || Error::Query(format!("cursor `{text}` is not one this service wrote for sort {sort:?}"));
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let mut parts: Vec<String> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if parts.len() != sort.columns().len() + 1 {
            return Err(bad());
        }
        let forward = match parts.remove(0).as_str() {
            ">" => true,
            "<" => false,
            _ => return Err(bad()),
        };
        Ok(Self { forward, key: parts })
    }
}

/// The columns of `source` (as the role sees them), for checking field filters.
async fn columns_of(conn: &mut PgConnection, source: Source) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
         ORDER BY attnum",
    )
    .bind(format!("public.{}", source.relation()))
    .fetch_all(conn)
    .await?)
}

/// The columns of `source` that are not the fixed ones: the registry's cluster and namespace
/// fields, in column order.
pub async fn field_columns(conn: &mut PgConnection, source: Source) -> Result<Vec<String>> {
    const FIXED: [&str; 12] = [
        "table_name",
        "cluster_name",
        "namespace",
        "api_group",
        "kind",
        "name",
        "uid",
        "health",
        "message",
        "since",
        LABELS_COLUMN,
        "row_hash",
    ];
    Ok(columns_of(conn, source).await?.into_iter().filter(|c| !FIXED.contains(&c.as_str())).collect())
}

/// Appends ` WHERE ...` (always: `true` first) for `filter` to `query`; `fields` are the
/// relation's field columns ([`field_columns`]).
///
/// # Errors
/// [`Error::Query`] for a field the relation has no column for.
fn push_filter(query: &mut QueryBuilder<'_, Postgres>, filter: &Filter, fields: &[String]) -> Result<()> {
    query.push(" WHERE true");
    for (column, values) in [
        ("cluster_name", &filter.clusters),
        ("namespace", &filter.namespaces),
        ("api_group", &filter.api_groups),
        ("kind", &filter.kinds),
        ("health", &filter.health),
    ] {
        if !values.is_empty() {
            query.push(format!(" AND {} = ANY(", Ident::derived(&[column]))).push_bind(values.clone()).push(")");
        }
    }
    for (field, value) in &filter.fields {
        if !fields.contains(field) {
            return Err(Error::Query(format!("`{field}` is not a cluster or namespace field (fields: {fields:?})")));
        }
        query.push(format!(" AND {} = ", Ident::new(field)?)).push_bind(value.clone());
    }
    if let Some(prefix) = &filter.name_prefix {
        query.push(" AND starts_with(name, ").push_bind(prefix.clone()).push(")");
    }
    let labels = format!("coalesce({}, '{{}}')", Ident::derived(&[LABELS_COLUMN]));
    for requirement in &filter.selector {
        match requirement {
            Requirement::Exists(key) => query.push(format!(" AND {labels} ? ")).push_bind(key.clone()),
            Requirement::NotExists(key) => query.push(format!(" AND NOT {labels} ? ")).push_bind(key.clone()),
            Requirement::In(key, values) => query
                .push(format!(" AND {labels} ->> "))
                .push_bind(key.clone())
                .push(" = ANY(")
                .push_bind(values.clone())
                .push(")"),
            Requirement::NotIn(key, values) => query
                .push(format!(" AND coalesce(NOT {labels} ->> "))
                .push_bind(key.clone())
                .push(" = ANY(")
                .push_bind(values.clone())
                .push("), true)"),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_refuses_another_sort() {
        let cursor = Cursor { forward: false, key: vec!["sim-01".into(), "".into(), "a,b".into(), "u".into()] };
        assert_eq!(Cursor::decode(&cursor.encode(), Sort::Cluster).unwrap(), cursor);
        assert!(Cursor::decode(&cursor.encode(), Sort::Kind).is_err(), "a key of 4 is not one of 5");
        assert!(Cursor::decode("not a cursor", Sort::Cluster).is_err());
    }

    #[test]
    fn filters_are_bound_parameters_and_fields_must_be_columns() {
        let filter = Filter {
            clusters: vec!["a".into()],
            fields: vec![("region".into(), "eu".into())],
            name_prefix: Some("web".into()),
            ..Filter::default()
        }
        .with_selector("app=x,!old")
        .unwrap();
        let mut query = QueryBuilder::new("SELECT 1 FROM t");
        push_filter(&mut query, &filter, &["region".into()]).unwrap();
        assert_eq!(
            query.sql(),
            "SELECT 1 FROM t WHERE true AND \"cluster_name\" = ANY($1) AND \"region\" = $2 AND starts_with(name, $3) \
             AND coalesce(\"labels\", '{}') ->> $4 = ANY($5) AND NOT coalesce(\"labels\", '{}') ? $6"
        );
        let mut query = QueryBuilder::new("SELECT 1 FROM t");
        assert!(push_filter(&mut query, &filter, &[]).is_err(), "no such field");
    }
}
