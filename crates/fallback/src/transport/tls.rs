//! TLS for the default transport: which roots are trusted, the client's own
//! identity, and the escape hatch that turns verification off.
//!
//! Roots come from the operating system's store through
//! `rustls-native-certs`, which reads the same files as OpenSSL and curl on
//! Linux and honours `SSL_CERT_FILE` and `SSL_CERT_DIR`. Where that store
//! is empty or missing (a minimal container), the bundled webpki roots
//! stand in, so a chain always builds and reaches public servers.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::BuildError;

/// The parsed TLS options; the client configuration itself is made on the
/// first HTTPS connection, so plain-HTTP chains never read the store.
pub(crate) struct Tls {
    extra_roots: Vec<CertificateDer<'static>>,
    built_in_roots: bool,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    insecure: bool,
    config: OnceLock<Arc<ClientConfig>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("extra_roots", &self.extra_roots.len())
            .field("built_in_roots", &self.built_in_roots)
            .field("identity", &self.identity.is_some())
            .field("danger_accept_invalid_certs", &self.insecure)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn setting(setting: &'static str, reason: impl Into<String>) -> BuildError {
    BuildError::Setting {
        setting,
        reason: reason.into(),
    }
}

/// Every certificate in `pem`; at least one.
pub(crate) fn certs(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, BuildError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setting(what, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(setting(what, "no CERTIFICATE block in the PEM"));
    }
    Ok(certs)
}

impl Tls {
    /// Parses and checks everything a bad input could break, so that
    /// building the client configuration later cannot fail.
    pub(crate) fn new(
        extra_pems: &[Vec<u8>],
        built_in_roots: bool,
        identity: Option<&(Vec<u8>, Vec<u8>)>,
        insecure: bool,
    ) -> Result<Tls, BuildError> {
        let mut extra_roots = Vec::new();
        for pem in extra_pems {
            for cert in certs(pem, "root certificate")? {
                let mut probe = RootCertStore::empty();
                probe
                    .add(cert.clone())
                    .map_err(|e| setting("root certificate", e.to_string()))?;
                extra_roots.push(cert);
            }
        }
        if !built_in_roots && extra_roots.is_empty() && !insecure {
            return Err(setting(
                "tls_built_in_root_certs",
                "off, and no root certificate was added: no server could be trusted",
            ));
        }
        let identity = match identity {
            Some((cert_pem, key_pem)) => {
                let chain = certs(cert_pem, "client certificate")?;
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| setting("client key", format!("no usable private key: {e}")))?;
                // A key that does not match the certificate, or of a kind
                // rustls cannot sign with, is refused here.
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| setting("client certificate", e.to_string()))?
                    .with_root_certificates(RootCertStore::empty())
                    .with_client_auth_cert(chain.clone(), key.clone_key())
                    .map_err(|e| setting("client certificate", e.to_string()))?;
                Some((chain, key))
            }
            None => None,
        };
        Ok(Tls {
            extra_roots,
            built_in_roots,
            identity,
            insecure,
            config: OnceLock::new(),
        })
    }

    /// The client configuration, made once.
    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        self.config.get_or_init(|| Arc::new(self.make())).clone()
    }

    fn roots(&self) -> RootCertStore {
        let system = self.built_in_roots.then(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "reading the system trust store");
            }
            found.certs
        });
        self.roots_from(system)
    }

    /// The trusted roots, given what the system's store held (`None`: not
    /// asked for).
    fn roots_from(&self, system: Option<Vec<CertificateDer<'static>>>) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        if let Some(certs) = system {
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                tracing::warn!(
                    "the system trust store is empty or missing; using the bundled webpki roots"
                );
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
        }
        for c in &self.extra_roots {
            // Checked in `new`.
            let _ = roots.add(c.clone());
        }
        roots
    }

    fn make(&self) -> ClientConfig {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            // ring supports every default version.
            .expect("ring supports the default TLS versions");
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
        } else {
            builder.with_root_certificates(self.roots())
        };
        let mut cfg = match &self.identity {
            // Checked in `new`.
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .expect("identity checked when the transport was built"),
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg
    }
}

/// Accepts any server certificate; handshake signatures are still checked,
/// so the peer holds the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_system_store_falls_back_to_the_webpki_roots() {
        let tls = Tls::new(&[], true, None, false).unwrap();
        let webpki = webpki_roots::TLS_SERVER_ROOTS.len();
        assert_eq!(tls.roots_from(Some(Vec::new())).len(), webpki);
        // Certificates that do not parse count as none.
        let junk = vec![CertificateDer::from(vec![1, 2, 3])];
        assert_eq!(tls.roots_from(Some(junk)).len(), webpki);
        // Only the given roots: nothing from the system or webpki.
        assert_eq!(tls.roots_from(None).len(), 0);
    }
}
