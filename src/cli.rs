//! What the two binaries' command lines share: the chain's variant and its default root, and
//! the TLS flags' rules.

use std::path::PathBuf;

use crate::core::Variant;
use crate::runtime::tls::TlsConfig;

/// `--variant head|tail`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum VariantArg {
    /// chain.proto's HeadChainReplica: the head answers clients after the tail applied.
    Head,
    /// chain.proto's TailChainReplica: the tail calls clients back.
    Tail,
}

impl From<VariantArg> for Variant {
    fn from(v: VariantArg) -> Variant {
        match v {
            VariantArg::Head => Variant::Head,
            VariantArg::Tail => Variant::Tail,
        }
    }
}

/// The root a chain of `variant` registers under when none is given: the other
/// implementations' conventions, so that each variant's chains and clients meet by default.
pub fn default_root(variant: Variant) -> &'static str {
    match variant {
        Variant::Head => "/headchain",
        Variant::Tail => "/tailchain",
    }
}

/// Who must present a certificate of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsRole {
    /// A replica serves TLS and presents its certificate to peers: all three flags or none.
    Replica,
    /// A client needs only the CA; a certificate (for its callback server) is optional.
    Client,
}

/// `--tls-cert`, `--tls-key` and `--tls-ca` as given; `None` for plaintext. The message of an
/// error names the flags that are missing or the file that could not be used.
pub fn load_tls(role: TlsRole, cert: Option<&PathBuf>, key: Option<&PathBuf>, ca: Option<&PathBuf>) -> Result<Option<TlsConfig>, String> {
    let load = |ca: &PathBuf, identity| TlsConfig::load(ca, identity).map(Some).map_err(|e| format!("{e:#}"));
    match (role, cert, key, ca) {
        (_, None, None, None) => Ok(None),
        (_, Some(cert), Some(key), Some(ca)) => load(ca, Some((cert, key))),
        (TlsRole::Client, None, None, Some(ca)) => load(ca, None),
        (TlsRole::Client, _, _, None) => Err("--tls-cert and --tls-key need --tls-ca".into()),
        (TlsRole::Client, _, _, Some(_)) => Err("--tls-cert and --tls-key go together".into()),
        (TlsRole::Replica, cert, key, ca) => {
            let missing: Vec<&str> = [
                (cert.is_none(), "--tls-cert"),
                (key.is_none(), "--tls-key"),
                (ca.is_none(), "--tls-ca"),
            ]
            .into_iter()
            .filter_map(|(absent, flag)| absent.then_some(flag))
            .collect();
            Err(format!(
                "--tls-cert, --tls-key and --tls-ca go together (all three for TLS, none for plaintext); missing {}",
                missing.join(" and ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_flags_go_together_as_each_role_needs() {
        let p = PathBuf::from("/nonexistent.pem");
        assert!(matches!(load_tls(TlsRole::Replica, None, None, None), Ok(None)));
        let e = load_tls(TlsRole::Replica, Some(&p), None, Some(&p)).err().unwrap_or_default();
        assert!(e.ends_with("missing --tls-key"), "{e}");
        let e = load_tls(TlsRole::Replica, None, None, Some(&p)).err().unwrap_or_default();
        assert!(e.ends_with("missing --tls-cert and --tls-key"), "{e}");
        let e = load_tls(TlsRole::Client, Some(&p), Some(&p), None).err().unwrap_or_default();
        assert_eq!(e, "--tls-cert and --tls-key need --tls-ca");
        let e = load_tls(TlsRole::Client, Some(&p), None, Some(&p)).err().unwrap_or_default();
        assert_eq!(e, "--tls-cert and --tls-key go together");
        // The CA alone is a client's whole TLS setup: here it is a file that is not there.
        let e = load_tls(TlsRole::Client, None, None, Some(&p)).err().unwrap_or_default();
        assert!(e.contains("nonexistent.pem"), "{e}");
    }
}
