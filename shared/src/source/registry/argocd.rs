//! Clusters from Argo CD cluster Secrets: Secrets labelled `argocd.argoproj.io/secret-type:
//! cluster`, with the keys `name`, `server` and `config`, a JSON document
//! (<https://argo-cd.readthedocs.io/en/stable/operator-manual/declarative-setup/#clusters>):
//!
//! ```json
//! {"bearerToken": "...",
//!  "tlsClientConfig": {"caData": "<base64 PEM>", "certData": "<base64 PEM>", "keyData": "<base64 PEM>",
//!                      "insecure": false, "serverName": "..."},
//!  "execProviderConfig": {"command": "...", "args": [], "env": {}, "apiVersion": "..."},
//!  "awsAuthConfig": {"clusterName": "...", "roleARN": "...", "profile": "..."}}
//! ```
//!
//! The optional keys `namespaces` (comma-separated) and `clusterResources` (`"true"`) say the
//! cluster is read only in those namespaces, and whether its cluster-scoped resources are read
//! too, as Argo CD manages such a cluster (argoproj/argo-cd #2289, #3838): the registry's
//! [`ClusterConfig::namespaces`] and [`ClusterConfig::cluster_resources`].
//!
//! `awsAuthConfig` becomes the exec plugin `aws eks get-token --cluster-name <clusterName>
//! [--role-arn <roleARN>]` (with `AWS_PROFILE` set to `profile`), which prints the same token
//! Argo CD's `argocd-k8s-auth aws` does. Basic authentication (`username`, `password`) is not
//! supported: such a Secret is reported.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use k8s_openapi::api::core::v1::Secret;
use secrecy::SecretString;
use serde::Deserialize;

use super::{ClusterConfig, ExecPlugin, SecretCredentials, secret};

/// The label that marks an Argo CD cluster Secret, and its value.
pub const SECRET_TYPE_SELECTOR: &str = "argocd.argoproj.io/secret-type=cluster";

