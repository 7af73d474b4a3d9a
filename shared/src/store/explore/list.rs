//! Pages of objects in a keyset order, their exact total, and the facets of a filter.
//!
//! A page is `WHERE <filter> AND (key) > (cursor) ORDER BY key LIMIT n + 1` (one more row says
//! whether a next page exists), a previous page the same with `<` and the order reversed; the
//! comparison is spelled out column by column ([`keyset`]), so that under row-level security an
//! index scan still starts at the cursor. Because the filter and row-level security are in the
//! same statement, pages never overlap or skip, whatever the role may see.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row, postgres::PgRow};

use super::{Cursor, Filter, MAX_PAGE_SIZE, Sort, Source, field_columns, push_filter};
use crate::{
    Error, Result,
    store::sql::{Ident, Piece, keyset},
};

/// One object as a page lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Object {
    pub cluster_name: String,
    pub namespace: String,
    pub api_group: String,
    pub kind: String,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub health: String,
    pub message: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// The labels, a JSON object (or null).
    pub labels: Option<serde_json::Value>,
    /// The cluster's (and namespace's) fields, by name.
    pub fields: BTreeMap<String, Option<String>>,
}

impl Object {
    /// The object's key in `sort`'s order, for a cursor.
    fn key(&self, sort: Sort) -> Vec<String> {
        sort.columns()
            .iter()
            .map(|column| match *column {
                "cluster_name" => self.cluster_name.clone(),
                "namespace" => self.namespace.clone(),
                "kind" => self.kind.clone(),
                "name" => self.name.clone().unwrap_or_default(),
                _ => self.uid.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// Reads a row selected with [`select_list`]'s columns.
    pub(super) fn from_row(row: &PgRow, fields: &[String]) -> Result<Self> {
        let mut values = BTreeMap::new();
        for field in fields {
            values.insert(field.clone(), row.try_get::<Option<String>, _>(field.as_str())?);
        }
        Ok(Self {
            cluster_name: row.try_get("cluster_name")?,
            namespace: row.try_get("namespace")?,
            api_group: row.try_get("api_group")?,
            kind: row.try_get("kind")?,
            name: row.try_get("name")?,
            uid: row.try_get("uid")?,
            health: row.try_get("health")?,
            message: row.try_get("message")?,
            since: row.try_get("since")?,
            labels: row.try_get("labels")?,
            fields: values,
        })
    }
}

/// The column list every object query selects: the fixed columns, then `fields`.
pub(super) fn select_list(fields: &[String]) -> Result<String> {
    let mut columns: Vec<String> =
        ["cluster_name", "namespace", "api_group", "kind", "name", "uid", "health", "message", "since", "labels"]
            .iter()
            .map(|c| Ident::derived(&[c]).to_string())
            .collect();
    for field in fields {
        columns.push(Ident::new(field)?.to_string());
    }
    Ok(columns.join(", "))
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub source: Source,
    pub filter: Filter,
    pub sort: Sort,
    /// Where the page starts (after) or ends (before); the first page when `None`.
    pub cursor: Option<Cursor>,
    /// Rows per page, 1 to [`MAX_PAGE_SIZE`].
    pub limit: u32,
}

/// One page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page {
    pub objects: Vec<Object>,
    /// Every row the filter selects (the role may see), on all pages.
    pub total: i64,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
    /// The cursor of the previous page, when this is not the first.
    pub prev: Option<String>,
}

/// The page `request` asks for, with its total, in one statement each on `conn`.
///
/// # Errors
/// [`Error::Query`] for a page size out of range or a field that is not a column;
/// [`Error::Sql`] from PostgreSQL.
pub async fn page(conn: &mut PgConnection, request: &PageRequest) -> Result<Page> {
    if request.limit == 0 || request.limit > MAX_PAGE_SIZE {
        return Err(Error::Query(format!("limit {} is not between 1 and {MAX_PAGE_SIZE}", request.limit)));
    }
    let fields = field_columns(conn, request.source).await?;
    let relation = request.source.relation();
    let mut query = QueryBuilder::<Postgres>::new(format!("SELECT {} FROM {relation}", select_list(&fields)?));
    push_filter(&mut query, &request.filter, &fields)?;
    let key: Vec<String> = request.sort.columns().iter().map(|c| Ident::derived(&[c]).to_string()).collect();
    let forward = request.cursor.as_ref().is_none_or(|c| c.forward);
    if let Some(cursor) = &request.cursor {
        if cursor.key.len() != key.len() {
            return Err(Error::Query(format!("the cursor has {} values, the sort {}", cursor.key.len(), key.len())));
        }
        query.push(" AND ");
        for piece in keyset(&key, forward) {
            match piece {
                Piece::Text(text) => query.push(text),
                Piece::Value(n) => query.push_bind(cursor.key[n].clone()),
            };
        }
    }
    let direction = if forward { "" } else { " DESC" };
    query.push(format!(" ORDER BY {}", key.iter().map(|c| format!("{c}{direction}")).collect::<Vec<_>>().join(", ")));
    query.push(" LIMIT ").push_bind(i64::from(request.limit) + 1);
    let rows = query.build().fetch_all(&mut *conn).await?;
    let mut objects = rows.iter().map(|row| Object::from_row(row, &fields)).collect::<Result<Vec<_>>>()?;
    let more = objects.len() > request.limit as usize;
    objects.truncate(request.limit as usize);
    if !forward {
        objects.reverse();
    }
    let cursor_at =
        |object: Option<&Object>, forward: bool| object.map(|o| Cursor { forward, key: o.key(request.sort) }.encode());
    // Going forward, a next page exists when one more row came back, a previous one when the
    // page did not start at the beginning; going back, the other way round.
    let (has_next, has_prev) = if forward { (more, request.cursor.is_some()) } else { (true, more) };
    let next = if has_next { cursor_at(objects.last(), true) } else { None };
    let prev = if has_prev { cursor_at(objects.first(), false) } else { None };
    let total = total(conn, request.source, &request.filter, &fields).await?;
    Ok(Page { objects, total, next, prev })
}

/// How many rows of `source` `filter` selects.
async fn total(conn: &mut PgConnection, source: Source, filter: &Filter, fields: &[String]) -> Result<i64> {
    let mut query = QueryBuilder::<Postgres>::new(format!("SELECT count(*) FROM {}", source.relation()));
    push_filter(&mut query, filter, fields)?;
    Ok(query.build_query_scalar().fetch_one(conn).await?)
}

/// One value of a facet and how many rows have it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    pub value: String,
    pub count: i64,
}

/// The facets of a filter: every value of each column among the rows it selects, with counts,
/// most frequent first, none left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Facets {
    pub clusters: Vec<Count>,
    pub namespaces: Vec<Count>,
    /// `group/Kind` (`Kind` alone for the core group).
    pub kinds: Vec<Count>,
    pub health: Vec<Count>,
}

