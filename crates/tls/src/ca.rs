//! The cluster's CA: made once (by the manager, on first start), kept in its data dir
//! (the key mode 0600), and used at every start to sign a fresh server certificate for the
//! names and addresses the manager is reached by.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Pin, TlsError};

/// The CA's certificate (public: `curl --cacert`) in the manager's TLS directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key (mode 0600): whoever has it can impersonate the manager.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// A CA: its certificate and the key that signs with it.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterCa({})", self.pin())
    }
}

/// The CA's subject and powers. Rebuilt the same way to sign with a loaded CA (its
/// issuer name and key identifier come from these and its key), so no certificate
/// parser is needed.
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "MyCluster cluster CA");
    name.push(DnType::OrganizationName, "MyCluster");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl ClusterCa {
    /// A new CA (ECDSA P-256).
    pub fn generate() -> Result<ClusterCa, TlsError> {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// The CA kept in `dir`, or `None` if there is none yet.
    pub fn load(dir: &Path) -> Result<Option<ClusterCa>, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        // The key is written first: a key alone is a save cut short, whose certificate
        // (and so whose pin) no one ever saw — as good as no CA.
        if !cert_path.exists() {
            return Ok(None);
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TlsError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Pem {
                path: cert_path.display().to_string(),
                what: "certificate",
                detail: e.to_string(),
            })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Pem {
            path: key_path.display().to_string(),
            what: "private key",
            detail: e.to_string(),
        })?;
        Ok(Some(ClusterCa {
            cert_pem,
            cert_der,
            key,
        }))
    }

    /// The CA kept in `dir`, made and saved there first if there is none; and whether
    /// it was made now.
    pub fn load_or_create(dir: &Path) -> Result<(ClusterCa, bool), TlsError> {
        if let Some(ca) = ClusterCa::load(dir)? {
            return Ok((ca, false));
        }
        let ca = ClusterCa::generate()?;
        ca.save(dir)?;
        Ok((ca, true))
    }

    /// Writes the certificate (0644) and the key (0600) into `dir` (made 0700 if
    /// missing), each through a temporary file renamed into place, the key first: a
    /// crash leaves either no CA or a whole one.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.join(name);
            crate::write_private(&path, text, mode).map_err(|source| TlsError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        write(CA_KEY_FILE, &self.key.serialize_pem(), 0o600)?;
        write(CA_CERT_FILE, &self.cert_pem, 0o644)
    }

    /// The digest a join token carries.
    pub fn pin(&self) -> Pin {
        Pin::of_der(&self.cert_der)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server config with a new certificate for `names` (DNS names or IP addresses),
    /// its subject's common name `role` (`MyCluster manager`, `MyCluster agent`: read
    /// by people only), signed by this CA, sent with the CA's certificate (a pinning
    /// client finds the CA in the chain); offers HTTP/2 and HTTP/1.1.
    pub fn server_config(
        &self,
        role: &str,
        names: &[String],
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, role);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let issuer = Issuer::new(ca_params()?, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
