//! TLS interception: the deployment's CA (created by `centaur-proxy ca init`), leaf
//! certificates minted per host with one key pair for all of them and kept in an LRU cache, and
//! the upstream client that verifies real certificates (web PKI roots plus configured extras).
//!
//! Sandboxes trust the CA through `SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`, `REQUESTS_CA_BUNDLE`,
//! `CURL_CA_BUNDLE` and `GIT_SSL_CAINFO`.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

const CA_NAME: &str = "Centaur egress proxy CA";
const LEAF_CACHE: usize = 1024;
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate error: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot read PEM: {0}")]
    Pem(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA's parameters. Fixed, so the issuer can be rebuilt from the stored key alone.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to check");
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Centaur");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A new CA: (certificate PEM, private key PEM). Valid for ten years.
pub fn generate_ca() -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    let now = time_now();
    params.not_before = now - std::time::Duration::from_secs(24 * 3600);
    params.not_after = now + std::time::Duration::from_secs(10 * 365 * 24 * 3600);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Mints and caches leaf certificates for intercepted hosts.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    leaf_key: KeyPair,
    leaf_signing_key: Arc<dyn rustls::sign::SigningKey>,
    cache: Mutex<LruCache<String, Arc<CertifiedKey>>>,
}

impl Authority {
    pub fn from_pem(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Authority, TlsError> {
        let ca_key = KeyPair::from_pem(ca_key_pem)?;
        let ca_der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        let leaf_key = KeyPair::generate()?;
        let leaf_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let leaf_signing_key = provider()
            .key_provider
            .load_private_key(leaf_der)
            .map_err(TlsError::Rustls)?;
        Ok(Authority {
            issuer: Issuer::new(ca_params(), ca_key),
            ca_der,
            ca_pem: ca_cert_pem.to_owned(),
            leaf_key,
            leaf_signing_key,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(LEAF_CACHE).expect("non-zero"),
            )),
        })
    }

    /// The CA certificate, for the sandbox's trust store.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The certificate chain and key to present for `host`.
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        if let Some(hit) = self.cache.lock().expect("leaf cache").get(host) {
            return Ok(hit.clone());
        }
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time_now();
        params.not_before = now - std::time::Duration::from_secs(24 * 3600);
        params.not_after = now + std::time::Duration::from_secs(30 * 24 * 3600);
        let cert = params.signed_by(&self.leaf_key, &self.issuer)?;
        let certified = Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), self.ca_der.clone()],
            self.leaf_signing_key.clone(),
        ));
        self.cache
            .lock()
            .expect("leaf cache")
            .put(host.to_owned(), certified.clone());
        Ok(certified)
    }

    /// The server side of an intercepted connection to `host`.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(self.leaf(host)?)));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The client side towards upstreams: web PKI roots plus `extra_roots_pem` (for tests and
/// private CAs); offers HTTP/2 and HTTP/1.1.
pub fn client_config(extra_roots_pem: &[String]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for pem in extra_roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| TlsError::Pem(e.to_string()))?;
            roots.add(cert)?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Everything interception needs: the CA and the upstream client configuration.
pub struct Interception {
    pub authority: Authority,
    pub client: Arc<ClientConfig>,
}
