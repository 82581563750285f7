//! TLS for socket and PostgreSQL connections (rustls with the `ring` provider): PEM files for the
//! certificate chain, its key and the CAs trusted for the other side.
//!
//! ```yaml
//! tls: {cert: certs/server.pem, key: certs/server.key, client_ca: certs/ca.pem}   # a server (mutual TLS with client_ca)
//! tls: {ca: certs/ca.pem, cert: certs/client.pem, key: certs/client.key}          # a client (cert/key: mutual TLS)
//! ```

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(serde::Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// This side's certificate chain (PEM).
    cert: Option<String>,
    /// Its private key (PEM).
    key: Option<String>,
    /// A client: the CAs that may sign the server's certificate (PEM).
    ca: Option<String>,
    /// A server: require client certificates signed by these CAs (PEM).
    client_ca: Option<String>,
    /// A client: the name the server's certificate must have (default: the address's IP).
    server_name: Option<String>,
}

impl TlsConfig {
    /// The same, with relative file names taken from the pipeline file's folder.
    pub(crate) fn resolved(&self, pipeline: &rill_engine::config::PipelineConfig) -> TlsConfig {
        let r = |p: &Option<String>| p.as_deref().map(|p| pipeline.resolve(p).display().to_string());
        TlsConfig { cert: r(&self.cert), key: r(&self.key), ca: r(&self.ca), client_ca: r(&self.client_ca), server_name: self.server_name.clone() }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read certificates from {path}: {e}"))?.collect::<Result<_, _>>().map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
}

fn roots(path: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(roots)
}

fn chain(cfg: &TlsConfig) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
    match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => Ok(Some((certs(c)?, PrivateKeyDer::from_pem_file(k).map_err(|e| format!("cannot read a private key from {k}: {e}"))?))),
        (None, None) => Ok(None),
        _ => Err("`tls` needs both `cert` and `key`, or neither".into()),
    }
}

/// The configuration of a TLS server (the socket source in server mode).
pub(crate) fn server(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let Some((chain, key)) = chain(cfg)? else { return Err("a TLS server needs `cert` and `key`".into()) };
    if cfg.ca.is_some() || cfg.server_name.is_some() {
        return Err("`ca` and `server_name` are for clients; a server trusts client certificates by `client_ca`".into());
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(|e| e.to_string())?;
    let builder = match &cfg.client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider()).build().map_err(|e| format!("{ca}: {e}"))?,
        ),
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).map(Arc::new).map_err(|e| format!("the certificate and key do not make a server: {e}"))
}

/// A TLS server's configuration from PEM files (the HTTP API's `http.tls`): `client_ca`
/// requires client certificates it signed (mutual TLS).
pub fn server_config(cert: &str, key: &str, client_ca: Option<&str>) -> Result<Arc<rustls::ServerConfig>, String> {
    server(&TlsConfig { cert: Some(cert.into()), key: Some(key.into()), ca: None, client_ca: client_ca.map(str::to_string), server_name: None })
}

/// A TLS client's configuration that trusts the CAs in the PEM file `ca` (`rill top` and
/// `rill tap` calling an HTTPS API).
pub fn client_config(ca: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    client(&TlsConfig { cert: None, key: None, ca: Some(ca.into()), client_ca: None, server_name: None })
}

/// The configuration of a TLS client (the socket sink, the socket source in client mode).
pub(crate) fn client(cfg: &TlsConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    let Some(ca) = &cfg.ca else { return Err("a TLS client needs `ca`: the PEM of the CA that signed the server's certificate".into()) };
    if cfg.client_ca.is_some() {
        return Err("`client_ca` is for servers".into());
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(|e| e.to_string())?.with_root_certificates(roots(ca)?);
    match chain(cfg)? {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map(Arc::new).map_err(|e| format!("the client certificate and key do not match: {e}")),
        None => Ok(Arc::new(builder.with_no_client_auth())),
    }
}

/// The name the server must prove (`server_name`, else the address's IP).
pub(crate) fn server_name(cfg: &TlsConfig, addr: std::net::SocketAddr) -> Result<ServerName<'static>, String> {
    match &cfg.server_name {
        Some(n) => ServerName::try_from(n.clone()).map_err(|e| format!("`server_name: {n}`: {e}")),
        None => Ok(ServerName::IpAddress(addr.ip().into())),
    }
}

/// How a TLS client checks the server's certificate (PostgreSQL's `sslmode`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Verify {
    /// Not at all: the connection is encrypted, the server unproven (libpq's `require`).
    Nothing,
    /// Signed by a trusted CA, for whatever name (libpq's `verify-ca`).
    Chain,
    /// Signed by a trusted CA and for the host connected to (libpq's `verify-full`).
    Full,
}

/// A TLS client's configuration that checks the server as `verify` says, trusting the CAs in
/// the PEM file `ca` (needed unless `Verify::Nothing`), with an optional client certificate.
pub(crate) fn client_verifying(verify: Verify, ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::client::WebPkiServerVerifier;
    let builder = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(|e| e.to_string())?;
    let trusted = || -> Result<rustls::RootCertStore, String> { roots(ca.ok_or("checking the server's certificate needs the CA that signed it")?) };
    let builder = match verify {
        Verify::Full => builder.with_root_certificates(trusted()?),
        Verify::Chain => {
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(trusted()?), provider()).build().map_err(|e| e.to_string())?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyName(inner)))
        }
        Verify::Nothing => builder.dangerous().with_custom_certificate_verifier(Arc::new(Unchecked(provider()))),
    };
    let chain = chain(&TlsConfig { cert: cert.map(str::to_string), key: key.map(str::to_string), ca: None, client_ca: None, server_name: None })?;
    match chain {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map(Arc::new).map_err(|e| format!("the client certificate and key do not match: {e}")),
        None => Ok(Arc::new(builder.with_no_client_auth())),
    }
}

/// Accepts a certificate a trusted CA signed whatever name it is for.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(&self, end: &CertificateDer<'_>, inter: &[CertificateDer<'_>], name: &ServerName<'_>, ocsp: &[u8], now: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        // The chain is checked before the name: a name error means the chain was good.
        match self.0.verify_server_cert(end, inter, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. })) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any certificate (the handshake's signatures are still checked against it, so the
/// connection is encrypted to whoever holds its key; who that is stays unproven).
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
