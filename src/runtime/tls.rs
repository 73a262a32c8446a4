//! Optional TLS (README, "Security"). chain.proto carries no authentication, so without TLS
//! any host that can reach a replica's port can act as its predecessor. With TLS, a replica
//! serves TLS only, and the replica-to-replica methods accept only callers whose client
//! certificate verifies against the chain's CA; client methods stay open to any TLS client.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use super::connect::Connect;

/// A TLS handshake that has not finished after this long is dropped, so a caller that opens
/// connections and stalls cannot hold them forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The chain's CA and, for replicas (and clients that present one), a certificate and key.
#[derive(Clone)]
pub struct TlsConfig {
    ca: Certificate,
    identity: Option<Identity>,
}

/// By hand: the derived form would print the private key wherever options are logged.
impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("has_identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

fn read_pem(what: &str, path: &Path, marker: &str) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))?;
    // rustls skips PEM blocks it cannot use; without this check a wrong file would only show
    // as every handshake failing.
    if !String::from_utf8_lossy(&pem).contains(marker) {
        return Err(anyhow!("{} is not a PEM {what}: no \"{marker}\" line", path.display()));
    }
    Ok(pem)
}

impl TlsConfig {
    /// Reads the PEM files and checks that rustls takes them. `cert_key` is the certificate
    /// (chain) and private key this process presents.
    pub fn load(ca: &Path, cert_key: Option<(&Path, &Path)>) -> anyhow::Result<TlsConfig> {
        let ca = Certificate::from_pem(read_pem("CA certificate", ca, "-----BEGIN CERTIFICATE-----")?);
        let identity = match cert_key {
            Some((cert, key)) => Some(Identity::from_pem(
                read_pem("certificate", cert, "-----BEGIN CERTIFICATE-----")?,
                read_pem("private key", key, "PRIVATE KEY-----")?,
            )),
            None => None,
        };
        let tls = TlsConfig { ca, identity };
        tls.check()?;
        Ok(tls)
    }

    /// Build the configs once, so a key that does not match its certificate or a file rustls
    /// cannot parse is an error at startup rather than a failed handshake later.
    fn check(&self) -> anyhow::Result<()> {
        Endpoint::from_static("https://127.0.0.1:1")
            .tls_config(self.client())
            .map_err(|e| anyhow!("the TLS files are not usable as a client: {}", error_chain(&e)))?;
        if let Some(server) = self.server() {
            tonic::transport::Server::builder()
                .tls_config(server)
                .map_err(|e| anyhow!("the TLS files are not usable as a server: {}", error_chain(&e)))?;
        }
        Ok(())
    }

    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// Serving, with the certificate loaded (`None` without one). A client certificate is
    /// optional at the handshake: the service decides per method whether it needs one
    /// (`ChainService::check_peer`).
    pub fn server(&self) -> Option<ServerTlsConfig> {
        let identity = self.identity.clone()?;
        Some(
            ServerTlsConfig::new()
                .identity(identity)
                .client_ca_root(self.ca.clone())
                .client_auth_optional(true)
                .timeout(HANDSHAKE_TIMEOUT),
        )
    }

    /// Serving where every caller must present a certificate from the CA: a tail-variant
    /// client's callback server, whose only callers are the chain's tails.
    pub fn server_requiring_client_certs(&self) -> Option<ServerTlsConfig> {
        Some(self.server()?.client_auth_optional(false))
    }

    /// Connecting: the server must present a certificate from the CA, valid for the host
    /// dialled; ours goes along when we have one.
    pub fn client(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(self.ca.clone());
        match &self.identity {
            Some(identity) => config.identity(identity.clone()),
            None => config,
        }
    }

    /// A lazily connecting TLS channel to `addr` (`host:port`).
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| format!("bad address {addr:?}: {e}"))?
            .tls_config(self.client())
            .map_err(|e| format!("TLS to {addr}: {}", error_chain(&e)))
    }
}

/// `Display` of an error and its sources: tonic's transport errors say little at the top.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The production connector of a TLS chain: peers (and, in the tail variant, clients' callback
/// servers) are dialled over TLS, presenting this replica's certificate.
pub struct TlsConnect(pub TlsConfig);

impl Connect for TlsConnect {
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        Ok(super::connect::tune(self.0.endpoint(addr)?).connect_lazy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_pem_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = TlsConfig::load(&junk, None).unwrap_err();
        assert!(format!("{e:#}").contains("is not a PEM CA certificate"), "{e:#}");
        let e = TlsConfig::load(&dir.path().join("missing.pem"), None).unwrap_err();
        assert!(format!("{e:#}").contains("cannot read the CA certificate"), "{e:#}");
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let tls = TlsConfig {
            ca: Certificate::from_pem("-----BEGIN CERTIFICATE-----"),
            identity: Some(Identity::from_pem("cert", "SECRET KEY MATERIAL")),
        };
        let shown = format!("{tls:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("has_identity: true"), "{shown}");
    }
}
