//! The table catalog: every Kubernetes resource kubecensus lists, and every table filled from it.
//!
//! The catalog is data (`catalog.yaml`, embedded at build time). One entry names a resource
//! (group, version, kind, plural, scope), its default schedule, and the tables one listing of it
//! fills. Each table names its rows (one per object, or one per item of a list inside the object)
//! and its columns (name, type, source field). DDL, flattening, the scheduler's jobs and the
//! simulated fleet all read this one description: adding a table is adding an entry.

use std::sync::LazyLock;

use serde::Deserialize;

use crate::{Error, Result};

/// The catalog text, compiled into every binary.
const CATALOG_YAML: &str = include_str!("../catalog.yaml");

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    Catalog::parse(CATALOG_YAML).unwrap_or_else(|err| panic!("the embedded catalog.yaml is invalid: {err}"))
});

/// The embedded catalog.
pub fn catalog() -> &'static Catalog {
    &CATALOG
}

/// Every resource kubecensus lists, in catalog order.
#[derive(Debug)]
pub struct Catalog {
    pub resources: Vec<Resource>,
}

/// One Kubernetes resource and the tables one listing of it fills. A job lists one resource of
/// one cluster; the job names the resource by its first table (`Resource::job_table`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub api: ApiRef,
    /// Default cron schedule (6 fields, seconds first), overridable in the config.
    pub schedule: String,
    pub tables: Vec<Table>,
}

/// Where a resource lives in the Kubernetes API.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiRef {
    /// API group; empty for the core group.
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

/// One table, filled from one resource's listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub name: String,
    /// Where rows come from: absent means one row per object.
    #[serde(default)]
    pub rows: Vec<RowList>,
    /// Table-specific columns, in order, after the common object columns. A column named like a
    /// common column replaces that column's source in place.
    #[serde(rename = "columns")]
    column_specs: Vec<String>,
    /// Extra indexes (lists of column names) beyond the common ones.
    #[serde(default)]
    pub indexes: Vec<Vec<String>>,
    /// Common and specific columns, resolved at load.
    #[serde(skip)]
    pub columns: Vec<Column>,
}

/// A list inside each object whose items become rows (e.g. `spec.containers`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowList {
    /// Path of the list within the object.
    pub items: String,
    /// Path of a list matched to `items` by index (e.g. `status.containerStatuses`): `status_item.*`.
    #[serde(default)]
    pub status: Option<String>,
    /// The value of the `tag` source for rows from this list (e.g. `init`, `container`).
    #[serde(default)]
    pub tag: Option<String>,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub source: Source,
}

/// How a value is stored: kubequery's representation in a PostgreSQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A string, stored as `text`.
    Text,
    /// Any JSON value, stored as `jsonb`.
    Json,
    /// A 32-bit integer, stored as `integer`.
    Int,
    /// A 64-bit integer, stored as `bigint`.
    BigInt,
    /// A boolean as kubequery stores it: `integer` 0 or 1.
    Bool,
    /// An RFC 3339 timestamp as kubequery stores it: unix seconds in a `bigint`.
    Time,
}

impl ColumnType {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "text" => Self::Text,
            "json" => Self::Json,
            "int" => Self::Int,
            "bigint" => Self::BigInt,
            "bool" => Self::Bool,
            "time" => Self::Time,
            _ => return None,
        })
    }

    /// The PostgreSQL type of the column.
    pub fn sql_type(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "jsonb",
            Self::Int | Self::Bool => "integer",
            Self::BigInt | Self::Time => "bigint",
        }
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A field path in the object, e.g. `metadata.uid`.
    Object(Vec<String>),
    /// A field path in the row's list item, e.g. `item.image`.
    Item(Vec<String>),
    /// A field path in the status item matched to the row's item, e.g. `status_item.ready`.
    StatusItem(Vec<String>),
    /// The row list's tag (`RowList::tag`).
    Tag,
    /// The cluster's name in the registry.
    ClusterName,
    /// The uid of the cluster's `kube-system` namespace.
    ClusterUid,
    /// An image reference without its tag or digest, from a field of the item.
    ImageRepo(Box<Source>),
}

