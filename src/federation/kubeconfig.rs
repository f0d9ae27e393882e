//! The kubeconfig an exchange hands out: which API server (and CA) it points at, and the document for
//! one token as one grant's ServiceAccount. No client: the endpoint is read from flags or the
//! operator's own kube config once, at start.
use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::args::ExchangeArgs;
use crate::access::Grant;

/// The API server written into issued kubeconfigs.
#[derive(Clone, Debug)]
pub struct ClusterEndpoint {
    /// URL without a trailing slash.
    pub server: String,
    /// PEM CA bundle, when the API server's certificate needs one.
    pub ca_pem: Option<String>,
}

impl ClusterEndpoint {
    /// `--exchange-api-server` and `--exchange-api-server-ca`, else what the operator itself uses.
    pub fn resolve(args: &ExchangeArgs, kube_config: &kube::Config) -> anyhow::Result<Self> {
        let server = args
            .exchange_api_server
            .clone()
            .unwrap_or_else(|| kube_config.cluster_url.to_string())
            .trim_end_matches('/')
            .to_string();
        let ca_pem =
            match &args.exchange_api_server_ca {
                Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                    format!("reading --exchange-api-server-ca {}", path.display())
                })?),
                None => kube_config.root_cert.as_ref().map(|certs| {
                    certs
                        .iter()
                        .map(|der| pem_block("CERTIFICATE", der))
                        .collect::<String>()
                }),
            };
        Ok(ClusterEndpoint { server, ca_pem })
    }

    /// The kubeconfig for `token`, as `user` (the grant's ServiceAccount), namespaced to the grant.
    pub fn kubeconfig(&self, grant: &Grant, user: &str, token: &str) -> String {
        kubeconfig(&self.server, self.ca_pem.as_deref(), grant, user, token)
    }
}

/// A kubeconfig for `token` as the grant's ServiceAccount, namespaced to the grant.
pub fn kubeconfig(
    server: &str,
    ca_pem: Option<&str>,
    grant: &Grant,
    user: &str,
    token: &str,
) -> String {
    let mut cluster = json!({"server": server});
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] = Value::String(STANDARD.encode(ca));
    }
    let context = format!("oam-trust-{}-{}", grant.namespace, grant.application);
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "oam-trust", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": "oam-trust", "user": user, "namespace": grant.namespace}}],
        "current-context": context,
    });
    serde_yaml_ng::to_string(&doc).unwrap_or_default()
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_wrap_at_64_columns() {
        let pem = pem_block("CERTIFICATE", &[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert_eq!(lines[1].len(), 64);
        assert_eq!(
            STANDARD.decode(lines[1..lines.len() - 1].concat()).unwrap(),
            vec![0u8; 100]
        );
    }
}
