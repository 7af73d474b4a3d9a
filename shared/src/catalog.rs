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
    /// Where the objects come from: a paged list of `api` (the default), or the discovery API.
    #[serde(default)]
    pub source: ResourceSource,
    /// The Kubernetes minor version (`1.25`) that stopped serving this API, for documentation
    /// and the simulated fleet; a cluster that does not serve it answers 404 and the job is
    /// `skipped`.
    #[serde(default)]
    pub removed_in: Option<String>,
    /// Default cron schedule (6 fields, seconds first), overridable in the config.
    pub schedule: String,
    pub tables: Vec<Table>,
}

/// Where a resource's objects come from.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResourceSource {
    /// A paged list of the resource (`GET /apis/<group>/<version>/<plural>`).
    #[default]
    List,
    /// Discovery (`/api`, `/apis`, every group/version): one object per `APIResourceList`, with
    /// `group` and `version` filled in.
    Discovery,
    /// `GET /version`: one object.
    Version,
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
    /// Which common columns lead the table.
    #[serde(default)]
    pub common: CommonColumns,
    /// Table-specific columns, in order, after the common columns. A column named like a
    /// common column replaces that column's source in place. A nested list is spliced in place,
    /// so a YAML anchor can share a column set between tables.
    #[serde(rename = "columns")]
    column_specs: Vec<ColumnSpecs>,
    /// Extra indexes (lists of column names) beyond the common ones.
    #[serde(default)]
    pub indexes: Vec<Vec<String>>,
    /// Common and specific columns, resolved at load.
    #[serde(skip)]
    pub columns: Vec<Column>,
    /// The column naming each row's namespace, after which the registry's namespace fields go
    /// (`namespace`; `name` in `kubernetes_namespaces`), and where its value comes from.
    #[serde(skip)]
    pub namespace_column: Option<(String, Source)>,
}

/// The columns a table starts with.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CommonColumns {
    /// kubequery's object columns: uid, cluster_name, cluster_uid, name, [namespace,]
    /// creation_timestamp, labels, annotations.
    #[default]
    Object,
    /// Only cluster_name and cluster_uid (kubequery's tables without an object identity).
    Cluster,
}

/// One column spec, or a list of them (spliced in place).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ColumnSpecs {
    One(String),
    Many(Vec<String>),
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
    /// A floating-point number, stored as `double precision` (e.g. CPU cores).
    Double,
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
            "double" => Self::Double,
            _ => return None,
        })
    }

    /// The type's name in the catalog.
    pub fn catalog_name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
            Self::Int => "int",
            Self::BigInt => "bigint",
            Self::Bool => "bool",
            Self::Time => "time",
            Self::Double => "double",
        }
    }

    /// The PostgreSQL type of the column.
    pub fn sql_type(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "jsonb",
            Self::Int | Self::Bool => "integer",
            Self::BigInt | Self::Time => "bigint",
            Self::Double => "double precision",
        }
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A field path in the object, e.g. `metadata.uid`.
    Object(Vec<Step>),
    /// A field path in the row's list item, e.g. `item.image`.
    Item(Vec<Step>),
    /// A field path in the status item matched to the row's item, e.g. `status_item.ready`.
    StatusItem(Vec<Step>),
    /// The row list's tag (`RowList::tag`).
    Tag,
    /// The cluster's name in the registry.
    ClusterName,
    /// The uid of the cluster's `kube-system` namespace.
    ClusterUid,
    /// A constant text, written `'text'`.
    Const(String),
    /// The first of these sources whose value is set (not missing, not null): `a.b|c.d`.
    FirstOf(Vec<Source>),
    /// A function of another source's value: `cores(item.resources.requests.cpu)`.
    Call(Function, Box<Source>),
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// An object key.
    Key(String),
    /// `key[path=value]`: the first element of the list at `key` whose field at `path` is the
    /// string `value` (e.g. `conditions[type=Ready]`, `metrics[resource.name=cpu]`).
    Find { key: String, path: Vec<String>, value: String },
}

