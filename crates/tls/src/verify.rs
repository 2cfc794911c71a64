//! The client side: trust a server whose certificate chain holds the pinned CA and whose
//! certificate that CA signed — nothing else (no system roots).
//!
//! The server's name is not checked against its certificate, as Swarm's nodes do not:
//! the pinned CA is the cluster's own and signs only its managers' certificates, so a
//! certificate it signed *is* the identity; and a host joining through an address the
//! manager was not told of (a NAT, a published port) still reaches the right manager.
//! `curl --cacert` does check names: see the manager's `--advertise-name`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{Pin, TlsError};

/// A client config that trusts only servers certified by the CA `pin` names.
pub fn pinned_client(pin: Pin) -> Result<ClientConfig, TlsError> {
    let provider = crate::provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa { pin, provider }))
        .with_no_client_auth();
    Ok(config)
}

/// A client config that trusts no server at all, for a client that speaks plain HTTP
/// only: reqwest, given none, looks for the platform's roots when the client is built,
/// and a `FROM scratch` image has none, so not even an http:// client could be built.
pub fn trusting_nobody() -> Result<ClientConfig, TlsError> {
    let config = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    Ok(config)
}

#[derive(Debug)]
struct PinnedCa {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| self.pin.matches(cert))
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's certificate is not from the CA the token pins (sha256 {}): it is another cluster's manager, or someone in between",
                    self.pin
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &roots,
            &[],
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
