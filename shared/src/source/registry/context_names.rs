//! Cluster names made from kubeconfig context names, as cloud CLIs write them.
//!
//! `aws eks update-kubeconfig` names a context `arn:aws:eks:<region>:<account>:cluster/<name>`
//! (`aws-cn`, `aws-us-gov` partitions alike); `gcloud container clusters get-credentials` names it
//! `gke_<project>_<location>_<name>`. The cluster's own name is the part people know, so it is
//! what the registry name is made from; any other context name is used whole. Names are then
//! made registry-safe ([`super::is_cluster_name`]), and a name that two contexts would share (two
//! accounts each with a `payments` cluster) gets a short hash of its whole context name, so every
//! context of a file gets its own name.

use std::collections::HashMap;

use super::MAX_NAME_LEN;

/// Hex digits of the hash that tells apart names that would collide or be cut.
const HASH_DIGITS: usize = 6;

/// One registry name per context, in order: distinct, registry-safe, recognisable.
pub fn cluster_names<'a>(contexts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let contexts: Vec<&str> = contexts.into_iter().collect();
    let bases: Vec<String> = contexts.iter().map(|context| base_name(context)).collect();
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for base in &bases {
        *uses.entry(base.as_str()).or_default() += 1;
    }
    contexts
        .iter()
        .zip(&bases)
        .map(|(context, base)| if uses[base.as_str()] > 1 { with_hash(base, context) } else { base.clone() })
        .collect()
}

/// The cluster's own name for a context name a cloud CLI wrote, else the whole context name;
/// made registry-safe, and cut to fit with a hash when too long.
fn base_name(context: &str) -> String {
    let own = eks_cluster(context).or_else(|| gke_cluster(context)).unwrap_or(context);
    let name = sanitized(own);
    if name.is_empty() {
        return with_hash("cluster", context);
    }
    if name.len() <= MAX_NAME_LEN { name } else { with_hash(&name, context) }
}

/// `<name>` of `arn:<partition>:eks:<region>:<account>:cluster/<name>`.
fn eks_cluster(context: &str) -> Option<&str> {
    let mut parts = context.strip_prefix("arn:")?.splitn(5, ':');
    let (_partition, service, _region, _account, resource) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (service == "eks").then_some(())?;
    resource.strip_prefix("cluster/").filter(|name| !name.is_empty())
}

/// `<name>` of `gke_<project>_<location>_<name>` (none of the three holds `_`).
fn gke_cluster(context: &str) -> Option<&str> {
    let parts: Vec<&str> = context.strip_prefix("gke_")?.split('_').collect();
    match parts.as_slice() {
        [project, location, name] if !project.is_empty() && !location.is_empty() && !name.is_empty() => Some(name),
        _ => None,
    }
}

/// Lower-case letters and digits kept, any other run of characters one `-`, none at the ends.
fn sanitized(text: &str) -> String {
    let mut name = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    name.trim_matches('-').to_owned()
}

/// `base` cut to fit, then `-` and a short hash of the whole `context`.
fn with_hash(base: &str, context: &str) -> String {
    let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(context.as_bytes()));
    let keep = MAX_NAME_LEN - 1 - HASH_DIGITS;
    let start = base[..base.len().min(keep)].trim_end_matches('-');
    format!("{start}-{}", &hash[..HASH_DIGITS])
}

#[cfg(test)]
mod tests {
    use super::{super::is_cluster_name, *};

    #[test]
    fn cloud_context_names_give_the_clusters_own_names_and_collisions_are_resolved() {
        let contexts = [
            "arn:aws:eks:eu-west-1:123456789012:cluster/payments-eu-1",
            "arn:aws:eks:eu-west-1:123456789012:cluster/payments-eu-2",
            "gke_shop-prod-123456_europe-west1-b_checkout-canary-1",
            "gke_shop-prod-123456_europe-west1-b_checkout-canary-2",
            "admin@kind-kind",
            "arn:aws-cn:eks:cn-north-1:210987654321:cluster/payments-eu-1",
        ];
        let names = cluster_names(contexts[..5].iter().copied());
        assert_eq!(
            names,
            ["payments-eu-1", "payments-eu-2", "checkout-canary-1", "checkout-canary-2", "admin-kind-kind"]
        );
        // Another account's payments-eu-1: both get a hash of their whole context name, whatever
        // the order, so a name never depends on which context came first.
        let names = cluster_names(contexts);
        assert_eq!(names[1..5], ["payments-eu-2", "checkout-canary-1", "checkout-canary-2", "admin-kind-kind"]);
        assert_ne!(names[0], names[5]);
        assert!([&names[0], &names[5]].iter().all(|name| name.starts_with("payments-eu-1-") && is_cluster_name(name)));
    }

    #[test]
    fn long_or_empty_names_stay_valid_and_distinct() {
        let long = ["x".repeat(80) + "-a", "x".repeat(80) + "-b", "@@@".to_owned()];
        let names = cluster_names(long.iter().map(String::as_str));
        assert!(names.iter().all(|name| is_cluster_name(name)), "{names:?}");
        assert_ne!(names[0], names[1]);
    }
}