/// The functions a source can apply, each with the column type it yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// An image reference without its tag or digest (`text`).
    ImageRepo,
    /// Which volume source of a volume (or PersistentVolume spec) is set, named as kubequery
    /// names it: `config_map`, `host_path`, `persistent_volume_claim`, ... (`text`).
    VolumeType,
    /// A condition list's `Ready` condition: 1 when its status is `True`, else 0; NULL when the
    /// list has no `Ready` condition (`bool`).
    Ready,
    /// A Kubernetes quantity in CPU cores: `100m` → 0.1 (`double`).
    Cores,
    /// A Kubernetes quantity in bytes (or units), rounded up: `1Ki` → 1024 (`bigint`).
    Bytes,
    /// An annotation map without `kubectl.kubernetes.io/last-applied-configuration`, which can
    /// hold a Secret's or ConfigMap's data (`json`).
    NoLastApplied,
}

impl Function {
    const ALL: [(&'static str, Function, ColumnType); 6] = [
        ("image_repo", Function::ImageRepo, ColumnType::Text),
        ("volume_type", Function::VolumeType, ColumnType::Text),
        ("ready", Function::Ready, ColumnType::Bool),
        ("cores", Function::Cores, ColumnType::Double),
        ("bytes", Function::Bytes, ColumnType::BigInt),
        ("no_last_applied", Function::NoLastApplied, ColumnType::Json),
    ];

    fn named(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _, _)| *n == name).map(|(_, f, _)| *f)
    }

    /// The function's name in the catalog.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, f, _)| *f == self).map_or("?", |(n, _, _)| n)
    }

    /// The column type the function's values are stored as.
    pub fn column_type(self) -> ColumnType {
        Self::ALL.iter().find(|(_, f, _)| *f == self).map_or(ColumnType::Text, |(_, _, t)| *t)
    }
}

/// Splits `text` at `separator` where it is outside parentheses and brackets.
fn split_top_level(text: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            c if c == separator && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Parses a field path: keys separated by `.`, each optionally `key[path=value]`.
fn parse_path(text: &str) -> Option<Vec<Step>> {
    split_top_level(text, '.')
        .into_iter()
        .map(|segment| {
            let valid_key = |key: &str| !key.is_empty() && !key.contains(['(', ')', '[', ']', '=', '\'', '$', '|']);
            match segment.split_once('[') {
                None => valid_key(segment).then(|| Step::Key(segment.to_owned())),
                Some((key, filter)) => {
                    let (path, value) = filter.strip_suffix(']')?.split_once('=')?;
                    let path: Vec<String> = path.split('.').map(str::to_owned).collect();
                    (valid_key(key) && path.iter().all(|p| valid_key(p)) && !value.is_empty()).then(|| Step::Find {
                        key: key.to_owned(),
                        path,
                        value: value.to_owned(),
                    })
                }
            }
        })
        .collect()
}

impl Source {
    fn parse(text: &str) -> Option<Self> {
        let alternatives = split_top_level(text, '|');
        if alternatives.len() > 1 {
            return alternatives.into_iter().map(Self::parse).collect::<Option<Vec<_>>>().map(Self::FirstOf);
        }
        if let Some(constant) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
            return (!constant.contains('\'')).then(|| Self::Const(constant.to_owned()));
        }
        if let Some((name, rest)) = text.split_once('(') {
            let inner = rest.strip_suffix(')')?;
            return Some(Self::Call(Function::named(name)?, Box::new(Self::parse(inner)?)));
        }
        Some(match text {
            "item" => Self::Item(Vec::new()),
            "status_item" => Self::StatusItem(Vec::new()),
            "$tag" => Self::Tag,
            "$cluster_name" => Self::ClusterName,
            "$cluster_uid" => Self::ClusterUid,
            _ if text.starts_with('$') || text.is_empty() => return None,
            _ => {
                if let Some(rest) = text.strip_prefix("status_item.") {
                    Self::StatusItem(parse_path(rest)?)
                } else if let Some(rest) = text.strip_prefix("item.") {
                    Self::Item(parse_path(rest)?)
                } else {
                    Self::Object(parse_path(text)?)
                }
            }
        })
    }

    /// The functions this source applies, outermost first.
    fn functions(&self) -> Vec<Function> {
        match self {
            Self::Call(function, inner) => {
                let mut functions = vec![*function];
                functions.extend(inner.functions());
                functions
            }
            Self::FirstOf(sources) => sources.iter().flat_map(Self::functions).collect(),
            _ => Vec::new(),
        }
    }
}

