//! What `nsc` makes for NATS's decentralized authentication, made here with the `nkeys` crate
//! (nsc is not installed): an operator, its system account, an account with JetStream, a user, their JWTs, the
//! server settings that trust them, and the user's `.creds` file. The JWT format is the one of
//! <https://docs.nats.io/running-a-nats-service/configuration/securing_nats/jwt>: an `ed25519-nkey`
//! signed JWT whose `iss` is the signer's public key and `sub` the subject's.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use nkeys::KeyPair;
use serde_json::{Value, json};

/// An operator, its system account (which JetStream needs), one account and one user of that
/// account.
pub struct NatsAccounts {
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
    user: KeyPair,
}

impl NatsAccounts {
    /// Fresh keys.
    pub fn new() -> Self {
        Self {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
            user: KeyPair::new_user(),
        }
    }

    /// The nats-server settings trusting the operator and knowing the account (memory
    /// resolver).
    pub fn server_config(&self) -> anyhow::Result<String> {
        let operator_jwt = jwt(&self.operator, &self.operator.public_key(), "operator", json!({}))?;
        let limits = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1,
            "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
        });
        let account_jwt = jwt(&self.operator, &self.account.public_key(), "account", json!({ "limits": limits }))?;
        let system_jwt = jwt(&self.operator, &self.system.public_key(), "account", json!({}))?;
        let (account, system) = (self.account.public_key(), self.system.public_key());
        Ok(format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {system}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {account}: \"{account_jwt}\"\n  {system}: \"{system_jwt}\"\n}}\n"
        ))
    }

    /// The user's credentials file, as `nsc generate creds` writes it.
    pub fn user_creds(&self) -> anyhow::Result<String> {
        let limits = json!({ "subs": -1, "data": -1, "payload": -1 });
        let user_jwt = jwt(&self.account, &self.user.public_key(), "user", limits)?;
        let seed = self.user.seed()?;
        Ok(format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ))
    }
}

impl Default for NatsAccounts {
    fn default() -> Self {
        Self::new()
    }
}

/// A JWT of `kind` about `subject`, signed by `issuer`; `nats` are the kind's own claims.
fn jwt(issuer: &KeyPair, subject: &str, kind: &str, mut nats: Value) -> anyhow::Result<String> {
    nats["type"] = json!(kind);
    nats["version"] = json!(2);
    let claims = json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "name": format!("kubecensus-test-{kind}"),
        "sub": subject,
        "nats": nats,
    });
    let header = URL_SAFE_NO_PAD.encode(json!({ "typ": "JWT", "alg": "ed25519-nkey" }).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = issuer.sign(format!("{header}.{payload}").as_bytes())?;
    Ok(format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(signature)))
}
