//! Signing keys: one RSA (RS256, what GitLab uses) and one EC P-256 (ES256) key, their JWKs with RFC 7638
//! thumbprints as `kid`, persistence in the state directory, rotation, and the published JWKS.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::DevIssuerError;
use super::state::{read_if_present, write_private};

/// Kind of signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// RSA 2048, RS256 (what GitLab uses).
    #[default]
    Rsa,
    /// EC P-256, ES256.
    Ec,
}

impl KeyKind {
    fn slot(self) -> &'static str {
        match self {
            KeyKind::Rsa => "rsa",
            KeyKind::Ec => "ec",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "signing-rsa.pem",
            KeyKind::Ec => "signing-ec.pem",
        }
    }
}

/// One signing key with everything minting and the JWKS need of it.
pub(super) struct SigningKey {
    pub(super) kind: KeyKind,
    pub(super) kid: String,
    pub(super) encoding: EncodingKey,
    pub(super) jwk: Value,
    /// The public key as PEM: the secret of the HS256 key-confusion attack tokens.
    pub(super) public_pem: String,
    private_pem: String,
}

impl SigningKey {
    pub(super) fn generate(kind: KeyKind) -> Result<SigningKey, DevIssuerError> {
        match kind {
            KeyKind::Rsa => {
                let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                    .map_err(|e| DevIssuerError::Key(e.to_string()))?;
                let pem = key
                    .to_pkcs1_pem(LineEnding::LF)
                    .map_err(|e| DevIssuerError::Key(e.to_string()))?;
                SigningKey::from_pem(kind, &pem)
            }
            KeyKind::Ec => {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| DevIssuerError::Key(e.to_string()))?;
                SigningKey::from_pem(kind, &key.serialize_pem())
            }
        }
    }

    fn from_pem(kind: KeyKind, private_pem: &str) -> Result<SigningKey, DevIssuerError> {
        let key_err = |e: &dyn std::fmt::Display| DevIssuerError::Key(format!("{kind:?} key: {e}"));
        let (encoding, mut jwk, public_pem) = match kind {
            KeyKind::Rsa => {
                let key =
                    rsa::RsaPrivateKey::from_pkcs1_pem(private_pem).map_err(|e| key_err(&e))?;
                let public = key.to_public_key();
                let jwk = json!({
                    "kty": "RSA",
                    "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
                    "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                });
                let public_pem = public
                    .to_public_key_pem(LineEnding::LF)
                    .map_err(|e| key_err(&e))?;
                let encoding =
                    EncodingKey::from_rsa_pem(private_pem.as_bytes()).map_err(|e| key_err(&e))?;
                (encoding, jwk, public_pem)
            }
            KeyKind::Ec => {
                let key = rcgen::KeyPair::from_pem(private_pem).map_err(|e| key_err(&e))?;
                let raw = key.public_key_raw();
                if raw.len() != 65 || raw[0] != 4 {
                    return Err(DevIssuerError::Key(
                        "EC key is not an uncompressed P-256 point".into(),
                    ));
                }
                let jwk = json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
                });
                let encoding =
                    EncodingKey::from_ec_pem(private_pem.as_bytes()).map_err(|e| key_err(&e))?;
                (encoding, jwk, key.public_key_pem())
            }
        };
        // RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order (serde_json sorts).
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.to_string().as_bytes()));
        let alg = match kind {
            KeyKind::Rsa => "RS256",
            KeyKind::Ec => "ES256",
        };
        if let Value::Object(members) = &mut jwk {
            members.insert("kid".into(), thumbprint.clone().into());
            members.insert("use".into(), "sig".into());
            members.insert("alg".into(), alg.into());
        }
        Ok(SigningKey {
            kind,
            kid: thumbprint,
            encoding,
            jwk,
            public_pem,
            private_pem: private_pem.to_string(),
        })
    }

    /// The key kept in `dir`, or a new one (written there) when there is none; a new one without a dir.
    fn load_or_generate(dir: Option<&Path>, kind: KeyKind) -> Result<SigningKey, DevIssuerError> {
        if let Some(dir) = dir {
            let path = dir.join(kind.file_name());
            if let Some(pem) = read_if_present(&path)? {
                return SigningKey::from_pem(kind, &pem);
            }
            let key = SigningKey::generate(kind)?;
            write_private(&path, &key.private_pem)?;
            return Ok(key);
        }
        SigningKey::generate(kind)
    }
}

/// The current key of each kind. Rotation replaces a key with no overlap, as GitLab does.
pub(super) struct Keyring {
    state_dir: Option<PathBuf>,
    keys: Mutex<BTreeMap<&'static str, SigningKey>>,
}

impl Keyring {
    /// Loads the keys kept in `state_dir`, generating those missing. Blocking (RSA key generation).
    pub(super) fn load(state_dir: Option<PathBuf>) -> Result<Keyring, DevIssuerError> {
        let mut keys = BTreeMap::new();
        for kind in [KeyKind::Rsa, KeyKind::Ec] {
            keys.insert(
                kind.slot(),
                SigningKey::load_or_generate(state_dir.as_deref(), kind)?,
            );
        }
        Ok(Keyring {
            state_dir,
            keys: Mutex::new(keys),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, SigningKey>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The JWKS document: every current public key.
    pub(super) fn jwks(&self) -> Value {
        let keys: Vec<Value> = self.lock().values().map(|k| k.jwk.clone()).collect();
        json!({ "keys": keys })
    }

    /// The `kid` of the current key of `kind` (empty if there is none).
    pub(super) fn kid(&self, kind: KeyKind) -> String {
        self.lock()
            .get(kind.slot())
            .map(|k| k.kid.clone())
            .unwrap_or_default()
    }

    /// Runs `f` with the current key of `kind`, holding it so a rotation cannot swap it meanwhile.
    pub(super) fn with_key<T>(
        &self,
        kind: KeyKind,
        f: impl FnOnce(&SigningKey) -> Result<T, DevIssuerError>,
    ) -> Result<T, DevIssuerError> {
        let keys = self.lock();
        let key = keys
            .get(kind.slot())
            .ok_or_else(|| DevIssuerError::Key(format!("no {kind:?} key")))?;
        f(key)
    }

    /// Replaces the key of `kind` with a new one, kept in the state directory; returns the new `kid`.
    /// Blocking (RSA key generation).
    pub(super) fn rotate(&self, kind: KeyKind) -> Result<String, DevIssuerError> {
        let key = SigningKey::generate(kind)?;
        if let Some(dir) = &self.state_dir {
            write_private(&dir.join(kind.file_name()), &key.private_pem)?;
        }
        let kid = key.kid.clone();
        self.lock().insert(kind.slot(), key);
        Ok(kid)
    }
}
