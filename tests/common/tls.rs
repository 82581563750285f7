//! Certificates for TLS tests, made in the test (`rcgen`): a CA, and PEM files of the
//! certificates it signs.

use std::path::Path;

pub struct Pki {
    pub ca: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Pki {
    pub fn new() -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // Names of their own: OpenSSL takes a certificate whose subject is its issuer's for
        // self-signed (rcgen gives every certificate the same name by default).
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("Rill test CA {}", rand::random::<u32>()));
        Pki { ca: params.self_signed(&key).unwrap(), key }
    }

    /// Writes `NAME.pem` and `NAME.key` for a certificate of 127.0.0.1 signed by this CA, and
    /// `NAME-ca.pem`.
    pub fn issue(&self, dir: &Path, name: &str) {
        self.issue_for(dir, name, &["127.0.0.1"]);
    }

    /// The same for the names given (IP addresses or DNS names).
    pub fn issue_for(&self, dir: &Path, name: &str, names: &[&str]) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(n.to_string().try_into().unwrap()),
            })
            .collect();
        let cert = params.signed_by(&key, &self.ca, &self.key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), self.ca.pem()).unwrap();
    }
}
