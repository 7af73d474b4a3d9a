//! Where a cluster is: its API server's URL as the `clusters` table shows it, the same for every
//! source (a `server:` entry, a `kubeconfig:` entry's context, an Argo CD Secret's `server`, a
//! Cluster API Secret's kubeconfig), so that one cluster declared in two places reads the same.
//!
//! The URL is normalized as RFC 3986 section 6 describes
//! (<https://www.rfc-editor.org/rfc/rfc3986#section-6.2.2>), through the `url` crate's parser:
//! scheme and host lower-cased (6.2.2.1), `.` and `..` segments removed (6.2.2.3), the scheme's
//! default port left out (`https://h:443` is `https://h`, 6.2.3), an IPv6 address in its
//! canonical form; percent-encodings are left as written (they hardly occur in a server URL). Beyond the RFC: any trailing `/` is removed, also after a path
//! (`https://rancher.example/k8s/clusters/c-1/` is `https://rancher.example/k8s/clusters/c-1`), as
//! client-go joins request paths onto the server's path either way and kubeconfigs write servers
//! without one; and a `user:password@` is left out, as the table never holds a credential.
//! Something that does not parse as a URL is shown as given, without surrounding whitespace.

use kube::config::Kubeconfig;
use secrecy::ExposeSecret;

use super::ClusterConfig;

/// `server` normalized (see the module documentation).
pub fn normalized(server: &str) -> String {
    let server = server.trim();
    let Ok(mut url) = url::Url::parse(server) else { return server.to_owned() };
    if url.cannot_be_a_base() {
        return server.to_owned();
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let mut text = url.to_string();
    // A query or fragment (never in a kubeconfig's server) keeps its slashes.
    let end = text.find(['?', '#']).unwrap_or(text.len());
    let path_end = text[..end].trim_end_matches('/').len();
    text.replace_range(path_end..end, "");
    text
}

impl ClusterConfig {
    /// Where the cluster is, normalized ([`normalized`]): its `server`, else the server of its
    /// kubeconfig's context (the entry's `context`, else the current one); `None` when that
    /// kubeconfig cannot be read or has no such context (its jobs say why).
    pub fn location(&self) -> Option<String> {
        if let Some(server) = &self.server {
            return Some(normalized(server));
        }
        let kubeconfig = match (&self.kubeconfig, &self.secret.kubeconfig) {
            (Some(path), _) => Kubeconfig::read_from(path).ok()?,
            (None, Some(text)) => Kubeconfig::from_yaml(text.expose_secret()).ok()?,
            (None, None) => return None,
        };
        let context_name = self.context.as_ref().or(kubeconfig.current_context.as_ref())?;
        let context = kubeconfig.contexts.iter().find(|c| &c.name == context_name)?.context.as_ref()?;
        let cluster = kubeconfig.clusters.iter().find(|c| c.name == context.cluster)?.cluster.as_ref()?;
        cluster.server.as_deref().map(normalized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_normalized_as_rfc_3986_says_and_without_a_trailing_slash() {
        let cases = [
            ("https://10.0.0.1:6443", "https://10.0.0.1:6443"),
            ("https://10.0.0.1:6443/", "https://10.0.0.1:6443"),
            (" HTTPS://API.Example.COM:443/ ", "https://api.example.com"),
            ("http://h:80", "http://h"),
            ("https://h:8443//", "https://h:8443"),
            ("https://rancher.example/k8s/clusters/c-1/", "https://rancher.example/k8s/clusters/c-1"),
            ("https://h/a/./b/../c", "https://h/a/c"),
            ("https://h/%7euser", "https://h/%7euser"),
            ("https://[FD00::1]:6443/", "https://[fd00::1]:6443"),
            ("https://admin:s3cret@h:6443", "https://h:6443"),
            ("https://ABC.gr7.eu-west-1.eks.amazonaws.com", "https://abc.gr7.eu-west-1.eks.amazonaws.com"),
            ("not a url", "not a url"),
        ];
        for (server, expected) in cases {
            assert_eq!(normalized(server), expected, "{server}");
        }
    }

    #[test]
    fn a_kubeconfig_clusters_location_is_its_contexts_server() {
        let path = std::env::temp_dir().join(format!("kc-location-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\n\
             clusters: [{name: a, cluster: {server: 'https://A.example:443/'}}, {name: b, cluster: {server: 'https://b:6443'}}]\n\
             users: [{name: u, user: {token: t}}]\n\
             contexts: [{name: a, context: {cluster: a, user: u}}, {name: b, context: {cluster: b, user: u}}]\n",
        )
        .unwrap();
        let mut cluster =
            ClusterConfig { name: "a".into(), kubeconfig: Some(path.clone()), ..ClusterConfig::default() };
        assert_eq!(cluster.location().as_deref(), Some("https://a.example"));
        cluster.context = Some("b".into());
        assert_eq!(cluster.location().as_deref(), Some("https://b:6443"));
        cluster.context = Some("gone".into());
        assert_eq!(cluster.location(), None);
        std::fs::remove_file(path).unwrap();
    }
}
