//! Flattening: one Kubernetes object (JSON) into rows of a catalog table, written straight into
//! PostgreSQL's COPY text format.
//!
//! Each column's value is looked up by its catalog source and rendered as kubequery represents
//! it (strings, JSON, integers, 0/1 booleans, unix seconds). A value of the wrong type is stored
//! as NULL rather than failing the object; NUL characters, which PostgreSQL cannot store in
//! `text` or `jsonb`, are dropped.

use std::borrow::Cow;

use serde_json::Value;

use crate::{
    model::catalog::{CLUSTER_COLUMN, ColumnType, Function, RowList, Source, Step, Table},
    model::namespace_fields::NamespaceFields,
    model::{health, quantity, redact},
};

/// What every row of one cluster shares: its name, uid and the registry's extra fields.
#[derive(Debug, Clone)]
pub struct ClusterContext {
    pub name: String,
    pub uid: String,
    /// Values of the extra field columns, in the order of [`Layout::fields`].
    pub field_values: Vec<Option<String>>,
}

/// A table's columns as stored: the catalog's, with the registry's cluster fields right after
/// `cluster_name` and its namespace fields right after the table's namespace column (tables
/// without one have none).
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    pub table: &'a Table,
    pub fields: &'a [String],
    pub namespace_fields: &'a [String],
}

impl<'a> Layout<'a> {
    /// The namespace fields this table stores: the registry's, when it has a namespace column.
    fn own_namespace_fields(&self) -> &'a [String] {
        if self.table.namespace_column.is_some() { self.namespace_fields } else { &[] }
    }

    /// Whether the namespace fields follow this column.
    fn is_namespace_column(&self, name: &str) -> bool {
        self.table.namespace_column.as_ref().is_some_and(|(column, _)| column == name)
    }

    /// Column names in storage order.
    pub fn column_names(&self) -> Vec<&'a str> {
        let mut names = Vec::with_capacity(self.table.columns.len() + self.fields.len() + self.namespace_fields.len());
        for column in &self.table.columns {
            names.push(column.name.as_str());
            if column.name == CLUSTER_COLUMN {
                names.extend(self.fields.iter().map(String::as_str));
            }
            if self.is_namespace_column(&column.name) {
                names.extend(self.own_namespace_fields().iter().map(String::as_str));
            }
        }
        names
    }

    /// The SQL type of a column of this layout: the catalog's, or `text` for a registry field.
    pub fn sql_type(&self, name: &str) -> &'static str {
        self.table.columns.iter().find(|column| column.name == name).map_or("text", |column| column.ty.sql_type())
    }

    /// The extra (registry) columns this table has, all `text`.
    pub fn extra_column_names(&self) -> impl Iterator<Item = &'a str> {
        self.fields.iter().chain(self.own_namespace_fields()).map(String::as_str)
    }

    /// Appends the rows `object` yields to `out` in COPY text format; returns how many.
    /// Namespace fields are NULL (see [`Self::write_rows_with`]).
    pub fn write_rows(&self, object: &Value, cluster: &ClusterContext, out: &mut Vec<u8>) -> usize {
        self.write_rows_with(object, cluster, None, out)
    }

    /// Appends the rows `object` yields to `out` in COPY text format, with the namespace fields'
    /// values from `namespaces` (whose names must be [`Self::namespace_fields`]); returns how
    /// many.
    pub fn write_rows_with(
        &self,
        object: &Value,
        cluster: &ClusterContext,
        namespaces: Option<&NamespaceFields>,
        out: &mut Vec<u8>,
    ) -> usize {
        if self.table.rows.is_empty() {
            self.write_row(&Row { object, item: None, status: None, tag: None }, cluster, namespaces, out);
            return 1;
        }
        let mut count = 0;
        for list in &self.table.rows {
            for row in rows_of(object, list) {
                self.write_row(&row, cluster, namespaces, out);
                count += 1;
            }
        }
        count
    }

    fn write_row(&self, row: &Row, cluster: &ClusterContext, namespaces: Option<&NamespaceFields>, out: &mut Vec<u8>) {
        for (i, column) in self.table.columns.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            let value = match &column.source {
                Source::ClusterName => Some(Cow::Borrowed(cluster.name.as_str())),
                Source::ClusterUid => Some(Cow::Borrowed(cluster.uid.as_str())),
                source => render(column.ty, row.resolve(source)),
            };
            write_field(value.as_deref(), out);
            if column.name == CLUSTER_COLUMN {
                for value in &cluster.field_values {
                    out.push(b'\t');
                    write_field(value.as_deref(), out);
                }
            }
            if self.is_namespace_column(&column.name) {
                self.write_namespace_fields(row, namespaces, out);
            }
        }
        out.push(b'\n');
    }

    fn write_namespace_fields(&self, row: &Row, namespaces: Option<&NamespaceFields>, out: &mut Vec<u8>) {
        let fields = self.own_namespace_fields();
        let namespace = self.table.namespace_column.as_ref().and_then(|(_, source)| match row.resolve(source) {
            Some(Resolved::Json(Value::String(name))) => Some(name.as_str()),
            _ => None,
        });
        match (namespaces, namespace) {
            (Some(namespaces), Some(namespace)) if namespaces.names() == fields => {
                for value in namespaces.values(namespace) {
                    out.push(b'\t');
                    write_field(value, out);
                }
            }
            _ => {
                for _ in fields {
                    out.extend_from_slice(b"\t\\N");
                }
            }
        }
    }
}