/// The `config` key: a subset of client-go's `rest.Config`, as Argo CD's `ClusterConfig`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    bearer_token: Option<String>,
    username: Option<String>,
    password: Option<String>,
    #[serde(default)]
    tls_client_config: TlsClientConfig,
    exec_provider_config: Option<ExecProviderConfig>,
    aws_auth_config: Option<AwsAuthConfig>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlsClientConfig {
    #[serde(default)]
    insecure: bool,
    server_name: Option<String>,
    ca_data: Option<String>,
    cert_data: Option<String>,
    key_data: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecProviderConfig {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    api_version: Option<String>,
}

#[derive(Deserialize)]
struct AwsAuthConfig {
    #[serde(rename = "clusterName")]
    cluster_name: String,
    #[serde(rename = "roleARN")]
    role_arn: Option<String>,
    profile: Option<String>,
}

/// The ExecCredential version `aws eks get-token` prints.
const AWS_EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1beta1";

/// The cluster an Argo CD cluster Secret declares, named after its `name` key as a kubeconfig
/// context name is ([`super::context_names`]). The error never quotes a value of the Secret.
pub fn cluster(secret: &Secret) -> Result<ClusterConfig, String> {
    let name = secret::data(secret, "name")?.ok_or("it has no `name` key")?;
    let server = secret::data(secret, "server")?.ok_or("it has no `server` key")?;
    let config = secret::data(secret, "config")?.unwrap_or_else(|| "{}".to_owned());
    // serde_json's messages can quote a value: only the position is told.
    let config: Config = serde_json::from_str(&config).map_err(|err| {
        format!("its `config` is not valid Argo CD cluster config (line {}, column {})", err.line(), err.column())
    })?;
    if config.username.is_some() || config.password.is_some() {
        return Err("basic authentication (username, password) is not supported".into());
    }
    let tls = config.tls_client_config;
    let decoded = |key: &str, value: Option<String>| -> Result<Option<String>, String> {
        value
            .map(|text| {
                let bytes = STANDARD.decode(text.trim()).map_err(|_| format!("tlsClientConfig.{key} is not base64"))?;
                String::from_utf8(bytes).map_err(|_| format!("tlsClientConfig.{key} is not PEM text"))
            })
            .transpose()
    };
    let client_certificate = match (decoded("certData", tls.cert_data)?, decoded("keyData", tls.key_data)?) {
        (Some(certificate), Some(key)) => Some((certificate, SecretString::from(key))),
        (None, None) => None,
        _ => return Err("tlsClientConfig needs both certData and keyData".into()),
    };
    let exec = match (config.exec_provider_config, config.aws_auth_config) {
        (Some(_), Some(_)) => return Err("give execProviderConfig or awsAuthConfig, not both".into()),
        (Some(exec), None) => Some(ExecPlugin {
            command: exec.command,
            args: exec.args,
            env: exec.env,
            api_version: exec.api_version.unwrap_or_else(|| super::credentials::EXEC_API_VERSION.to_owned()),
        }),
        (None, Some(aws)) => Some(aws_exec(aws)),
        (None, None) => None,
    };
    let namespaces: Vec<String> = secret::data(secret, "namespaces")?
        .map(|list| list.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    // Argo CD reads `clusterResources` as `string(secret.Data["clusterResources"]) == "true"`,
    // and only where `namespaces` is set.
    let cluster_resources =
        !namespaces.is_empty() && secret::data(secret, "clusterResources")?.is_some_and(|value| value == "true");
    Ok(ClusterConfig {
        name: secret::cluster_name(&name),
        namespaces,
        cluster_resources,
        server: Some(server),
        ca_data: decoded("caData", tls.ca_data)?,
        tls_server_name: tls.server_name,
        insecure_skip_tls_verify: tls.insecure,
        exec,
        fields: secret::fields(secret),
        secret: SecretCredentials {
            token: config.bearer_token.map(SecretString::from),
            client_certificate,
            kubeconfig: None,
        },
        ..ClusterConfig::default()
    })
}

/// `aws eks get-token`, as Argo CD runs `argocd-k8s-auth aws`.
fn aws_exec(aws: AwsAuthConfig) -> ExecPlugin {
    let mut args = vec!["eks".to_owned(), "get-token".to_owned(), "--cluster-name".to_owned(), aws.cluster_name];
    if let Some(role) = aws.role_arn {
        args.extend(["--role-arn".to_owned(), role]);
    }
    ExecPlugin {
        command: "aws".to_owned(),
        args,
        env: aws.profile.map(|profile| ("AWS_PROFILE".to_owned(), profile)).into_iter().collect(),
        api_version: AWS_EXEC_API_VERSION.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    fn secret(data: serde_json::Value) -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": "prod", "namespace": "argocd",
                         "labels": {"argocd.argoproj.io/secret-type": "cluster", "fields.kubecensus.io/region": "eu"},
                         "annotations": {"fields.kubecensus.io/team": "payments"}},
            "data": data,
        }))
        .unwrap()
    }

    fn b64(text: &str) -> String {
        STANDARD.encode(text)
    }

    #[test]
    fn a_bearer_token_secret_with_tls_settings_and_fields() {
        let config =
            json!({"bearerToken": "tok-1", "tlsClientConfig": {"caData": b64("CA PEM"), "serverName": "api.internal"}});
        let cluster = cluster(&secret(json!({
            "name": b64("arn:aws:eks:eu-west-1:1:cluster/Prod-EU"), "server": b64("https://10.0.0.1"),
            "config": b64(&config.to_string()),
        })))
        .unwrap();
        assert_eq!(cluster.name, "prod-eu");
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1"));
        assert_eq!(cluster.ca_data.as_deref(), Some("CA PEM"));
        assert_eq!(cluster.tls_server_name.as_deref(), Some("api.internal"));
        assert_eq!(cluster.secret.token.as_ref().unwrap().expose_secret(), "tok-1");
        assert_eq!(
            cluster.fields,
            BTreeMap::from([("region".into(), "eu".into()), ("team".into(), "payments".into())])
        );
        cluster.check().unwrap();
        assert!(!format!("{cluster:?}").contains("tok-1"));
    }

    #[test]
    fn aws_auth_becomes_aws_eks_get_token_and_exec_and_certificates_carry_over() {
        let config =
            json!({"awsAuthConfig": {"clusterName": "shop", "roleARN": "arn:aws:iam::1:role/r", "profile": "p"}});
        let data = json!({"name": b64("shop"), "server": b64("https://x"), "config": b64(&config.to_string())});
        let exec = cluster(&secret(data)).unwrap().exec.unwrap();
        assert_eq!(exec.command, "aws");
        assert_eq!(exec.args, ["eks", "get-token", "--cluster-name", "shop", "--role-arn", "arn:aws:iam::1:role/r"]);
        assert_eq!(exec.env["AWS_PROFILE"], "p");

        let config = json!({"execProviderConfig": {"command": "/bin/plugin", "args": ["a"], "apiVersion": "client.authentication.k8s.io/v1"},
                            "tlsClientConfig": {"certData": b64("CERT"), "keyData": b64("KEY")}});
        let data = json!({"name": b64("a"), "server": b64("https://x"), "config": b64(&config.to_string())});
        let cluster = cluster(&secret(data)).unwrap();
        assert_eq!(cluster.exec.unwrap().command, "/bin/plugin");
        assert_eq!(cluster.secret.client_certificate.unwrap().0, "CERT");
    }

    #[test]
    fn namespaces_and_cluster_resources_say_where_the_cluster_is_read() {
        let data = |extra: serde_json::Value| {
            let mut data = json!({"name": b64("a"), "server": b64("https://x"), "config": b64("{}")});
            data.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            data
        };
        let scoped =
            cluster(&secret(data(json!({"namespaces": b64("team-a, team-b,"), "clusterResources": b64("false")}))))
                .unwrap();
        assert_eq!(scoped.namespaces, ["team-a", "team-b"]);
        assert!(!scoped.cluster_resources);
        assert!(scoped.cluster_scoped_skipped().unwrap().contains("read only in namespaces team-a, team-b"));
        let with_cluster =
            cluster(&secret(data(json!({"namespaces": b64("a"), "clusterResources": b64("true")})))).unwrap();
        assert!(with_cluster.cluster_resources && with_cluster.cluster_scoped_skipped().is_none());
        let everywhere = cluster(&secret(data(json!({"clusterResources": b64("true")})))).unwrap();
        assert!(everywhere.namespaces.is_empty() && !everywhere.cluster_resources, "clusterResources needs namespaces");
    }

    #[test]
    fn malformed_secrets_say_why_without_quoting_values() {
        let cases = [
            (json!({"server": b64("https://x")}), "no `name`"),
            (json!({"name": b64("a"), "server": b64("https://x"), "config": b64("{\"bearerToken\": 7}")}), "not valid"),
            (json!({"name": b64("a"), "server": b64("https://x"), "config": b64("{\"password\": \"pw-9\"}")}), "basic"),
            (
                json!({"name": b64("a"), "server": b64("https://x"), "config": b64("{\"tlsClientConfig\": {\"certData\": \"Q0VSVA==\"}}")}),
                "both certData and keyData",
            ),
        ];
        for (data, why) in cases {
            let err = cluster(&secret(data.clone())).unwrap_err();
            assert!(err.contains(why), "{data}: {err}");
            assert!(!err.contains("pw-9"));
        }
    }
}
