//! TLS for the smtp agent (rustls, ring): the security levels with
//! Postfix's meaning, the trust anchors (`smtp_tls_CAfile`,
//! `smtp_tls_CApath`, else the platform's roots), the client certificate,
//! and what the log says of a connection (Verified, Trusted, Untrusted;
//! the protocol, cipher and key exchange by the OpenSSL names Postfix's
//! log uses).
//!
//! - `none`: no STARTTLS.
//! - `may`: STARTTLS when offered; any certificate is accepted.
//! - `encrypt`: STARTTLS required; any certificate is accepted.
//! - `verify`: STARTTLS required; the certificate must chain to a trusted
//!   root and name the server (the MX host, or the host in the next hop).
//! - `secure`: as verify, but the name must be the next hop's (an MX
//!   host's own name does not do; DNS is not trusted).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, CipherSuite, ClientConfig, DigitallySignedStruct, NamedGroup,
    ProtocolVersion, RootCertStore, SignatureScheme,
};

/// `smtp_tls_security_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// No TLS.
    None,
    /// Opportunistic.
    May,
    /// Mandatory, unauthenticated.
    Encrypt,
    /// Mandatory, the server's name verified.
    Verify,
    /// Mandatory, the next hop's name verified.
    Secure,
}

impl Level {
    /// From the parameter's word.
    pub fn parse(word: &str) -> Level {
        match word {
            "none" => Level::None,
            "encrypt" => Level::Encrypt,
            "verify" => Level::Verify,
            "secure" => Level::Secure,
            _ => Level::May,
        }
    }

    /// Whether a session without TLS is refused.
    pub fn required(self) -> bool {
        matches!(self, Level::Encrypt | Level::Verify | Level::Secure)
    }

    /// Whether the certificate must be verified.
    pub fn verifies(self) -> bool {
        matches!(self, Level::Verify | Level::Secure)
    }
}

/// How far a server's certificate was trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Chains to a trusted root and names the server.
    Verified,
    /// Chains to a trusted root, another name.
    Trusted,
    /// Does not chain to a trusted root.
    Untrusted,
}

impl Trust {
    /// The word Postfix's log starts the line with.
    pub fn word(self) -> &'static str {
        match self {
            Trust::Verified => "Verified",
            Trust::Trusted => "Trusted",
            Trust::Untrusted => "Untrusted",
        }
    }
}

/// What the log says of an established session, as Postfix's log says it
/// (OpenSSL's names, which log readers match):
/// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange
/// X25519`. A protocol, suite or group without an OpenSSL name keeps
/// rustls's (the bits and the key exchange are then left out).
pub fn session_summary(
    version: Option<ProtocolVersion>,
    suite: Option<CipherSuite>,
    group: Option<NamedGroup>,
) -> String {
    let version = match version {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        Some(v) => v.as_str().unwrap_or("TLS"),
        None => "TLS",
    };
    let cipher = match suite.map(openssl_cipher) {
        Some(Ok((name, bits))) => format!("{name} ({bits}/{bits} bits)"),
        Some(Err(suite)) => suite.as_str().unwrap_or("unknown").to_string(),
        None => "unknown".to_string(),
    };
    let kex = match group {
        Some(NamedGroup::X25519) => " key-exchange X25519",
        Some(NamedGroup::X448) => " key-exchange X448",
        Some(NamedGroup::secp256r1) => " key-exchange ECDHE (prime256v1)",
        Some(NamedGroup::secp384r1) => " key-exchange ECDHE (secp384r1)",
        Some(NamedGroup::secp521r1) => " key-exchange ECDHE (secp521r1)",
        _ => "",
    };
    format!("{version} with cipher {cipher}{kex}")
}

/// OpenSSL's name of a suite rustls offers, and its key length in bits.
fn openssl_cipher(suite: CipherSuite) -> Result<(&'static str, u32), CipherSuite> {
    Ok(match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => ("TLS_AES_128_GCM_SHA256", 128),
        CipherSuite::TLS13_AES_256_GCM_SHA384 => ("TLS_AES_256_GCM_SHA384", 256),
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => ("TLS_CHACHA20_POLY1305_SHA256", 256),
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => {
            ("ECDHE-ECDSA-AES128-GCM-SHA256", 128)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => {
            ("ECDHE-ECDSA-AES256-GCM-SHA384", 256)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-ECDSA-CHACHA20-POLY1305", 256)
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-RSA-AES128-GCM-SHA256", 128),
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-RSA-AES256-GCM-SHA384", 256),
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-RSA-CHACHA20-POLY1305", 256)
        }
        other => return Err(other),
    })
}

/// Reads PEM certificates from a file.
fn certs_from(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: cannot read PEM certificates: {e}", path.display()))
}

