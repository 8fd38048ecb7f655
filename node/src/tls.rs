//! TLS for the peer port (mutual: both ends show a certificate of the cluster's CA) and the
//! admin API (server certificate only; callers prove themselves with tokens), on rustls.
//!
//! The config names three PEM files: the cluster CA, this node's certificate chain and its key.
//! They are read and checked when the config is validated, so `tandem config check` finds a
//! wrong path, a key that does not match its certificate or a certificate the CA did not sign.

use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::err;
use crate::config::ConfigError;

/// Largest PEM file read.
pub const TLS_FILE_MAX_BYTES: u64 = 1024 * 1024;
/// Longest a TLS handshake on a listening port may take.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Most handshakes in progress on one listening port; more connections wait their turn.
pub const TLS_HANDSHAKES_MAX: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default = "yes")]
    admin: bool,
}

fn yes() -> bool {
    true
}

/// `[tls]` after validation: absolute paths, and whether the admin API is served over TLS too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub admin: bool,
}

fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > TLS_FILE_MAX_BYTES {
        return Err(err(
            key,
            format!(
                "{} is {} bytes; TLS_FILE_MAX_BYTES is {TLS_FILE_MAX_BYTES}",
                path.display(),
                meta.len()
            ),
        ));
    }
    std::fs::read(path).map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))
}

pub(crate) fn validate_tls(raw: RawTls, base: &Path) -> Result<TlsSpec, ConfigError> {
    let spec = TlsSpec {
        ca_file: base.join(raw.ca_file),
        cert_file: base.join(raw.cert_file),
        key_file: base.join(raw.key_file),
        admin: raw.admin,
    };
    #[cfg(feature = "tls")]
    {
        let m = real::Material::load(&spec)?;
        real::check(&m)?;
    }
    #[cfg(not(feature = "tls"))]
    {
        for (key, path) in [
            ("tls.ca_file", &spec.ca_file),
            ("tls.cert_file", &spec.cert_file),
            ("tls.key_file", &spec.key_file),
        ] {
            read_pem(key, path)?;
        }
        return Err(err(
            "tls",
            "this tandem was built without TLS (the `tls` feature); use a standard build",
        ));
    }
    #[allow(unreachable_code)]
    Ok(spec)
}

#[cfg(feature = "tls")]
pub use real::*;

#[cfg(feature = "tls")]
mod real {
    use std::io;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use tokio::io::AsyncRead;
    use tokio::io::AsyncWrite;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;

    use super::*;

    pub(crate) struct Material {
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    }

    fn certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let pem = read_pem(key, path)?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| err(key, format!("{} is not a PEM certificate file: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(err(
                key,
                format!(
                    "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            ));
        }
        Ok(certs)
    }

    impl Material {
        pub(crate) fn load(spec: &TlsSpec) -> Result<Self, ConfigError> {
            let ca = certs("tls.ca_file", &spec.ca_file)?;
            let chain = certs("tls.cert_file", &spec.cert_file)?;
            let pem = read_pem("tls.key_file", &spec.key_file)?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                err(
                    "tls.key_file",
                    format!(
                        "{} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
                        spec.key_file.display()
                    ),
                )
            })?;
            Ok(Self { ca, chain, key })
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(m: &Material) -> Result<Arc<rustls::RootCertStore>, ConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &m.ca {
            roots
                .add(c.clone())
                .map_err(|e| err("tls.ca_file", format!("not a usable CA certificate: {e}")))?;
        }
        Ok(Arc::new(roots))
    }

    /// The key matches the certificate, and the CA signed the certificate for both ends of a
    /// connection (a peer is server and client).
    pub(crate) fn check(m: &Material) -> Result<(), ConfigError> {
        server_config(m, true)?;
        client_config(m)?;
        let roots = roots(m)?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| err("tls.ca_file", e.to_string()))?;
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_client_cert(&m.chain[0], &m.chain[1..], now)
            .map_err(|e| {
                err(
                    "tls.cert_file",
                    format!("this certificate does not verify against tls.ca_file as a peer's: {e}"),
                )
            })?;
        Ok(())
    }

    fn server_config(m: &Material, mutual: bool) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("tls", e.to_string()))?;
        let builder = if mutual {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(m)?, provider())
                .build()
                .map_err(|e| err("tls.ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(m.chain.clone(), m.key.clone_key())
            .map_err(|e| err("tls.key_file", format!("does not match tls.cert_file: {e}")))?;
        Ok(Arc::new(config))
    }

    fn client_config(m: &Material) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("tls", e.to_string()))?
            .with_root_certificates(roots(m)?)
            .with_client_auth_cert(m.chain.clone(), m.key.clone_key())
            .map_err(|e| err("tls.key_file", format!("does not match tls.cert_file: {e}")))?;
        Ok(Arc::new(config))
    }

    /// What a listening port serves with: the peer port asks for the other node's
    /// certificate, the admin port does not.
    pub fn acceptor(spec: &TlsSpec, mutual: bool) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        let m = Material::load(spec)?;
        Ok(tokio_rustls::TlsAcceptor::from(server_config(&m, mutual)?))
    }

    /// How this node connects to its peers: its own certificate, and only the cluster's CA
    /// trusted.
    pub fn peer_client_config(spec: &TlsSpec) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        Ok(client_config(&Material::load(spec)?)?)
    }

    /// A connection accepted by a [`NodeListener`], plain or TLS.
    pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

    /// A listening port for axum that hands over connections, after their TLS handshake when
    /// it has an acceptor. Handshakes run beside each other, each within
    /// [`TLS_HANDSHAKE_TIMEOUT`], so a slow client holds up no one.
    pub struct NodeListener {
        rx: mpsc::Receiver<(Box<dyn Io>, SocketAddr)>,
        local: SocketAddr,
    }

    impl NodeListener {
        pub fn new(
            listener: TcpListener,
            tls: Option<tokio_rustls::TlsAcceptor>,
            what: &'static str,
        ) -> io::Result<Self> {
            let local = listener.local_addr()?;
            let (tx, rx) = mpsc::channel::<(Box<dyn Io>, SocketAddr)>(64);
            let handshakes = Arc::new(tokio::sync::Semaphore::new(TLS_HANDSHAKES_MAX));
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = tx.closed() => return,
                        a = listener.accept() => a,
                    };
                    let (stream, addr) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of descriptors and the like: wait, then go on listening.
                            tracing::warn!(error = %e, "{what}: accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    match &tls {
                        None => {
                            if tx.send((Box::new(stream), addr)).await.is_err() {
                                return;
                            }
                        }
                        Some(acceptor) => {
                            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                                return;
                            };
                            let acceptor = acceptor.clone();
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                let _permit = permit;
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => {
                                        let _ = tx.send((Box::new(tls), addr)).await;
                                    }
                                    Ok(Err(e)) => tracing::debug!(%addr, error = %e, "{what}: TLS handshake failed"),
                                    Err(_) => tracing::debug!(%addr, "{what}: TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
            });
            Ok(Self { rx, local })
        }
    }

    impl axum::serve::Listener for NodeListener {
        type Io = Box<dyn Io>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            match self.rx.recv().await {
                Some(conn) => conn,
                // The accept task only ends when this listener is dropped.
                None => std::future::pending().await,
            }
        }

        fn local_addr(&self) -> io::Result<Self::Addr> {
            Ok(self.local)
        }
    }
}