/// One row's inputs: the object, and for per-item tables the item, its status and its tag.
struct Row<'a> {
    object: &'a Value,
    item: Option<&'a Value>,
    status: Option<&'a Value>,
    tag: Option<&'a str>,
}

/// A resolved source: a JSON value of the object, a string or a JSON value computed from one.
enum Resolved<'a> {
    Json(&'a Value),
    Text(String),
    Computed(Value),
}

impl Resolved<'_> {
    fn json(&self) -> Option<&Value> {
        match self {
            Self::Json(value) => Some(value),
            Self::Computed(value) => Some(value),
            Self::Text(_) => None,
        }
    }
}

impl<'a> Row<'a> {
    fn resolve(&self, source: &Source) -> Option<Resolved<'a>> {
        match source {
            Source::Object(path) => lookup(self.object, path).map(Resolved::Json),
            Source::Item(path) => lookup(self.item?, path).map(Resolved::Json),
            Source::StatusItem(path) => lookup(self.status?, path).map(Resolved::Json),
            Source::Tag => self.tag.map(|tag| Resolved::Text(tag.to_owned())),
            Source::Const(text) => Some(Resolved::Text(text.clone())),
            Source::FirstOf(sources) => sources.iter().find_map(|source| self.resolve(source)),
            Source::Call(Function::WithoutData, inner) => {
                redact::without_data(self.object, self.resolve(inner)?.json()?).map(Resolved::Computed)
            }
            Source::Call(function, inner) => apply(*function, self.resolve(inner)?),
            Source::ClusterName | Source::ClusterUid => None,
        }
    }
}