/// The trust anchors: CAfile and CApath when set, else the platform's.
pub fn roots(ca_file: &str, ca_path: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    if ca_file.is_empty() && ca_path.is_empty() {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            log::warn!("system trust anchors: {e}");
        }
        let (_, bad) = store.add_parsable_certificates(loaded.certs);
        if bad > 0 {
            log::warn!("system trust anchors: {bad} certificates not usable");
        }
        return Ok(store);
    }
    let mut files = Vec::new();
    if !ca_file.is_empty() {
        files.push(std::path::PathBuf::from(ca_file));
    }
    if !ca_path.is_empty() {
        let dir =
            std::fs::read_dir(ca_path).map_err(|e| format!("smtp_tls_CApath {ca_path}: {e}"))?;
        for entry in dir.flatten() {
            if entry
                .file_type()
                .is_ok_and(|t| t.is_file() || t.is_symlink())
            {
                files.push(entry.path());
            }
        }
    }
    for f in files {
        for cert in certs_from(&f)? {
            store
                .add(cert)
                .map_err(|e| format!("{}: not a usable certificate authority: {e}", f.display()))?;
        }
    }
    Ok(store)
}

/// Verifies as the level asks, and records how far the certificate was
/// trusted (for the log line).
#[derive(Debug)]
struct Recording {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    verify: bool,
    trust: Arc<Mutex<Option<Trust>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = match &self.webpki {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        };
        let trust = match &result {
            Ok(_) => Trust::Verified,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Trust::Trusted,
            Err(_) => Trust::Untrusted,
        };
        if let Ok(mut t) = self.trust.lock() {
            *t = Some(trust);
        }
        if self.verify {
            result
        } else {
            Ok(ServerCertVerified::assertion())
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Where the verifier leaves how far it trusted the certificate.
pub type TrustCell = Arc<Mutex<Option<Trust>>>;

/// What a session needs to start TLS.
#[derive(Debug, Clone)]
pub struct Tls {
    roots: Arc<RootCertStore>,
    client_cert: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    /// Only TLS 1.3 (`!TLSv1.2` in smtp_tls_mandatory_protocols), at the
    /// mandatory levels.
    tls13_only: bool,
}

impl Tls {
    /// Loads the trust anchors and the client certificate (at start-up,
    /// while the files can still be read as root).
    pub fn load(
        ca_file: &str,
        ca_path: &str,
        cert_file: &str,
        key_file: &str,
        mandatory_protocols: &[String],
    ) -> Result<Tls, String> {
        let client_cert = if cert_file.is_empty() {
            None
        } else {
            let chain = certs_from(Path::new(cert_file))?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| format!("smtp_tls_key_file {key_file}: {e}"))?;
            Some((chain, Arc::new(key)))
        };
        Ok(Tls {
            roots: Arc::new(roots(ca_file, ca_path)?),
            client_cert,
            tls13_only: mandatory_protocols.iter().any(|p| p == "!TLSv1.2"),
        })
    }

    /// A client configuration for `level`; the returned cell holds the
    /// trust found once the handshake is over.
    pub fn config(&self, level: Level) -> Result<(Arc<ClientConfig>, TrustCell), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = if self.roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(
                    Arc::clone(&self.roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| format!("cannot build the certificate verifier: {e}"))?,
            )
        };
        let trust = Arc::new(Mutex::new(None));
        let verifier = Recording {
            webpki,
            provider: Arc::clone(&provider),
            verify: level.verifies(),
            trust: Arc::clone(&trust),
        };
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls13_only && level.required()
        {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS protocol versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let config = match &self.client_cert {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("smtp_tls_cert_file: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        Ok((Arc::new(config), trust))
    }
}

/// The name to verify: an address literal as such, else a DNS name.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|e| format!("{name}: not a usable TLS server name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_described_with_openssls_names_as_postfix_logs_them() {
        // As Postfix 3.7's smtp logged a session with its smtpd (OpenSSL 3).
        assert_eq!(
            session_summary(
                Some(ProtocolVersion::TLSv1_3),
                Some(CipherSuite::TLS13_AES_256_GCM_SHA384),
                Some(NamedGroup::X25519)
            ),
            "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519"
        );
        assert_eq!(
            session_summary(
                Some(ProtocolVersion::TLSv1_2),
                Some(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
                Some(NamedGroup::secp256r1)
            ),
            "TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits) \
             key-exchange ECDHE (prime256v1)"
        );
        assert_eq!(
            session_summary(
                Some(ProtocolVersion::TLSv1_3),
                Some(CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
                None
            ),
            "TLSv1.3 with cipher TLS_CHACHA20_POLY1305_SHA256 (256/256 bits)"
        );
    }

    #[test]
    fn what_has_no_openssl_name_keeps_rustls_s() {
        assert_eq!(
            session_summary(
                Some(ProtocolVersion::TLSv1_3),
                Some(CipherSuite::TLS13_AES_128_CCM_SHA256),
                Some(NamedGroup::X25519MLKEM768)
            ),
            "TLSv1.3 with cipher TLS13_AES_128_CCM_SHA256"
        );
        assert_eq!(session_summary(None, None, None), "TLS with cipher unknown");
    }
}