/// The columns every table of a namespaced resource starts with, in kubequery's order
/// (`common: object`; cluster-scoped resources have no `namespace`).
const OBJECT_COLUMNS: &[&str] = &[
    "uid text metadata.uid",
    "cluster_name text $cluster_name",
    "cluster_uid text $cluster_uid",
    "name text metadata.name",
    "namespace text metadata.namespace",
    "creation_timestamp time metadata.creationTimestamp",
    "labels json metadata.labels",
    "annotations json metadata.annotations",
];

/// The columns of `common: cluster` tables.
const CLUSTER_COLUMNS: &[&str] = &["cluster_name text $cluster_name", "cluster_uid text $cluster_uid"];

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
    let ty = ColumnType::parse(ty).ok_or_else(bad)?;
    let source = Source::parse(source).ok_or_else(bad)?;
    if let Some(function) = source.functions().first()
        && function.column_type() != ty
    {
        return Err(Error::Catalog(format!(
            "column `{spec}`: {}() yields {:?} values; declare the column {}",
            function.name(),
            function.column_type(),
            function.column_type().catalog_name()
        )));
    }
    Ok(Column { name: name.to_owned(), ty, source })
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
            cron::Schedule::try_from(resource.schedule.as_str()).map_err(|err| {
                Error::Catalog(format!("{}: schedule `{}`: {err}", resource.api.kind, resource.schedule))
            })?;
            if resource.tables.is_empty() {
                return Err(Error::Catalog(format!("{} fills no table", resource.api.kind)));
            }
            let is_namespace = resource.api.group.is_empty() && resource.api.kind == "Namespace";
            for table in &mut resource.tables {
                table.resolve_columns(resource.api.namespaced, is_namespace)?;
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

impl Catalog {
    /// The README's table list: every table, where it comes from, what one row is, and its
    /// default schedule, as a Markdown table (a test keeps the README's copy equal to it and
    /// prints it when they differ).
    pub fn markdown_tables(&self) -> String {
        let mut out =
            String::from("| table | Kubernetes source | one row per | default schedule |\n|---|---|---|---|\n");
        for resource in &self.resources {
            let api = &resource.api;
            let group_version =
                if api.group.is_empty() { api.version.clone() } else { format!("{}/{}", api.group, api.version) };
            let origin = match resource.source {
                ResourceSource::List => format!("{group_version} {}", api.kind),
                ResourceSource::Discovery => "discovery (`/api`, `/apis`)".to_owned(),
                ResourceSource::Version => "`/version`".to_owned(),
            };
            let removed = resource.removed_in.as_ref().map(|v| format!(", not served since {v}")).unwrap_or_default();
            for (i, table) in resource.tables.iter().enumerate() {
                let source = if i == 0 { format!("{origin}{removed}") } else { format!("{origin} (same listing)") };
                let row = if table.rows.is_empty() {
                    match resource.source {
                        ResourceSource::Version => "cluster".to_owned(),
                        _ => api.kind.clone(),
                    }
                } else {
                    let lists: Vec<String> = table.rows.iter().map(|r| format!("`{}[]`", r.items)).collect();
                    format!("item of {}", lists.join(", "))
                };
                let schedule = if i == 0 { format!("`{}`", resource.schedule) } else { String::new() };
                out.push_str(&format!("| `{}` | {source} | {row} | {schedule} |\n", table.name));
            }
        }
        out
    }
}

impl Resource {
    /// The table that names this resource's jobs: the first one.
    pub fn job_table(&self) -> &str {
        &self.tables[0].name
    }
}

impl Table {
    fn resolve_columns(&mut self, namespaced: bool, is_namespace: bool) -> Result<()> {
        if !is_identifier(&self.name) {
            return Err(Error::Catalog(format!("table `{}` is not a lower-case SQL identifier", self.name)));
        }
        let common = match self.common {
            CommonColumns::Object => OBJECT_COLUMNS,
            CommonColumns::Cluster => CLUSTER_COLUMNS,
        };
        let mut columns: Vec<Column> = common
            .iter()
            .filter(|spec| namespaced || !spec.starts_with("namespace "))
            .map(|spec| parse_column(spec))
            .collect::<Result<_>>()?;
        let mut declared = std::collections::HashSet::new();
        let specs = self.column_specs.iter().flat_map(|specs| match specs {
            ColumnSpecs::One(spec) => std::slice::from_ref(spec),
            ColumnSpecs::Many(specs) => specs.as_slice(),
        });
        for spec in specs {
            let column = parse_column(spec)?;
            if !declared.insert(column.name.clone()) {
                return Err(Error::Catalog(format!("{}: column {} is declared twice", self.name, column.name)));
            }
            match columns.iter_mut().find(|c| c.name == column.name) {
                Some(common) => *common = column,
                None => columns.push(column),
            }
        }
        self.namespace_column = match columns.iter().find(|c| c.name == "namespace") {
            Some(column) => Some((column.name.clone(), column.source.clone())),
            None if is_namespace && self.rows.is_empty() => {
                Some(("name".to_owned(), Source::Object(vec![Step::Key("metadata".into()), Step::Key("name".into())])))
            }
            None => None,
        };
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
            Self::Call(_, inner) => inner.is_per_item(),
            Self::FirstOf(sources) => sources.iter().any(Self::is_per_item),
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
        assert_eq!(containers.columns[3].source, Source::Item(vec![Step::Key("name".into())]));
        let namespaces = catalog().tables().find(|(_, t)| t.name == "kubernetes_namespaces").unwrap().1;
        assert!(!namespaces.has_column("namespace"));
    }

    #[test]
    fn sources_parse_paths_filters_alternatives_constants_and_functions() {
        let key = |k: &str| Step::Key(k.into());
        assert_eq!(
            Source::parse("spec.metrics[resource.name=cpu].resource"),
            Some(Source::Object(vec![
                key("spec"),
                Step::Find { key: "metrics".into(), path: vec!["resource".into(), "name".into()], value: "cpu".into() },
                key("resource"),
            ]))
        );
        assert_eq!(
            Source::parse("item.from|item.to"),
            Some(Source::FirstOf(vec![Source::Item(vec![key("from")]), Source::Item(vec![key("to")])]))
        );
        assert_eq!(Source::parse("'add'"), Some(Source::Const("add".into())));
        assert_eq!(
            Source::parse("volume_type(item)"),
            Some(Source::Call(Function::VolumeType, Box::new(Source::Item(vec![]))))
        );
        assert_eq!(
            Source::parse("cores(item.resources.requests.cpu)"),
            Some(Source::Call(
                Function::Cores,
                Box::new(Source::Item(vec![key("resources"), key("requests"), key("cpu")]))
            ))
        );
        assert_eq!(
            Source::parse("bytes(status.capacity.ephemeral-storage)"),
            Some(Source::Call(
                Function::Bytes,
                Box::new(Source::Object(vec![key("status"), key("capacity"), key("ephemeral-storage")]))
            ))
        );
        for bad in ["", "nosuch(a)", "cores(a", "a..b", "a[b]", "a[=x]", "'a'b'", "$nope", "a|", "a[b=]"] {
            assert_eq!(Source::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn functions_must_match_their_column_type_and_tables_find_their_namespace_column() {
        let entry = |columns: &str| {
            format!(
                "- api: {{version: v1, kind: Pod, plural: pods, namespaced: true}}\n  schedule: '0 * * * * *'\n  tables:\n  - name: t\n    columns: [{columns}]\n"
            )
        };
        let err = Catalog::parse(&entry("'c text cores(spec.cpu)'")).unwrap_err().to_string();
        assert!(err.contains("declare the column double"), "{err}");
        let catalog = Catalog::parse(&entry("'c double cores(spec.cpu)', ['a text x', 'b int y']")).unwrap();
        let table = &catalog.resources[0].tables[0];
        assert!(table.has_column("a") && table.has_column("b") && table.has_column("c"));
        assert_eq!(table.namespace_column.as_ref().map(|c| c.0.as_str()), Some("namespace"));
        let namespaces = self::catalog().tables().find(|(_, t)| t.name == "kubernetes_namespaces").unwrap().1;
        assert_eq!(namespaces.namespace_column.as_ref().map(|c| c.0.as_str()), Some("name"));
        let nodes = self::catalog().tables().find(|(_, t)| t.name == "kubernetes_nodes").unwrap().1;
        assert!(nodes.namespace_column.is_none());
        let info = self::catalog().tables().find(|(_, t)| t.name == "kubernetes_info").unwrap().1;
        assert_eq!(info.columns[0].name, "cluster_name");
        assert!(!info.has_column("uid"));
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