/// Applies a catalog function to a resolved value; `None` when it does not apply.
fn apply(function: Function, value: Resolved) -> Option<Resolved> {
    let text = |value: &Resolved| match value {
        Resolved::Text(text) => Some(text.clone()),
        Resolved::Json(Value::String(text)) => Some(text.clone()),
        Resolved::Json(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Some(match function {
        Function::ImageRepo => Resolved::Text(image_repo(&text(&value)?).to_owned()),
        Function::VolumeType => Resolved::Text(volume_type(value.json()?)?.to_owned()),
        Function::Ready => Resolved::Computed(Value::Bool(ready(value.json()?)?)),
        Function::Cores => Resolved::Computed(Value::from(quantity::cores(&text(&value)?)?)),
        Function::Bytes => Resolved::Computed(Value::from(quantity::bytes(&text(&value)?)?)),
        Function::ApiGroup => Resolved::Text(text(&value)?.rsplit_once('/').map_or("", |(group, _)| group).to_owned()),
        Function::ApiVersion => Resolved::Text(text(&value)?.rsplit('/').next().unwrap_or_default().to_owned()),
        Function::Health => Resolved::Text(health::compute(value.json()?).status.as_str().to_owned()),
        Function::HealthMessage => Resolved::Text(health::compute(value.json()?).message),
        Function::HealthSince => Resolved::Computed(Value::String(health::compute(value.json()?).since?)),
        Function::ContainerImages => Resolved::Computed(Value::Array(
            value.json()?.as_array()?.iter().filter_map(|container| container.get("image").cloned()).collect(),
        )),
        // Needs the whole object: resolved in `Row::resolve`.
        Function::WithoutData => return None,
    })
}

/// Volume sources (Pod volumes and PersistentVolume specs) in the order of Kubernetes'
/// `VolumeSource`, with the name kubequery gives each (`iscsci` is kubequery's spelling).
/// A PersistentVolume's `local` source has no name, as in kubequery.
pub const VOLUME_TYPES: &[(&str, &str)] = &[
    ("hostPath", "host_path"),
    ("emptyDir", "empty_dir"),
    ("gcePersistentDisk", "gce_persistent_disk"),
    ("awsElasticBlockStore", "aws_elastic_block_store"),
    ("gitRepo", "git_repo"),
    ("secret", "secret"),
    ("nfs", "nfs"),
    ("iscsi", "iscsci"),
    ("glusterfs", "gluster_fs"),
    ("persistentVolumeClaim", "persistent_volume_claim"),
    ("rbd", "rbd"),
    ("flexVolume", "flex_volume"),
    ("cinder", "cinder"),
    ("cephfs", "ceph_fs"),
    ("flocker", "flocker"),
    ("downwardAPI", "downward_api"),
    ("fc", "fc"),
    ("azureFile", "azure_file"),
    ("configMap", "config_map"),
    ("vsphereVolume", "vsphere_volume"),
    ("quobyte", "quobyte"),
    ("azureDisk", "azure_disk"),
    ("photonPersistentDisk", "photon_persistent_disk"),
    ("projected", "projected"),
    ("portworxVolume", "portworx_volume"),
    ("scaleIO", "scaleio"),
    ("storageos", "storage_os"),
    ("csi", "csi"),
    ("ephemeral", "ephemeral"),
    ("image", "image"),
];

/// Which volume source of a volume (or PersistentVolume spec) is set.
pub fn volume_type(volume: &Value) -> Option<&'static str> {
    VOLUME_TYPES.iter().find(|(key, _)| volume.get(key).is_some_and(|v| !v.is_null())).map(|(_, name)| *name)
}

/// A condition list's `Ready` condition: whether its status is `True`; `None` without one.
pub fn ready(conditions: &Value) -> Option<bool> {
    let ready = conditions.as_array()?.iter().find(|c| c["type"] == "Ready")?;
    Some(ready["status"] == "True")
}

/// The rows of one row list: each item, with the status item of the same `name`. The API keys
/// container statuses by name, not by position ("Each entry corresponds to a container in the
/// spec, by name": `ContainerStatus` in k8s.io/api core/v1 types.go), so a status list in another
/// order, or missing an entry, never lends a container its neighbour's status.
fn rows_of<'a>(object: &'a Value, list: &'a RowList) -> impl Iterator<Item = Row<'a>> {
    let path = |p: &str| p.split('.').map(|key| Step::Key(key.to_owned())).collect::<Vec<_>>();
    let items = lookup(object, &path(&list.items)).and_then(Value::as_array);
    let statuses = list.status.as_deref().and_then(|p| lookup(object, &path(p))).and_then(Value::as_array);
    items.into_iter().flatten().map(move |item| Row {
        object,
        item: Some(item),
        status: item
            .get("name")
            .and_then(Value::as_str)
            .and_then(|name| statuses?.iter().find(|status| status.get("name").and_then(Value::as_str) == Some(name))),
        tag: list.tag.as_deref(),
    })
}

/// The value at a field path; `None` when any step is missing or null.
pub fn lookup<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let found = path.iter().try_fold(value, |v, step| match step {
        Step::Key(key) => v.get(key),
        Step::Find { key, path, value } => {
            v.get(key)?.as_array()?.iter().find(|element| match path.iter().try_fold(*element, |e, key| e.get(key)) {
                Some(Value::String(found)) => found == value,
                Some(Value::Bool(found)) => found.to_string() == *value,
                _ => false,
            })
        }
    })?;
    (!found.is_null()).then_some(found)
}