/// The facets of `filter` over `source`, in one scan (`GROUPING SETS`).
///
/// # Errors
/// As [`page`].
pub async fn facets(conn: &mut PgConnection, source: Source, filter: &Filter) -> Result<Facets> {
    let fields = field_columns(conn, source).await?;
    let mut query = QueryBuilder::<Postgres>::new(
        "SELECT CASE WHEN GROUPING(cluster_name) = 0 THEN 'cluster' WHEN GROUPING(namespace) = 0 THEN 'namespace' \
         WHEN GROUPING(kind) = 0 THEN 'kind' ELSE 'health' END AS facet, \
         coalesce(cluster_name, namespace, CASE WHEN api_group = '' THEN kind ELSE api_group || '/' || kind END, health) \
         AS value, count(*) AS count FROM ",
    );
    query.push(source.relation().to_string());
    push_filter(&mut query, filter, &fields)?;
    query.push(
        " GROUP BY GROUPING SETS ((cluster_name), (namespace), (api_group, kind), (health)) ORDER BY 1, 3 DESC, 2",
    );
    let rows: Vec<(String, Option<String>, i64)> = query.build_query_as().fetch_all(conn).await?;
    let mut facets = Facets::default();
    for (facet, value, count) in rows {
        let counts = match facet.as_str() {
            "cluster" => &mut facets.clusters,
            "namespace" => &mut facets.namespaces,
            "kind" => &mut facets.kinds,
            _ => &mut facets.health,
        };
        counts.push(Count { value: value.unwrap_or_default(), count });
    }
    Ok(facets)
}
