//! TLS failures as one readable reason each, for logs, errors and
//! `sluice_tls_errors_total`.

use super::*;

/// A handshake error as a person reads it.
pub fn reason(e: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not yet valid"
            }
            CertificateError::UnknownIssuer => "certificate signed by an unknown CA",
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate not valid for this name"
            }
            CertificateError::BadSignature => "bad certificate signature",
            CertificateError::Revoked => "certificate revoked",
            _ => "bad certificate",
        },
        E::NoCertificatesPresented => "no client certificate",
        E::InvalidMessage(_) => "not TLS (plaintext sent to a TLS port?)",
        E::AlertReceived(a) => match a {
            rustls::AlertDescription::UnknownCA => "the peer does not trust our certificate's CA",
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::CertificateUnknown => "the peer refused our certificate",
            rustls::AlertDescription::CertificateExpired => "the peer says our certificate expired",
            rustls::AlertDescription::CertificateRequired => {
                "the peer requires a client certificate"
            }
            _ => "the peer ended the handshake",
        },
        E::PeerIncompatible(_) => "no TLS version or cipher in common",
        _ => "handshake failed",
    }
}

/// Every reason [`reason`] and [`io_reason`] give.
pub(super) const REASONS: &[&str] = &[
    "certificate expired",
    "certificate not yet valid",
    "certificate signed by an unknown CA",
    "certificate not valid for this name",
    "bad certificate signature",
    "certificate revoked",
    "bad certificate",
    "no client certificate",
    "not TLS (plaintext sent to a TLS port?)",
    "the peer does not trust our certificate's CA",
    "the peer refused our certificate",
    "the peer says our certificate expired",
    "the peer requires a client certificate",
    "the peer ended the handshake",
    "no TLS version or cipher in common",
    "handshake failed",
    "the peer closed during the handshake",
    "connection failed during the handshake",
    "no handshake within 10 s",
];

/// The TLS error somewhere in an error's chain: its reason and the error.
pub fn reason_in_chain(e: &(dyn std::error::Error + 'static)) -> Option<(&'static str, String)> {
    // An `io::Error`'s `source` skips what it wraps: look inside it too
    // (a connector wraps the handshake's I/O error in another).
    fn inside<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
        inside(inner)
    }
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = at {
        if let Some(tls) = inside(err) {
            return Some((reason(tls), tls.to_string()));
        }
        at = err.source();
    }
    None
}

/// The reason in a message made from [`reason_in_chain`] (`TLS with ...
/// failed: REASON (...)`), for counting.
pub fn reason_of_message(message: &str) -> Option<&'static str> {
    let rest = message.strip_prefix("TLS with ")?;
    let (_, rest) = rest.split_once(" failed: ")?;
    REASONS.iter().copied().find(|r| rest.starts_with(r))
}

/// The handshake error inside an I/O error, as a person reads it.
pub fn io_reason(e: &std::io::Error) -> &'static str {
    match reason_in_chain(e) {
        Some((reason, _)) => reason,
        None => match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the peer closed during the handshake",
            _ => "connection failed during the handshake",
        },
    }
}
