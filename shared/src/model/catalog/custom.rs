//! Custom resources in the catalog, and job targets.
//!
//! A `source: custom` resource fills one table (`kubernetes_custom_resources`) from several
//! kinds, each chosen by API group and kind (`kinds`). Each kind is its own job target
//! (`kubernetes_custom_resources/<group>/<Kind>`), with its own schedule, and replaces only its
//! own rows: those whose [`GROUP_COLUMN`] and [`KIND_COLUMN`] are its group and kind. One more
//! entry, `{group: '*', kind: '*'}` ([`EVERY_KIND`]), is the target
//! `kubernetes_custom_resources/discovered`: the objects of every CRD a cluster defines whose
//! kind has no entry of its own, replacing the rows of every such kind. Every other resource is
//! one target named by its job table.

use serde::Deserialize;

use super::{Catalog, Resource, ResourceSource};
use crate::{Error, Result};

/// The column of a custom resource's API group; one kind's job replaces only its rows.
pub const GROUP_COLUMN: &str = "api_group";
/// The column of a custom resource's kind; one kind's job replaces only its rows.
pub const KIND_COLUMN: &str = "kind";

/// A custom resource kind, chosen by API group and kind.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CustomKind {
    pub group: String,
    pub kind: String,
    /// The version to list; the group's preferred version (discovery) when absent.
    #[serde(default)]
    pub version: Option<String>,
    /// Its own cron schedule; the resource's when absent.
    #[serde(default)]
    pub schedule: Option<String>,
    /// List at most this many objects of the kind (the first pages of its list); every object
    /// when absent.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// The group and kind of the entry that stands for every other kind: `{group: '*', kind: '*'}`
/// collects the objects of every CRD a cluster defines whose kind has no entry of its own.
pub const EVERY_KIND: &str = "*";

/// The name of the target of [`EVERY_KIND`], after the table: `kubernetes_custom_resources/discovered`.
const DISCOVERED: &str = "discovered";

impl CustomKind {
    /// Whether this entry stands for every kind without an entry of its own ([`EVERY_KIND`]).
    pub fn is_every_kind(&self) -> bool {
        self.group == EVERY_KIND && self.kind == EVERY_KIND
    }

    /// `group/Kind`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.kind)
    }
}

/// What one job lists: a catalog resource, or one kind of custom resources.
#[derive(Debug, Clone)]
pub struct Target {
    /// The job's name, in its message and subject: the resource's job table, or
    /// `kubernetes_custom_resources/<group>/<Kind>`.
    pub name: String,
    /// The default cron schedule.
    pub schedule: String,
    /// The index of the resource in [`Catalog::resources`].
    resource: usize,
    /// The custom kind, for a `source: custom` resource.
    pub kind: Option<CustomKind>,
}

/// Adds `kinds` to the `source: custom` resource's, each in place of the one of the same group
/// and kind if there is one.
///
/// # Errors
/// [`Error::Catalog`] for a kind listed twice in `kinds`, or when the catalog has no `source:
/// custom` resource.
pub(super) fn add_kinds(resources: &mut [Resource], kinds: &[CustomKind]) -> Result<()> {
    if kinds.is_empty() {
        return Ok(());
    }
    let resource = resources
        .iter_mut()
        .find(|resource| resource.source == ResourceSource::Custom)
        .ok_or_else(|| Error::Catalog("the catalog has no `source: custom` resource to add kinds to".into()))?;
    for (i, kind) in kinds.iter().enumerate() {
        if kinds[..i].iter().any(|k| k.group == kind.group && k.kind == kind.kind) {
            return Err(Error::Catalog(format!("kind `{}` of `{}` is listed twice", kind.kind, kind.group)));
        }
        match resource.kinds.iter_mut().find(|k| k.group == kind.group && k.kind == kind.kind) {
            Some(same) => *same = kind.clone(),
            None => resource.kinds.push(kind.clone()),
        }
    }
    Ok(())
}

/// Reads a custom resources file: a YAML list of kinds, each `{group, kind}` with an optional
/// `version` and `schedule`, as the catalog's `kinds`.
///
/// # Errors
/// [`Error::ReadFile`] or [`Error::Yaml`] naming the file, when it cannot be read or is not such a list.
pub fn read_kinds(path: &std::path::Path) -> Result<Vec<CustomKind>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        what: "custom resources file",
        path: path.to_owned(),
        source,
    })?;
    serde_norway::from_str(&text).map_err(|source| Error::Yaml {
        what: format!(
            "custom resources file {} (a list of {{group, kind, version?, schedule?, limit?}})",
            path.display()
        ),
        source,
    })
}

