//! TLS: the `tls` tables of listeners (`cert_file`, `key_file`,
//! `client_ca_file`, `min_version`) and of clients (`ca_file`,
//! `cert_file`, `key_file`, `server_name`, `verify`), read from PEM files
//! with rustls (ring), checked before anything runs (files there, parsed,
//! key matching certificate, not expired; a warning within 14 days of
//! expiry), and the errors of handshakes said the way a person reads them.
//!
//! A listener's certificate is re-read when its files change (checked at
//! most once a second, at a handshake): connections open keep going, new
//! ones get the new certificate, and a bad new one leaves the old in place
//! with one log line saying why.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::base::tls";

mod reasons;
mod reloading;

pub use self::reasons::*;
use self::reloading::*;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Deserialize;

use super::metrics::ComponentMetrics;
use super::settings::{BuildContext, BuildError};

/// A certificate expiring sooner than this is warned about.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The oldest TLS version a listener accepts.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V12,
    #[serde(rename = "1.3")]
    V13,
}

/// `tls = {...}` of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The certificate chain (PEM), the listener's own first.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// With it, clients must present a certificate signed by one of these
    /// CAs (mutual TLS); its subject reaches events as `_sluice.peer`.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// `tls = {...}` of a client (a sink or source that connects out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// The CAs to trust (PEM), instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, for servers that ask for one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must hold, when it is not the
    /// host of the address.
    #[serde(default)]
    pub server_name: Option<String>,
    /// `false` accepts any certificate (a warning is logged at start).
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{}: no PEM private key: {e}", path.display()))
}

/// A certificate's subject and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// What `der` says of itself.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A certificate and key read and checked: they match, and the
/// certificate is valid now. Its validity, for warnings.
fn load_pair(cert_file: &Path, key_file: &Path) -> Result<(Arc<CertifiedKey>, CertInfo), String> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unusable private key: {e}", key_file.display()))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "{} does not match the certificate in {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    let info =
        cert_info(ck.cert[0].as_ref()).map_err(|e| format!("{}: {e}", cert_file.display()))?;
    let now = now_secs();
    if info.not_after < now {
        return Err(format!(
            "the certificate in {} ({}) expired {}",
            cert_file.display(),
            info.subject,
            at(info.not_after)
        ));
    }
    if info.not_before > now {
        return Err(format!(
            "the certificate in {} ({}) is not valid before {}",
            cert_file.display(),
            info.subject,
            at(info.not_before)
        ));
    }
    Ok((Arc::new(ck), info))
}

fn at(secs: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
        .map_or_else(|| secs.to_string(), |t| t.to_rfc3339())
}

/// A warning if the certificate expires within 14 days.
fn expiry_warning(file: &Path, info: &CertInfo) -> Option<String> {
    let left = info.not_after - now_secs();
    (left < EXPIRY_WARNING.as_secs() as i64).then(|| {
        format!(
            "the certificate in {} ({}) expires in {} days, at {}",
            file.display(),
            info.subject,
            left / 86_400,
            at(info.not_after)
        )
    })
}

fn roots(ca_file: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca_file)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca_file.display()))?;
    }
    Ok(roots)
}

impl ServerTls {
    /// The same with its paths resolved against the pipeline file.
    pub fn resolved(&self, cx: &BuildContext<'_>) -> ServerTls {
        ServerTls {
            cert_file: cx.resolve(&self.cert_file),
            key_file: cx.resolve(&self.key_file),
            client_ca_file: self.client_ca_file.as_ref().map(|p| cx.resolve(p)),
            min_version: self.min_version,
        }
    }

    /// Check the files (there, parsed, matching, valid now); warnings for
    /// a certificate near its expiry. Paths resolved first.
    pub fn check(&self) -> Result<Vec<String>, BuildError> {
        let (_, info) =
            load_pair(&self.cert_file, &self.key_file).map_err(|e| BuildError::key("tls", e))?;
        if let Some(ca) = &self.client_ca_file {
            roots(ca).map_err(|e| BuildError::key("tls", e))?;
        }
        Ok(expiry_warning(&self.cert_file, &info).into_iter().collect())
    }

