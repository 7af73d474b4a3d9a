//! A table's columns: their types (kubequery's representations in PostgreSQL types) and the
//! small grammar of where each value comes from (`metadata.name`, `item.image`,
//! `spec.metrics[resource.name=cpu].resource`, `a|b`, `'const'`, `cores(...)`), parsed once when
//! the catalog loads.

use crate::{Error, Result};

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
    pub(super) fn parse(word: &str) -> Option<Self> {
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
    /// string `value`, or the boolean `true`/`false` that `value` spells (e.g.
    /// `conditions[type=Ready]`, `metrics[resource.name=cpu]`, `ownerReferences[controller=true]`).
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
    /// An annotation map whose values that could carry the object's data are `null`
    /// ([`crate::model::redact`]), for Secrets and ConfigMaps (`json`).
    WithoutData,
    /// The API group of an `apiVersion`: `apps` of `apps/v1`, empty for `v1` (`text`).
    ApiGroup,
    /// The version of an `apiVersion`: `v1` of `apps/v1` (`text`).
    ApiVersion,
    /// An object's health as kstatus computes it ([`crate::model::health`]): `Current`,
    /// `InProgress`, `Failed`, `Terminating`, `Unknown`, or Flux's `Suspended` (`text`).
    Health,
    /// Why the object has its health (`text`).
    HealthMessage,
    /// The `lastTransitionTime` of the condition that decided the health (`time`).
    HealthSince,
    /// The `image` of each container of a container list, in order (`json`, an array of
    /// strings): what a deployment or pod runs, for change history's old and new images.
    ContainerImages,
}

impl Function {
    const ALL: [(&'static str, Function, ColumnType); 12] = [
        ("image_repo", Function::ImageRepo, ColumnType::Text),
        ("volume_type", Function::VolumeType, ColumnType::Text),
        ("ready", Function::Ready, ColumnType::Bool),
        ("cores", Function::Cores, ColumnType::Double),
        ("bytes", Function::Bytes, ColumnType::BigInt),
        ("without_data", Function::WithoutData, ColumnType::Json),
        ("api_group", Function::ApiGroup, ColumnType::Text),
        ("api_version", Function::ApiVersion, ColumnType::Text),
        ("health", Function::Health, ColumnType::Text),
        ("health_message", Function::HealthMessage, ColumnType::Text),
        ("health_since", Function::HealthSince, ColumnType::Time),
        ("container_images", Function::ContainerImages, ColumnType::Json),
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
    pub(super) fn parse(text: &str) -> Option<Self> {
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
            "object" => Self::Object(Vec::new()),
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
pub(super) const OBJECT_COLUMNS: &[&str] = &[
    "uid text metadata.uid",
    "cluster_name text $cluster_name",
    "cluster_uid text $cluster_uid",
    "name text metadata.name",
    "namespace text metadata.namespace",
    "creation_timestamp time metadata.creationTimestamp",
    "labels json metadata.labels",
    "annotations json metadata.annotations",
];

/// The column every `common: object` table ends with: the object's `metadata.resourceVersion`,
/// after kubequery's columns and the catalog's additions. It is kept out of `row_hash`
/// ([`crate::store::replace`] hashes a row's COPY line without its last field), so an object
/// whose version alone was bumped rewrites no row and its stored version is the one of its last
/// content change.
pub const RESOURCE_VERSION_COLUMN: &str = "resource_version";

/// The columns of `common: cluster` tables.
pub(super) const CLUSTER_COLUMNS: &[&str] = &["cluster_name text $cluster_name", "cluster_uid text $cluster_uid"];

/// The name of the column that partitions every data table by cluster.
pub const CLUSTER_COLUMN: &str = "cluster_name";

pub(super) fn parse_column(spec: &str) -> Result<Column> {
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

impl Source {
    pub(super) fn is_per_item(&self) -> bool {
        match self {
            Self::Item(_) | Self::StatusItem(_) | Self::Tag => true,
            Self::Call(_, inner) => inner.is_per_item(),
            Self::FirstOf(sources) => sources.iter().any(Self::is_per_item),
            _ => false,
        }
    }
}