/// An image reference without its tag or digest: `ghcr.io/a/b:1.2@sha256:..` → `ghcr.io/a/b`.
pub fn image_repo(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let name_start = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_start..].find(':') {
        Some(colon) => &image[..name_start + colon],
        None => image,
    }
}

/// Renders a value as the column type stores it; `None` is SQL NULL (missing or wrong type).
fn render<'a>(ty: ColumnType, value: Option<Resolved<'a>>) -> Option<Cow<'a, str>> {
    let computed;
    let value = match value? {
        Resolved::Text(text) => return Some(Cow::Owned(text)),
        Resolved::Json(value) => value,
        Resolved::Computed(value) => {
            computed = value;
            return render_json(ty, &computed).map(|text| Cow::Owned(text.into_owned()));
        }
    };
    render_json(ty, value)
}

fn render_json(ty: ColumnType, value: &Value) -> Option<Cow<'_, str>> {
    match ty {
        ColumnType::Text => match value {
            Value::String(s) => Some(Cow::Borrowed(s)),
            Value::Number(_) | Value::Bool(_) => Some(Cow::Owned(value.to_string())),
            _ => Some(Cow::Owned(json_text(value))),
        },
        ColumnType::Json => Some(Cow::Owned(json_text(value))),
        ColumnType::Int => integer(value).and_then(|n| i32::try_from(n).ok()).map(|n| Cow::Owned(n.to_string())),
        ColumnType::BigInt => integer(value).map(|n| Cow::Owned(n.to_string())),
        ColumnType::Bool => value.as_bool().map(|b| Cow::Borrowed(if b { "1" } else { "0" })),
        ColumnType::Time => value
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| Cow::Owned(t.timestamp().to_string())),
        ColumnType::Double => match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse::<f64>().ok(),
            _ => None,
        }
        .filter(|f| f.is_finite())
        .map(|f| Cow::Owned(f.to_string())),
    }
}

/// An integer from a JSON number, a boolean (0/1) or a numeric string.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// JSON text that `jsonb` accepts: `\u0000` (which jsonb rejects) is removed from strings.
fn json_text(value: &Value) -> String {
    let text = value.to_string();
    if !text.contains("\\u0000") {
        return text;
    }
    let mut clean = value.clone();
    strip_nul(&mut clean);
    clean.to_string()
}

fn strip_nul(value: &mut Value) {
    match value {
        Value::String(s) => s.retain(|c| c != '\0'),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (mut key, mut item) in entries {
                key.retain(|c| c != '\0');
                strip_nul(&mut item);
                map.insert(key, item);
            }
        }
        _ => {}
    }
}

/// Appends one field in COPY text format: `\N` for NULL, else the text with `\`, tab, newline
/// and carriage return escaped and NUL dropped.
fn write_field(value: Option<&str>, out: &mut Vec<u8>) {
    let Some(text) = value else {
        out.extend_from_slice(b"\\N");
        return;
    };
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0 => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests;
