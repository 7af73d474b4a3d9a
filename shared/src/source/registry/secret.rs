//! Reading a cluster Secret of the home cluster ([`super::home`]), whatever its format: a data
//! key as text, the registry fields from its labels and annotations, the cluster's name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::context_names;

/// Labels and annotations under this prefix are registry fields: `fields.kubecensus.io/region`.
pub const FIELD_PREFIX: &str = "fields.kubecensus.io/";

/// A data key of a Secret as text; `None` when absent.
pub(super) fn data(secret: &Secret, key: &str) -> std::result::Result<Option<String>, String> {
    let Some(value) = secret.data.as_ref().and_then(|data| data.get(key)) else {
        return Ok(None);
    };
    String::from_utf8(value.0.clone()).map(Some).map_err(|_| format!("its `{key}` is not UTF-8 text"))
}

/// The registry fields of a Secret: its labels, then its annotations, under [`FIELD_PREFIX`].
pub(super) fn fields(secret: &Secret) -> BTreeMap<String, String> {
    let metadata = &secret.metadata;
    metadata
        .labels
        .iter()
        .chain(metadata.annotations.iter())
        .flatten()
        .filter_map(|(key, value)| Some((key.strip_prefix(FIELD_PREFIX)?.to_owned(), value.clone())))
        .collect()
}

/// A registry name for a name from a Secret, made as from a kubeconfig context name.
pub(super) fn cluster_name(name: &str) -> String {
    context_names::cluster_names([name]).remove(0)
}
