//! A listener's certificate read again when its files change: checked
//! at most once a second, a bad new pair leaving the old one in use.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::base::tls::reloading";

use super::*;

/// The modification times of a certificate and key file.
pub(super) fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(cert), m(key))
}

pub(super) struct Seen {
    pub(super) checked: Instant,
    pub(super) stamps: (Option<SystemTime>, Option<SystemTime>),
}

/// A listener's certificate, re-read when its files change.
#[derive(Debug)]
pub(super) struct Reloading {
    pub(super) cert_file: PathBuf,
    pub(super) key_file: PathBuf,
    pub(super) current: RwLock<Arc<CertifiedKey>>,
    pub(super) seen: Mutex<Seen>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seen")
    }
}

impl Reloading {
    fn maybe_reload(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        seen.checked = Instant::now();
        let now = stamps(&self.cert_file, &self.key_file);
        if now == seen.stamps {
            return;
        }
        seen.stamps = now;
        match load_pair(&self.cert_file, &self.key_file) {
            Ok((ck, info)) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = ck;
                tracing::info!(target: LOG_TARGET, cert = %self.cert_file.display(), subject = %info.subject, not_after = %at(info.not_after), "TLS certificate reloaded");
                if let Some(w) = expiry_warning(&self.cert_file, &info) {
                    tracing::warn!(target: LOG_TARGET, "{w}");
                }
            }
            Err(e) => {
                tracing::error!(target: LOG_TARGET, cert = %self.cert_file.display(), error = %e, "the new TLS certificate is refused; the old one stays");
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.maybe_reload();
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}