/// Checks a resource's `api` and `kinds` against its source.
pub(super) fn check(resource: &Resource) -> Result<()> {
    let custom = resource.source == ResourceSource::Custom;
    let name = &resource.tables[0].name;
    if !custom {
        if resource.api.kind.is_empty() || !resource.kinds.is_empty() {
            return Err(Error::Catalog(format!("{name}: a resource names its `api` and has no `kinds`")));
        }
        return Ok(());
    }
    if !resource.api.kind.is_empty() || resource.kinds.is_empty() || resource.tables.len() != 1 {
        return Err(Error::Catalog(format!("{name}: a custom resource has `kinds`, no `api`, and one table")));
    }
    for column in [GROUP_COLUMN, KIND_COLUMN] {
        if !resource.tables[0].has_column(column) {
            return Err(Error::Catalog(format!("{name}: a custom resource table needs the column {column}")));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for kind in &resource.kinds {
        let every = kind.is_every_kind() && kind.version.is_none();
        let named = is_group(&kind.group) && is_kind(&kind.kind) && kind.version.as_deref().is_none_or(is_kind);
        if (!every && !named) || kind.limit == Some(0) {
            return Err(Error::Catalog(format!(
                "{name}: `{}` of group `{}` (version {:?}, limit {:?}) is not a kind: an API group is a DNS \
                 subdomain (RFC 1123: lowercase letters, digits, '-', '.'), a kind and a version are letters and \
                 digits, a limit is at least 1; `{{group: '*', kind: '*'}}` (no version) is every other kind",
                kind.kind.escape_debug(),
                kind.group.escape_debug(),
                kind.version,
                kind.limit
            )));
        }
        if !seen.insert((&kind.group, &kind.kind)) {
            return Err(Error::Catalog(format!("{name}: kind `{}` of `{}` is listed twice", kind.kind, kind.group)));
        }
        if let Some(schedule) = &kind.schedule {
            cron::Schedule::try_from(schedule.as_str())
                .map_err(|err| Error::Catalog(format!("{name}: {}: schedule `{schedule}`: {err}", kind.key())))?;
        }
    }
    Ok(())
}

/// An API group's name: a DNS subdomain (RFC 1123), as the Kubernetes API conventions require.
fn is_group(group: &str) -> bool {
    !group.is_empty()
        && group.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// A kind (CamelCase, `HelmRelease`) or a version (`v2beta1`): a letter, then letters and digits.
fn is_kind(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Every resource's targets, in catalog order.
pub(super) fn targets(resources: &[Resource]) -> Vec<Target> {
    let mut targets = Vec::new();
    for (index, resource) in resources.iter().enumerate() {
        if resource.source != ResourceSource::Custom {
            let name = resource.job_table().to_owned();
            targets.push(Target { name, schedule: resource.schedule.clone(), resource: index, kind: None });
            continue;
        }
        for kind in &resource.kinds {
            let part = if kind.is_every_kind() { DISCOVERED.to_owned() } else { kind.key() };
            targets.push(Target {
                name: format!("{}/{part}", resource.job_table()),
                schedule: kind.schedule.clone().unwrap_or_else(|| resource.schedule.clone()),
                resource: index,
                kind: Some(kind.clone()),
            });
        }
    }
    targets
}

impl Catalog {
    /// The target named `name` (a job's `table`), with its resource.
    pub fn target(&self, name: &str) -> Option<(&Resource, &Target)> {
        self.targets.iter().find(|t| t.name == name).map(|t| (&self.resources[t.resource], t))
    }

    /// The targets that fill `table` (any table of a resource, or a target's own name): one for
    /// most resources, one per kind for custom resources; none for an unknown name.
    pub fn targets_of(&self, table: &str) -> Vec<&Target> {
        if let Some((_, target)) = self.target(table) {
            return vec![target];
        }
        let Some(index) = self.resources.iter().position(|r| r.tables.iter().any(|t| t.name == table)) else {
            return Vec::new();
        };
        self.targets.iter().filter(|t| t.resource == index).collect()
    }
}