impl Source {
    fn parse(text: &str) -> Option<Self> {
        let path = |rest: &str| rest.split('.').map(str::to_owned).collect::<Vec<_>>();
        if let Some(inner) = text.strip_prefix("image_repo(").and_then(|t| t.strip_suffix(')')) {
            return Some(Self::ImageRepo(Box::new(Self::parse(inner)?)));
        }
        Some(match text {
            "$tag" => Self::Tag,
            "$cluster_name" => Self::ClusterName,
            "$cluster_uid" => Self::ClusterUid,
            _ if text.starts_with('$') || text.is_empty() => return None,
            _ => {
                if let Some(rest) = text.strip_prefix("status_item.") {
                    Self::StatusItem(path(rest))
                } else if let Some(rest) = text.strip_prefix("item.") {
                    Self::Item(path(rest))
                } else {
                    Self::Object(path(text))
                }
            }
        })
    }
}

/// The columns every table of a namespaced resource starts with, in kubequery's order.
const NAMESPACED_COLUMNS: &[&str] = &[
    "uid text metadata.uid",
    "cluster_name text $cluster_name",
    "cluster_uid text $cluster_uid",
    "name text metadata.name",
    "namespace text metadata.namespace",
    "creation_timestamp time metadata.creationTimestamp",
    "labels json metadata.labels",
    "annotations json metadata.annotations",
];

/// The name of the column that partitions every data table by cluster.
pub const CLUSTER_COLUMN: &str = "cluster_name";

fn parse_column(spec: &str) -> Result<Column> {
    let bad = || Error::Catalog(format!("column `{spec}`: expected `<name> <type> <source>`"));
    let mut words = spec.split_whitespace();
    let (Some(name), Some(ty), Some(source), None) = (words.next(), words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    if !is_identifier(name) {
        return Err(Error::Catalog(format!("column `{spec}`: `{name}` is not a lower-case SQL identifier")));
    }
    Ok(Column {
        name: name.to_owned(),
        ty: ColumnType::parse(ty).ok_or_else(bad)?,
        source: Source::parse(source).ok_or_else(bad)?,
    })
}

/// Whether `name` is safe to use unquoted in SQL: lower-case letters, digits and `_`, not leading
/// with a digit. Table and column names only ever come from the catalog, and all pass this test.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

impl Catalog {
    /// Parses and checks a catalog text.
    pub fn parse(text: &str) -> Result<Self> {
        let mut resources: Vec<Resource> =
            serde_yaml::from_str(text).map_err(|err| Error::Catalog(format!("catalog.yaml: {err}")))?;
        for resource in &mut resources {
            cron::Schedule::try_from(resource.schedule.as_str())
                .map_err(|err| Error::Catalog(format!("{}: schedule `{}`: {err}", resource.api.kind, resource.schedule)))?;
            if resource.tables.is_empty() {
                return Err(Error::Catalog(format!("{} fills no table", resource.api.kind)));
            }
            for table in &mut resource.tables {
                table.resolve_columns(resource.api.namespaced)?;
            }
        }
        let catalog = Self { resources };
        let mut names: Vec<&str> = catalog.tables().map(|(_, t)| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(Error::Catalog(format!("table {} is declared twice", pair[0])));
        }
        Ok(catalog)
    }

    /// Every table with the resource it comes from.
    pub fn tables(&self) -> impl Iterator<Item = (&Resource, &Table)> {
        self.resources.iter().flat_map(|r| r.tables.iter().map(move |t| (r, t)))
    }

    /// The resource that fills `table` (any of its tables, not only the first).
    pub fn resource_of(&self, table: &str) -> Option<&Resource> {
        self.tables().find(|(_, t)| t.name == table).map(|(r, _)| r)
    }
}

impl Resource {
    /// The table that names this resource's jobs: the first one.
    pub fn job_table(&self) -> &str {
        &self.tables[0].name
    }
}

impl Table {
    fn resolve_columns(&mut self, namespaced: bool) -> Result<()> {
        if !is_identifier(&self.name) {
            return Err(Error::Catalog(format!("table `{}` is not a lower-case SQL identifier", self.name)));
        }
        let mut columns: Vec<Column> = NAMESPACED_COLUMNS
            .iter()
            .filter(|spec| namespaced || !spec.starts_with("namespace "))
            .map(|spec| parse_column(spec))
            .collect::<Result<_>>()?;
        let mut declared = std::collections::HashSet::new();
        for spec in &self.column_specs {
            let column = parse_column(spec)?;
            if !declared.insert(column.name.clone()) {
                return Err(Error::Catalog(format!("{}: column {} is declared twice", self.name, column.name)));
            }
            match columns.iter_mut().find(|c| c.name == column.name) {
                Some(common) => *common = column,
                None => columns.push(column),
            }
        }
        let uses_items = columns.iter().any(|c| c.source.is_per_item());
        if uses_items && self.rows.is_empty() {
            return Err(Error::Catalog(format!("{}: item columns need `rows`", self.name)));
        }
        for index in &self.indexes {
            if let Some(missing) = index.iter().find(|name| !columns.iter().any(|c| &c.name == *name)) {
                return Err(Error::Catalog(format!("{}: index on unknown column {missing}", self.name)));
            }
        }
        self.columns = columns;
        Ok(())
    }

    /// Whether the table has a column of this name.
    pub fn has_column(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c.name == name)
    }
}

