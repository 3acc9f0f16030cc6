//! Server-certificate verification for RAPI.
//!
//! Ganeti's own RAPI certificate (`gnt-cluster init`) is a self-signed
//! X.509 **v1** certificate with the CN `ganeti.example.com` and no
//! subjectAltName. WebPKI rejects v1 certificates and never falls back to
//! the CN, so "trust this CA file" cannot work for it. The configured PEM
//! (`ca_file`) is therefore used two ways:
//!
//! * **pinning**: a server certificate byte-identical to one in the file is
//!   trusted as is (name and validity are not checked: the operator pinned
//!   that exact certificate); the handshake signature is still verified
//!   with its public key, so a stolen certificate without its key is
//!   useless;
//! * **CA**: otherwise the chain must verify against the file's
//!   certificates as trust anchors, with the usual name and expiry checks.
//!
//! `insecure` skips all of it, for labs, and is logged loudly by the client.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::RootCertStore;
use rustls::SignatureScheme;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::RapiError;

/// The crypto provider used throughout (ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate of a PEM bundle.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, RapiError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| RapiError::Config(format!("invalid PEM certificate: {e:?}")))?;
    if certs.is_empty() {
        return Err(RapiError::Config(
            "no certificate in the CA/pinned PEM".into(),
        ));
    }
    Ok(certs)
}

#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
    public_key: Vec<u8>,
}

/// Trusts pinned certificates exactly, or chains to the given anchors.
#[derive(Debug)]
pub(crate) struct PinnedOrCaVerifier {
    pinned: Vec<Pinned>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algs: WebPkiSupportedAlgorithms,
}

impl PinnedOrCaVerifier {
    pub(crate) fn new(pem: &[u8]) -> Result<Self, RapiError> {
        let certs = certs_from_pem(pem)?;
        let provider = provider();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
        let webpki = if added > 0 {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| RapiError::Config(format!("CA certificates: {e}")))?,
            )
        } else {
            None
        };
        let pinned = certs
            .iter()
            .filter_map(|c| {
                spki_public_key(c.as_ref()).map(|k| Pinned {
                    der: c.as_ref().to_vec(),
                    public_key: k.to_vec(),
                })
            })
            .collect::<Vec<_>>();
        if pinned.is_empty() && webpki.is_none() {
            return Err(RapiError::Config(
                "no usable certificate in the CA/pinned PEM".into(),
            ));
        }
        Ok(Self {
            pinned,
            webpki,
            algs: provider.signature_verification_algorithms,
        })
    }

    fn pinned(&self, cert: &CertificateDer<'_>) -> Option<&Pinned> {
        self.pinned.iter().find(|p| p.der == cert.as_ref())
    }

    fn verify_pinned(
        &self,
        p: &Pinned,
        message: &[u8],
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = self
            .algs
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, a)| *a)
            .ok_or(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ))?;
        if algs.iter().any(|a| {
            a.verify_signature(&p.public_key, message, dss.signature())
                .is_ok()
        }) {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature,
            ))
        }
    }
}

impl ServerCertVerifier for PinnedOrCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pinned(end_entity).is_some() {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.pinned(cert) {
            Some(p) => self.verify_pinned(p, message, dss),
            None => rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.pinned(cert) {
            Some(p) => self.verify_pinned(p, message, dss),
            None => rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Accepts any certificate (the `insecure` switch).
#[derive(Debug)]
pub(crate) struct NoVerification(pub(crate) WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

// ---------------------------------------------------------------- minimal DER

/// Splits one DER TLV off `input`: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The `subjectPublicKey` bits of a certificate (v1 or v3).
fn spki_public_key(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert, _) = tlv(cert)?; // Certificate SEQUENCE
    let (_, mut tbs, _) = tlv(cert)?; // TBSCertificate SEQUENCE
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2; // [0] version
    }
    // serial, signature, issuer, validity, subject
    for _ in 0..5 {
        tbs = tlv(tbs)?.2;
    }
    let (_, spki, _) = tlv(tbs)?;
    let (_, _alg, rest) = tlv(spki)?;
    let (tag, bits, _) = tlv(rest)?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return None;
    }
    Some(&bits[1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 certificate made by `openssl req -x509 -newkey ec`, and its
    /// public point as `openssl pkey -pubout -outform DER | tail -c 65` prints it.
    const CERT: &str = include_str!("testdata/localhost-cert.pem");
    const PUBLIC_POINT: &str = "049c9735e2fc59fb7e70c9050a85688ba2284684bfd899574ebfe81f1ed56daec1\
                                5fb6320c7e8db885f1827308078dd71043acc74ec8293a5dc567730bc03c4e25";

    #[test]
    fn extracts_the_public_key_of_an_openssl_cert() {
        let certs = certs_from_pem(CERT.as_bytes()).unwrap();
        let key = spki_public_key(&certs[0]).unwrap();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, PUBLIC_POINT);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(spki_public_key(b"").is_none());
        assert!(spki_public_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(certs_from_pem(b"not pem").is_err());
    }
}
