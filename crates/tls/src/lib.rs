//! TLS for the cluster: the cluster's own CA (made by the manager on first start), the
//! manager's server certificate signed by it, and the one way every client of the cluster
//! trusts a manager — by the SHA-256 of the CA's certificate, which a join token carries
//! (`MCJT1-<digest>-<secret>`, as Swarm's `SWMTKN-1-<digest>-<secret>`). A client that
//! holds the digest needs no CA file and no system roots (scratch images have none), and
//! cannot be fooled by a manager of another cluster or anyone in between.
//!
//! Where to start reading: `ClusterCa` (the CA and the server side), `pinned_client`
//! (the client side), `JoinToken` (what an operator copies to another host).
//!
//! Only the ring provider is compiled in, and every config here names it itself, so no
//! process-wide default provider has to be installed first.

mod ca;
mod files;
mod pin;
mod verify;

use std::sync::Arc;

pub use ca::{ClusterCa, CA_CERT_FILE, CA_KEY_FILE};
pub use files::write_private;
pub use pin::{JoinToken, Pin, JOIN_TOKEN_PREFIX};
pub use rustls::{ClientConfig, ServerConfig};
pub use tokio_rustls::{server::TlsStream, TlsAcceptor};
pub use verify::{pinned_client, trusting_nobody};

/// The first byte of every TLS connection (a handshake record): what tells a TLS client
/// from a plain HTTP one on a port that serves both.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// What went wrong making or reading the cluster's keys and certificates, or a token.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("{path} holds no usable {what}: {detail}")]
    Pem {
        path: String,
        what: &'static str,
        detail: String,
    },
    #[error("{0}")]
    Token(String),
}

/// The one crypto provider: ring.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process's default provider, for any library that asks for the
/// default (a second call is harmless).
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why the server's certificate was refused, if that is what `error` (or one of its
/// causes) is: a manager of another cluster, someone in between, or a certificate this
/// client cannot use. Not a network failure: trying again does not help.
pub fn refused_certificate(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        // io::Errors nest (hyper wraps tokio-rustls's), and their own `source` skips the
        // error each wraps: unwrap them all.
        let mut candidate = error;
        loop {
            if let Some(tls) = candidate.downcast_ref::<rustls::Error>() {
                match tls {
                    // The pinning verifier's own words.
                    rustls::Error::General(why) => return Some(why.clone()),
                    rustls::Error::InvalidCertificate(_) => return Some(tls.to_string()),
                    _ => {}
                }
            }
            match candidate
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(inner) => candidate = inner,
                None => break,
            }
        }
        cause = error.source();
    }
    None
}
