//! HTTP clients for tests and benchmarks. TLS in this workspace goes through ring, whose
//! provider must be installed before the first client is built.

/// An HTTP client builder, with ring installed as the TLS provider (once per process).
pub fn http() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
