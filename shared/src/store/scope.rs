//! Which of a cluster's rows one job replaces ([`Scope`]): all of them for a catalog resource,
//! one custom kind's, or those of every custom kind without a job of its own, and the SQL
//! condition and parameters that select them.

use sqlx::{Arguments, postgres::PgArguments};

use super::sql::Ident;
use crate::{
    Error, Result,
    model::catalog::{Catalog, CustomKind, GROUP_COLUMN, KIND_COLUMN, Target},
};

/// Which of a cluster's rows one job replaces, and the name its snapshot goes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The job target's name (`Job::table`): the key of its snapshot and of its advisory lock.
    pub name: String,
    /// Columns and the values that select the scope's rows; none: every row of the cluster.
    pub filters: Vec<(&'static str, String)>,
    /// Custom kinds (`group/Kind`) whose rows are outside the scope: those with a target of their
    /// own, for the target of every other kind.
    pub excluded_kinds: Vec<String>,
}

impl Scope {
    /// The rows of a target of `catalog`: all of the cluster's, one custom kind's, or, for the
    /// target of every other kind, those of the kinds without a target of their own.
    pub fn of(catalog: &Catalog, target: &Target) -> Self {
        let (filters, excluded_kinds) = match &target.kind {
            None => (Vec::new(), Vec::new()),
            Some(kind) if kind.is_every_kind() => {
                let named = catalog.targets.iter().filter_map(|t| t.kind.as_ref()).filter(|k| !k.is_every_kind());
                (Vec::new(), named.map(CustomKind::key).collect())
            }
            Some(kind) => (vec![(GROUP_COLUMN, kind.group.clone()), (KIND_COLUMN, kind.kind.clone())], Vec::new()),
        };
        Self { name: target.name.clone(), filters, excluded_kinds }
    }

    /// The snapshot name of the scope's rows of `table`: the table's, or the scope's own when it
    /// is a part of the table.
    pub(super) fn snapshot_name<'s>(&'s self, table: &'s str) -> &'s str {
        if self.filters.is_empty() && self.excluded_kinds.is_empty() { table } else { &self.name }
    }

    /// `AND "col" = $n ...` for the filters, then `AND "api_group" || '/' || "kind" <> ALL($m)`
    /// for the excluded kinds, parameters numbered from `first`.
    pub(super) fn condition(&self, first: usize) -> String {
        let mut condition: String = self
            .filters
            .iter()
            .enumerate()
            .map(|(i, (column, _))| format!(" AND {} = ${}", Ident::derived(&[column]), first + i))
            .collect();
        if !self.excluded_kinds.is_empty() {
            condition.push_str(&format!(
                " AND {} || '/' || {} <> ALL(${})",
                Ident::derived(&[GROUP_COLUMN]),
                Ident::derived(&[KIND_COLUMN]),
                first + self.filters.len()
            ));
        }
        condition
    }

    /// The parameters of a statement selecting the scope's rows of `cluster`: `$1` the cluster,
    /// then the filters' values and the excluded kinds (see [`Self::condition`]).
    pub(super) fn arguments(&self, cluster: &str) -> Result<PgArguments> {
        let mut arguments = PgArguments::default();
        let bad = |err: sqlx::error::BoxDynError| Error::Sql(sqlx::Error::Encode(err));
        arguments.add(cluster.to_owned()).map_err(bad)?;
        for (_, value) in &self.filters {
            arguments.add(value.clone()).map_err(bad)?;
        }
        if !self.excluded_kinds.is_empty() {
            arguments.add(self.excluded_kinds.clone()).map_err(bad)?;
        }
        Ok(arguments)
    }
}
