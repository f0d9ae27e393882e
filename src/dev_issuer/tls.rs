//! TLS of the dev issuer: a CA (kept in the state directory when given, so its PEM can sit in a trust's
//! `jwks.caBundle` across restarts) and a fresh serving certificate signed by it on every start.
use std::path::Path;
use std::sync::Arc;

use super::error::{DevIssuerError, io_err};
use super::state::{read_if_present, write_private};

fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "oam-trust dev-issuer CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
}

pub(super) struct TlsMaterial {
    pub(super) ca_pem: String,
    pub(super) server: rustls::ServerConfig,
}

/// Names the serving certificate covers: loopback, the issuer URL's host, and `extra`.
pub(super) fn serving_sans(issuer: &str, extra: &[String]) -> Vec<String> {
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = url_host(issuer) {
        sans.push(host);
    }
    sans.extend(extra.iter().cloned());
    sans.sort();
    sans.dedup();
    sans
}

fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// The CA (kept in the state dir when given) and a fresh serving certificate for `sans`.
pub(super) fn tls_material(
    dir: Option<&Path>,
    sans: Vec<String>,
) -> Result<TlsMaterial, DevIssuerError> {
    let tls = |e: &dyn std::fmt::Display| DevIssuerError::Tls(e.to_string());
    let stored = |name: &str| match dir {
        Some(dir) => read_if_present(&dir.join(name)),
        None => Ok(None),
    };
    let (ca_key, ca_pem) = match (stored("ca.key.pem")?, stored("ca.pem")?) {
        (Some(key), Some(cert)) => (rcgen::KeyPair::from_pem(&key).map_err(|e| tls(&e))?, cert),
        _ => {
            let key = rcgen::KeyPair::generate().map_err(|e| tls(&e))?;
            let cert = ca_params().self_signed(&key).map_err(|e| tls(&e))?.pem();
            if let Some(dir) = dir {
                write_private(&dir.join("ca.key.pem"), &key.serialize_pem())?;
                std::fs::write(dir.join("ca.pem"), &cert).map_err(io_err(&dir.join("ca.pem")))?;
            }
            (key, cert)
        }
    };
    let issuer = rcgen::Issuer::new(ca_params(), ca_key);
    let mut params = rcgen::CertificateParams::new(sans).map_err(|e| tls(&e))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "oam-trust dev-issuer");
    params.use_authority_key_identifier_extension = true;
    params
        .extended_key_usages
        .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let leaf_key = rcgen::KeyPair::generate().map_err(|e| tls(&e))?;
    let leaf = params.signed_by(&leaf_key, &issuer).map_err(|e| tls(&e))?;
    let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(&e))?
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key_der.into())
    .map_err(|e| tls(&e))?;
    Ok(TlsMaterial { ca_pem, server })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_certificate_names_loopback_the_issuer_host_and_extras_once() {
        let extra = vec!["issuer.test".to_string(), "localhost".into()];
        assert_eq!(
            serving_sans("https://issuer.test:8443/gitlab", &extra),
            ["127.0.0.1", "::1", "issuer.test", "localhost"]
        );
        assert_eq!(
            serving_sans("https://[fd00::1]:443", &[]),
            ["127.0.0.1", "::1", "fd00::1", "localhost"]
        );
        assert_eq!(url_host("http://plain.test"), None);
    }
}