    /// The rustls server config: the certificate re-read as its files
    /// change, client certificates required with `client_ca_file`, `alpn`
    /// offered.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, String> {
        let (current, info) = load_pair(&self.cert_file, &self.key_file)?;
        if let Some(w) = expiry_warning(&self.cert_file, &info) {
            tracing::warn!(target: LOG_TARGET, "{w}");
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match self.min_version {
            TlsVersion::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V13 => &[&rustls::version::TLS13],
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca_file {
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                        .build()
                        .map_err(|e| format!("{}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let resolver = Reloading {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            current: RwLock::new(current),
            seen: Mutex::new(Seen {
                checked: Instant::now(),
                stamps: stamps(&self.cert_file, &self.key_file),
            }),
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// Any certificate accepted (`verify = false`); signatures still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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

impl ClientTls {
    /// The same with its paths resolved against the pipeline file.
    pub fn resolved(&self, cx: &BuildContext<'_>) -> ClientTls {
        ClientTls {
            ca_file: self.ca_file.as_ref().map(|p| cx.resolve(p)),
            cert_file: self.cert_file.as_ref().map(|p| cx.resolve(p)),
            key_file: self.key_file.as_ref().map(|p| cx.resolve(p)),
            server_name: self.server_name.clone(),
            verify: self.verify,
        }
    }

    /// The rustls client config (its files read and checked); `alpn`
    /// offered.
    pub fn client_config(
        &self,
        component: &str,
        alpn: &[&[u8]],
    ) -> Result<rustls::ClientConfig, BuildError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| BuildError::key("tls", e.to_string()))?;
        let builder = if !self.verify {
            tracing::warn!(target: LOG_TARGET, component, "tls.verify = false: any server certificate is accepted; this connection can be read and changed by anyone in the middle");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
        } else {
            let roots = match &self.ca_file {
                Some(ca) => roots(ca).map_err(|e| BuildError::key("tls", e))?,
                None => {
                    let mut roots = RootCertStore::empty();
                    for cert in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(cert);
                    }
                    roots
                }
            };
            builder.with_root_certificates(roots)
        };
        let mut config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let (ck, info) = load_pair(cert, key).map_err(|e| BuildError::key("tls", e))?;
                if let Some(w) = expiry_warning(cert, &info) {
                    tracing::warn!(target: LOG_TARGET, component, "{w}");
                }
                let key = read_key(key).map_err(|e| BuildError::key("tls", e))?;
                builder
                    .with_client_auth_cert(ck.cert.clone(), key)
                    .map_err(|e| BuildError::key("tls", e.to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(BuildError::key("tls", "cert_file and key_file go together")),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// A listener's TLS: accepts a connection, says why one fails (logged at
/// most once a minute per reason, every one counted).
pub struct TlsListener {
    acceptor: tokio_rustls::TlsAcceptor,
    component: String,
    metrics: Option<Arc<ComponentMetrics>>,
    logged: Mutex<std::collections::HashMap<&'static str, Instant>>,
}

/// The subject of a client's certificate (mutual TLS), for events.
#[derive(Debug, Clone)]
pub struct Peer(pub Arc<str>);

impl TlsListener {
    pub fn new(
        tls: &ServerTls,
        component: &str,
        alpn: &[&[u8]],
        metrics: Option<Arc<ComponentMetrics>>,
    ) -> Result<Arc<TlsListener>, String> {
        Ok(Arc::new(TlsListener {
            acceptor: tokio_rustls::TlsAcceptor::from(tls.server_config(alpn)?),
            component: component.to_string(),
            metrics,
            logged: Mutex::new(Default::default()),
        }))
    }

    fn failed(&self, why: &'static str, from: Option<std::net::SocketAddr>, detail: &str) {
        if let Some(m) = &self.metrics {
            m.tls_error(why);
        }
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let due = logged
            .get(why)
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if due {
            logged.insert(why, Instant::now());
            tracing::warn!(target: LOG_TARGET, component = %self.component, peer = ?from, reason = why, detail, "TLS handshake failed (logged once a minute per reason; all counted in sluice_tls_errors_total)");
        }
    }

    /// The handshake on `tcp`: the stream and the client certificate's
    /// subject, or `None` (said and counted). Plain HTTP sent here is
    /// answered `400` saying the port speaks TLS.
    pub async fn accept(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> Option<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        Option<Peer>,
    )> {
        use tokio::io::AsyncWriteExt;
        let from = tcp.peer_addr().ok();
        let mut first = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(10), tcp.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] != 0x16 => {
                self.failed("not TLS (plaintext sent to a TLS port?)", from, "");
                if first[0].is_ascii_uppercase() {
                    let mut tcp = tcp;
                    let body = "this port speaks TLS: use https://\n";
                    let _ = tcp
                        .write_all(
                            format!("HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                                .as_bytes(),
                        )
                        .await;
                    let _ = tcp.shutdown().await;
                }
                return None;
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return None,
            Err(_) => {
                self.failed("no handshake within 10 s", from, "");
                return None;
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| cert_info(c.as_ref()).ok())
                    .map(|i| Peer(i.subject.into()));
                Some((stream, peer))
            }
            Ok(Err(e)) => {
                self.failed(io_reason(&e), from, &e.to_string());
                None
            }
            Err(_) => {
                self.failed("no handshake within 10 s", from, "");
                None
            }
        }
    }
}