impl Source {
    fn is_per_item(&self) -> bool {
        match self {
            Self::Item(_) | Self::StatusItem(_) | Self::Tag => true,
            Self::ImageRepo(inner) => inner.is_per_item(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses_and_holds_the_pipeline_tables() {
        let catalog = catalog();
        for table in ["kubernetes_namespaces", "kubernetes_nodes", "kubernetes_pods", "kubernetes_pod_containers"] {
            assert!(catalog.resource_of(table).is_some(), "{table} missing");
        }
        let pods = catalog.resource_of("kubernetes_pod_containers").unwrap();
        assert_eq!(pods.job_table(), "kubernetes_pods");
        assert_eq!(pods.api.plural, "pods");
    }

    #[test]
    fn common_columns_lead_in_kubequery_order_and_can_be_overridden() {
        let containers = catalog().tables().find(|(_, t)| t.name == "kubernetes_pod_containers").unwrap().1;
        let names: Vec<&str> = containers.columns.iter().take(5).map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["uid", "cluster_name", "cluster_uid", "name", "namespace"]);
        assert_eq!(containers.columns[3].source, Source::Item(vec!["name".into()]));
        let namespaces = catalog().tables().find(|(_, t)| t.name == "kubernetes_namespaces").unwrap().1;
        assert!(!namespaces.has_column("namespace"));
    }

    #[test]
    fn bad_catalogs_are_rejected_with_the_reason() {
        let entry = |columns: &str| {
            format!(
                "- api: {{version: v1, kind: Pod, plural: pods, namespaced: true}}\n  schedule: '0 * * * * *'\n  tables:\n  - name: t\n    columns: [{columns}]\n"
            )
        };
        let err = Catalog::parse(&entry("'x nosuchtype a.b'")).unwrap_err().to_string();
        assert!(err.contains("x nosuchtype a.b"), "{err}");
        let err = Catalog::parse(&entry("'image text item.image'")).unwrap_err().to_string();
        assert!(err.contains("need `rows`"), "{err}");
        let err = Catalog::parse(&entry("'a text x', 'a text y'")).unwrap_err().to_string();
        assert!(err.contains("declared twice"), "{err}");
        let err = Catalog::parse(&entry("'Bad text x'")).unwrap_err().to_string();
        assert!(err.contains("identifier"), "{err}");
        assert!(Catalog::parse(&entry("'phase text status.phase'")).is_ok());
    }
}
