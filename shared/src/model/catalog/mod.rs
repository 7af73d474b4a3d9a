//! The table catalog: every Kubernetes resource kubecensus lists, and every table filled from it.
//!
//! The catalog is data (`catalog.yaml`, embedded at build time). One entry names a resource
//! (group, version, kind, plural, scope), its default schedule, and the tables one listing of it
//! fills. Each table names its rows (one per object, or one per item of a list inside the object)
//! and its columns (name, type, source field). DDL, flattening, the scheduler's jobs and the
//! simulated fleet all read this one description: adding a table is adding an entry.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

mod column;
mod custom;

pub use column::{CLUSTER_COLUMN, Column, ColumnType, Function, RESOURCE_VERSION_COLUMN, Source, Step, is_identifier};
use column::{CLUSTER_COLUMNS, OBJECT_COLUMNS, parse_column};
pub use custom::{CustomKind, GROUP_COLUMN, KIND_COLUMN, Target, read_kinds};

/// The catalog text, compiled into every binary.
const CATALOG_YAML: &str = include_str!("../../../catalog.yaml");

/// The metrics' `table` label of a name the catalog does not know (a malformed job message).
pub const UNKNOWN_TABLE: &str = "unknown";

/// Every resource kubecensus lists, in catalog order. Each binary builds it once in its wiring
/// ([`Catalog::load`]) and passes it down; tests build their own ([`Catalog::builtin`]).
#[derive(Debug)]
pub struct Catalog {
    pub resources: Vec<Resource>,
    /// What jobs list: every resource, and every kind of a `custom` resource on its own.
    pub targets: Vec<Target>,
}

/// One Kubernetes resource and the tables one listing of it fills. A job lists one resource of
/// one cluster; the job names the resource by its first table (`Resource::job_table`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// What to list; absent for `source: custom` (each kind of `kinds` says).
    #[serde(default)]
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
    /// The custom resources a `source: custom` resource lists, each kind its own job.
    #[serde(default)]
    pub kinds: Vec<CustomKind>,
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
    /// Custom resources: a paged list of each kind of `kinds`, found by its group and kind in
    /// the cluster's discovery (the group's preferred version unless the kind names one).
    Custom,
}

/// Where a resource lives in the Kubernetes API.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
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

impl Catalog {
    /// The embedded catalog, without custom resource kinds beyond its own.
    ///
    /// # Panics
    /// When the embedded `catalog.yaml` is invalid: a build that cannot run at all (the
    /// catalog's tests parse it).
    pub fn builtin() -> Self {
        Self::parse(CATALOG_YAML, &[]).unwrap_or_else(|err| panic!("the embedded catalog.yaml is invalid: {err}"))
    }

    /// The embedded catalog with the kinds of a custom resources file (`--custom-resources`, see
    /// [`read_kinds`]) added: a kind of the same group and kind as one of the catalog's takes its
    /// place (another version or schedule). Without a file, the embedded catalog.
    ///
    /// # Errors
    /// The file cannot be read or parsed ([`Error::ReadFile`], [`Error::Yaml`]), or holds an
    /// invalid kind (empty, listed twice, a bad schedule: [`Error::Catalog`], naming the file).
    pub fn load(custom_resources: Option<&Path>) -> Result<Self> {
        let Some(path) = custom_resources else { return Ok(Self::builtin()) };
        Self::parse(CATALOG_YAML, &read_kinds(path)?).map_err(|err| match err {
            Error::Catalog(why) => Error::Catalog(format!("custom resources file {}: {why}", path.display())),
            other => other,
        })
    }

