//! The query string the API and the page share (so a page's URL is its filter, shareable):
//! `source`, `cluster`, `namespace`, `group`, `kind`, `health` (each repeatable, any value
//! matches), `field.<name>` (a cluster or namespace field), `name` (a name prefix), `selector` (a
//! Kubernetes label selector), `sort`, `cursor`, `limit`.

use kubecensus::{
    Error,
    store::explore::{Cursor, Filter, Sort, Source, list::PageRequest},
};

/// Rows per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;

/// The prefix of a field filter's parameter.
const FIELD_PREFIX: &str = "field.";

/// Parses the query string's pairs into a request.
///
/// # Errors
/// [`Error::Query`] naming the parameter that cannot be used.
pub fn page_request(pairs: &[(String, String)]) -> Result<PageRequest, Error> {
    let mut request = PageRequest { limit: DEFAULT_LIMIT, ..PageRequest::default() };
    let mut cursor = None;
    let mut filter = Filter::default();
    for (name, value) in pairs {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match name.as_str() {
            "source" => request.source = word::<Source>(name, value)?,
            "sort" => request.sort = word::<Sort>(name, value)?,
            "cluster" => filter.clusters.push(value.to_owned()),
            "namespace" => filter.namespaces.push(value.to_owned()),
            "group" => filter.api_groups.push(value.to_owned()),
            "kind" => filter.kinds.push(value.to_owned()),
            "health" => filter.health.push(value.to_owned()),
            "name" => filter.name_prefix = Some(value.to_owned()),
            "selector" => filter = filter.with_selector(value)?,
            "cursor" => cursor = Some(value.to_owned()),
            "limit" => {
                request.limit =
                    value.parse().map_err(|_| Error::Query(format!("limit `{value}` is not a whole number")))?
            }
            _ => match name.strip_prefix(FIELD_PREFIX) {
                Some(field) => filter.fields.push((field.to_owned(), value.to_owned())),
                None => return Err(Error::Query(format!("unknown parameter `{name}`"))),
            },
        }
    }
    // A group filter of the core group is the empty string: `group=core` says it.
    for group in &mut filter.api_groups {
        if group == "core" {
            group.clear();
        }
    }
    request.filter = filter;
    request.cursor = cursor.map(|text| Cursor::decode(&text, request.sort)).transpose()?;
    Ok(request)
}

/// A lower-case word of an enum (`unhealthy`, `kind`).
fn word<T: serde::de::DeserializeOwned>(name: &str, value: &str) -> Result<T, Error> {
    serde_json::from_value(serde_json::Value::String(value.to_owned()))
        .map_err(|_| Error::Query(format!("{name} `{value}` is not one of the values the API documents")))
}

/// The pairs without `cursor` and with `extra` set (replacing any of the same names), as a query
/// string: the links of a page keep its filter.
pub fn with(pairs: &[(String, String)], extra: &[(&str, &str)]) -> String {
    let kept = pairs
        .iter()
        .filter(|(name, value)| name != "cursor" && !value.is_empty() && !extra.iter().any(|(n, _)| n == name))
        .map(|(name, value)| (name.as_str(), value.as_str()));
    let all: Vec<(&str, &str)> = kept.chain(extra.iter().copied().filter(|(_, value)| !value.is_empty())).collect();
    serde_urlencoded::to_string(all).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(text).unwrap()
    }

    #[test]
    fn every_parameter_and_the_errors_that_name_one() {
        let request = page_request(&pairs(
            "source=all&cluster=a&cluster=b&field.region=eu&group=core&kind=Pod&health=Failed&name=web&selector=app%3Dx&sort=kind&limit=10",
        ))
        .unwrap();
        assert_eq!(request.source, Source::All);
        assert_eq!(request.sort, Sort::Kind);
        assert_eq!(request.limit, 10);
        assert_eq!(request.filter.clusters, ["a", "b"]);
        assert_eq!(request.filter.fields, [("region".to_owned(), "eu".to_owned())]);
        assert_eq!(request.filter.api_groups, [""]);
        assert_eq!(request.filter.name_prefix.as_deref(), Some("web"));
        assert_eq!(request.filter.selector.len(), 1);
        for bad in ["sort=size", "source=some", "limit=x", "colour=red", "selector=a%20in%20x", "cursor=zz"] {
            assert!(page_request(&pairs(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn links_keep_the_filter_and_drop_the_cursor() {
        let query = with(&pairs("kind=Pod&cursor=abc&limit=5&name="), &[("cursor", "def"), ("limit", "50")]);
        assert_eq!(query, "kind=Pod&cursor=def&limit=50");
    }
}
