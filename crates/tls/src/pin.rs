//! What a client trusts: the SHA-256 of the cluster CA's certificate (DER), and the join
//! token that carries it to another host with the join secret.

use std::fmt;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::TlsError;

/// How every join token starts: the format's name and version.
pub const JOIN_TOKEN_PREFIX: &str = "MCJT1-";

/// The SHA-256 of a CA certificate's DER bytes: `sha256sum` of the DER, and what
/// `openssl x509 -in ca.pem -outform der | sha256sum` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin([u8; 32]);

impl Pin {
    pub fn of_der(der: &[u8]) -> Pin {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Pin(bytes)
    }

    /// The pin of the first certificate in a PEM text (`what` names it in errors).
    pub fn of_pem(pem: &str, what: &str) -> Result<Pin, TlsError> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem {
            path: what.to_string(),
            what: "certificate",
            detail: e.to_string(),
        })?;
        Ok(Pin::of_der(&der))
    }

    /// 64 hex digits (either case; an optional `sha256:` before them).
    pub fn parse(text: &str) -> Result<Pin, TlsError> {
        let text = text.trim();
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        let bad = || {
            TlsError::Token(format!(
                "'{text}' is not a CA digest: 64 hex digits (the SHA-256 of the CA certificate, see `mycluster token --join`)"
            ))
        };
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Pin(bytes))
    }

    /// Whether `der` is the pinned certificate. Not secret: an ordinary comparison.
    pub fn matches(&self, der: &[u8]) -> bool {
        Pin::of_der(der) == *self
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

/// `MCJT1-<sha256 of the CA certificate>-<secret>`: what a new host needs to join. The
/// digest is not secret (it lets the host check the manager before sending anything);
/// the secret is the join token the manager checks.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca: Pin,
    pub secret: String,
}

impl JoinToken {
    /// Whether `text` is meant as a join token of this format (and not a bare secret).
    pub fn is_join_token(text: &str) -> bool {
        text.trim().starts_with(JOIN_TOKEN_PREFIX)
    }

    pub fn parse(text: &str) -> Result<JoinToken, TlsError> {
        let text = text.trim();
        let rest = text.strip_prefix(JOIN_TOKEN_PREFIX).ok_or_else(|| {
            TlsError::Token(format!(
                "a join token starts with {JOIN_TOKEN_PREFIX} (print one with `mycluster token --join`)"
            ))
        })?;
        let (digest, secret) = rest.split_once('-').ok_or_else(|| {
            TlsError::Token(format!(
                "a join token is {JOIN_TOKEN_PREFIX}<CA digest>-<secret>: this one has no secret"
            ))
        })?;
        let ca = Pin::parse(digest)?;
        if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TlsError::Token(
                "the join token's secret must be printable ASCII without spaces".into(),
            ));
        }
        Ok(JoinToken {
            ca,
            secret: secret.to_string(),
        })
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{JOIN_TOKEN_PREFIX}{}-{}", self.ca, self.secret)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken({JOIN_TOKEN_PREFIX}{}-…)", self.ca)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_token_reads_back() {
        let token = JoinToken {
            ca: Pin::of_der(b"some certificate"),
            secret: "s3cret-with-dashes-0123".into(),
        };
        let text = token.to_string();
        assert!(text.starts_with("MCJT1-"));
        assert_eq!(JoinToken::parse(&text).unwrap(), token);
        assert_eq!(JoinToken::parse(&format!(" {text}\n")).unwrap(), token);
        assert!(JoinToken::is_join_token(&text));
        assert!(!JoinToken::is_join_token("plain-join-secret-0123"));
    }

    #[test]
    fn bad_tokens_say_what_is_wrong() {
        let digest = Pin::of_der(b"x").to_string();
        for bad in [
            "plain".to_string(),
            format!("MCJT1-{digest}"),
            format!("MCJT1-{digest}-"),
            format!("MCJT1-{}-secret", &digest[..63]),
            format!("MCJT1-{}zz-secret", &digest[..62]),
            format!("MCJT1-{digest}-has space"),
        ] {
            assert!(JoinToken::parse(&bad).is_err(), "{bad}");
        }
        assert!(Pin::parse(&format!("sha256:{}", digest.to_uppercase())).is_ok());
    }
}