    /// Parses and checks a catalog text.
    pub fn parse(text: &str, custom_kinds: &[CustomKind]) -> Result<Self> {
        let mut resources: Vec<Resource> =
            serde_norway::from_str(text).map_err(|source| Error::Yaml { what: "catalog.yaml".into(), source })?;
        custom::add_kinds(&mut resources, custom_kinds)?;
        for resource in &mut resources {
            cron::Schedule::try_from(resource.schedule.as_str()).map_err(|err| {
                Error::Catalog(format!("{}: schedule `{}`: {err}", resource.api.kind, resource.schedule))
            })?;
            if resource.tables.is_empty() {
                return Err(Error::Catalog(format!("{} fills no table", resource.api.kind)));
            }
            let is_namespace = resource.api.group.is_empty() && resource.api.kind == "Namespace";
            // A custom resource's table holds namespaced and cluster-scoped kinds alike.
            let namespaced = resource.api.namespaced || resource.source == ResourceSource::Custom;
            for table in &mut resource.tables {
                table.resolve_columns(namespaced, is_namespace)?;
            }
            custom::check(resource)?;
        }
        let targets = custom::targets(&resources);
        let catalog = Self { resources, targets };
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

    /// The `table` label of metrics for `name` (a table, or a job target such as
    /// `kubernetes_custom_resources/<group>/<Kind>`): the catalog's name of the table, or
    /// [`UNKNOWN_TABLE`]. Every kind of custom resource counts under
    /// `kubernetes_custom_resources`, so the labels stay as few as the catalog's tables.
    pub fn metric_table<'a>(&'a self, name: &str) -> &'a str {
        let table = self.tables().map(|(_, table)| table.name.as_str()).find(|table| *table == name);
        let job_table = || self.target(name).map(|(resource, _)| resource.job_table());
        table.or_else(job_table).unwrap_or(UNKNOWN_TABLE)
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
                ResourceSource::Custom => "custom resources (each kind its own job)".to_owned(),
            };
            let removed = resource.removed_in.as_ref().map(|v| format!(", not served since {v}")).unwrap_or_default();
            for (i, table) in resource.tables.iter().enumerate() {
                let source = if i == 0 { format!("{origin}{removed}") } else { format!("{origin} (same listing)") };
                let row = if table.rows.is_empty() {
                    match resource.source {
                        ResourceSource::Version => "cluster".to_owned(),
                        ResourceSource::Custom => "custom resource".to_owned(),
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
        if self.common == CommonColumns::Object && !declared.contains(RESOURCE_VERSION_COLUMN) {
            columns.push(parse_column(&format!("{RESOURCE_VERSION_COLUMN} text metadata.resourceVersion"))?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses_and_holds_the_pipeline_tables() {
        let catalog = Catalog::builtin();
        for table in ["kubernetes_namespaces", "kubernetes_nodes", "kubernetes_pods", "kubernetes_pod_containers"] {
            assert!(catalog.resource_of(table).is_some(), "{table} missing");
        }
        let pods = catalog.resource_of("kubernetes_pod_containers").unwrap();
        assert_eq!(pods.job_table(), "kubernetes_pods");
        assert_eq!(pods.api.plural, "pods");
    }

    #[test]
    fn metric_tables_stay_in_the_catalog() {
        let catalog = Catalog::builtin();
        assert_eq!(catalog.metric_table("kubernetes_pod_containers"), "kubernetes_pod_containers");
        assert_eq!(catalog.metric_table("'; drop table runs"), "unknown");
        let kustomizations = "kubernetes_custom_resources/kustomize.toolkit.fluxcd.io/Kustomization";
        assert_eq!(catalog.metric_table(kustomizations), "kubernetes_custom_resources");
    }

    #[test]
    fn common_columns_lead_in_kubequery_order_and_can_be_overridden() {
        let catalog = Catalog::builtin();
        let containers = catalog.tables().find(|(_, t)| t.name == "kubernetes_pod_containers").unwrap().1;
        let names: Vec<&str> = containers.columns.iter().take(5).map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["uid", "cluster_name", "cluster_uid", "name", "namespace"]);
        assert_eq!(containers.columns[3].source, Source::Item(vec![Step::Key("name".into())]));
        let namespaces = catalog.tables().find(|(_, t)| t.name == "kubernetes_namespaces").unwrap().1;
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

    /// A catalog of one pods resource whose table `t` has `columns` (YAML flow items).
    fn entry(columns: &str) -> String {
        format!(
            "- api: {{version: v1, kind: Pod, plural: pods, namespaced: true}}\n  schedule: '0 * * * * *'\n  tables:\n  - name: t\n    columns: [{columns}]\n"
        )
    }

    #[test]
    fn functions_must_match_their_column_type_and_tables_find_their_namespace_column() {
        let err = Catalog::parse(&entry("'c text cores(spec.cpu)'"), &[]).unwrap_err().to_string();
        assert!(err.contains("declare the column double"), "{err}");
        let catalog = Catalog::parse(&entry("'c double cores(spec.cpu)', ['a text x', 'b int y']"), &[]).unwrap();
        let table = &catalog.resources[0].tables[0];
        assert!(table.has_column("a") && table.has_column("b") && table.has_column("c"));
        assert_eq!(table.namespace_column.as_ref().map(|c| c.0.as_str()), Some("namespace"));
        let builtin = Catalog::builtin();
        let namespaces = builtin.tables().find(|(_, t)| t.name == "kubernetes_namespaces").unwrap().1;
        assert_eq!(namespaces.namespace_column.as_ref().map(|c| c.0.as_str()), Some("name"));
        let nodes = builtin.tables().find(|(_, t)| t.name == "kubernetes_nodes").unwrap().1;
        assert!(nodes.namespace_column.is_none());
        let info = builtin.tables().find(|(_, t)| t.name == "kubernetes_info").unwrap().1;
        assert_eq!(info.columns[0].name, "cluster_name");
        assert!(!info.has_column("uid"));
    }

    #[test]
    fn bad_catalogs_are_rejected_with_the_reason() {
        let err = Catalog::parse(&entry("'x nosuchtype a.b'"), &[]).unwrap_err().to_string();
        assert!(err.contains("x nosuchtype a.b"), "{err}");
        let err = Catalog::parse(&entry("'image text item.image'"), &[]).unwrap_err().to_string();
        assert!(err.contains("need `rows`"), "{err}");
        let err = Catalog::parse(&entry("'a text x', 'a text y'"), &[]).unwrap_err().to_string();
        assert!(err.contains("declared twice"), "{err}");
        let err = Catalog::parse(&entry("'Bad text x'"), &[]).unwrap_err().to_string();
        assert!(err.contains("identifier"), "{err}");
        assert!(Catalog::parse(&entry("'phase text status.phase'"), &[]).is_ok());
    }
    #[test]
    fn a_custom_resources_file_adds_its_kinds_to_the_catalog_loaded_with_it() {
        let path = std::env::temp_dir().join(format!("kc-custom-resources-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(&path, "- {group: kafka.strimzi.io, kind: Kafka}\n").unwrap();
        let kafka = "kubernetes_custom_resources/kafka.strimzi.io/Kafka";
        assert!(Catalog::load(Some(&path)).unwrap().target(kafka).is_some());
        assert!(Catalog::load(None).unwrap().target(kafka).is_none(), "without the file, the embedded catalog");
        std::fs::write(&path, "- {group: kafka.strimzi.io, kind: Kafka}\n- {group: kafka.strimzi.io, kind: Kafka}\n")
            .unwrap();
        let err = Catalog::load(Some(&path)).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains(&path.display().to_string()) && err.contains("listed twice"), "{err}");
    }

    #[test]
    fn custom_kinds_are_added_or_take_the_catalogs_place_and_bad_ones_are_refused() {
        let kind = |group: &str, kind: &str, version: Option<&str>| CustomKind {
            group: group.into(),
            kind: kind.into(),
            version: version.map(Into::into),
            schedule: None,
            limit: None,
        };
        let kinds = [kind("kafka.strimzi.io", "Kafka", None), kind("cert-manager.io", "Certificate", Some("v1"))];
        let configured = Catalog::parse(CATALOG_YAML, &kinds).unwrap();
        let (_, kafka) = configured.target("kubernetes_custom_resources/kafka.strimzi.io/Kafka").unwrap();
        assert_eq!(kafka.schedule, "0 */5 * * * *", "the custom resources' schedule");
        let (_, certificate) = configured.target("kubernetes_custom_resources/cert-manager.io/Certificate").unwrap();
        assert_eq!(certificate.kind.as_ref().unwrap().version.as_deref(), Some("v1"));
        assert_eq!(configured.targets.len(), Catalog::builtin().targets.len() + 1, "one added, one replaced");
        for bad in
            [kind("Example_Group", "Widget", None), kind("example.com", "Wid.get", None), kind("", "Widget", None)]
        {
            let err = Catalog::parse(CATALOG_YAML, &[bad]).unwrap_err().to_string();
            assert!(err.contains("is not a kind"), "{err}");
        }
        let err = Catalog::parse(CATALOG_YAML, &[kinds[0].clone(), kinds[0].clone()]).unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
        let every = CustomKind { limit: Some(100), ..kind("*", "*", None) };
        let configured = Catalog::parse(CATALOG_YAML, std::slice::from_ref(&every)).unwrap();
        let (_, discovered) = configured.target("kubernetes_custom_resources/discovered").unwrap();
        assert!(discovered.kind.as_ref().unwrap().is_every_kind());
        for bad in [kind("*", "Widget", None), kind("*", "*", Some("v1")), CustomKind { limit: Some(0), ..every }] {
            let err = Catalog::parse(CATALOG_YAML, &[bad]).unwrap_err().to_string();
            assert!(err.contains("is not a kind"), "{err}");
        }
    }
}
