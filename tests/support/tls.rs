//! Throwaway certificate authorities and certificates for the TLS tests, made at test time with
//! rcgen and written as PEM files, as an operator would hand them to `chain-replica`.

use std::fs;
use std::path::{Path, PathBuf};

use chainrep::runtime::tls::TlsConfig;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA that can issue certificates valid for 127.0.0.1 and localhost.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// PEM files of one certificate: its CA, the certificate and its key.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// `chain-replica` flags presenting this certificate.
    pub fn replica_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
            "--tls-ca".into(),
            self.ca.display().to_string(),
        ]
    }

    /// Trusts the CA and presents this certificate.
    pub fn with_identity(&self) -> TlsConfig {
        TlsConfig::load(&self.ca, Some((&self.cert, &self.key))).expect("load TLS files")
    }

    /// Trusts the CA only, as a plain client does.
    pub fn ca_only(&self) -> TlsConfig {
        TlsConfig::load(&self.ca, None).expect("load TLS CA")
    }
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        }
    }

    /// A certificate for `name`, valid as server (127.0.0.1, localhost) and as client, written
    /// with the CA's certificate under `dir`.
    pub fn issue(&self, dir: &Path, name: &str) -> CertFiles {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = CertFiles {
            ca: dir.join(format!("{name}-ca.pem")),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        fs::write(&files.ca, &self.cert_pem).expect("write CA");
        fs::write(&files.cert, cert.pem()).expect("write certificate");
        fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

/// The chain's CA with a certificate for its replicas, and a rogue CA with a certificate of
/// its own (for spoofers), in one temporary directory.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub replica: CertFiles,
    pub rogue: CertFiles,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let replica = TestCa::new("chain CA").issue(dir.path(), "replica");
        let rogue = TestCa::new("rogue CA").issue(dir.path(), "rogue");
        TestPki { dir, replica, rogue }
    }
}
