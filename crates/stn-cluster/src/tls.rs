//! Mutual TLS for the cluster. With `--tls-cert`, `--tls-key` and `--tls-ca`, every port of
//! `stn-scheduler` (gRPC, REST and Flight SQL on one port) and of `stn-executor` (its Flight
//! port, which serves task results and shuffle data) speaks TLS only and admits only peers
//! that present a certificate signed by the cluster's CA (`--tls-ca`): executors, the scheduler
//! and clients each present their own. Every connection the programs open (executor to
//! scheduler, executor to executor, scheduler to executor, client to both) is TLS with the
//! process's certificate and checks the other side's against the same CA. A plaintext
//! connection, or one without a certificate of the CA, is refused during the handshake: it
//! reaches no service.
//!
//! Ballista 55 builds its servers without a TLS hook; [`serve_scheduler`] and
//! [`flight_server`] assemble the same services behind TLS. Under TLS the executors pull their
//! tasks (Ballista's pull-staged scheduling), so no executor gRPC server is opened at all.
//! The executors' health probes (plain HTTP, no data) listen on 127.0.0.1 only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::{EndpointOverrideFn, SessionConfigExt};
use datafusion::prelude::SessionConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use zeroize::Zeroizing;

/// How long a peer may take for its TLS handshake before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS flags of the cluster programs and clients: the certificate chain this process
/// presents (to clients as a server, to servers as a client), its private key, and the CA that
/// signed the certificates of every process of the cluster and of its clients.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct TlsArgs {
    /// TLS: this process's certificate chain (PEM). With --tls-key and --tls-ca, every port
    /// speaks TLS only and admits only peers with a certificate signed by --tls-ca.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// TLS: the cluster's CA certificate (PEM): the certificates of the scheduler, the executors
    /// and the clients must be signed by it.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS of these flags: None when none is given; an error naming the file and the
    /// problem when one cannot be read, is not PEM, or the key does not match the certificate.
    pub fn load(&self) -> Result<Option<ClusterTls>, String> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(c), Some(k), Some(a)) => ClusterTls::load(c, k, a).map(Some),
            _ => Err("--tls-cert, --tls-key and --tls-ca are given together".into()),
        }
    }
}

/// A process's TLS material, checked: its certificate chain and key, and the cluster's CA. The
/// key is zeroed when the last copy drops, and `Debug` shows none of it.
#[derive(Clone)]
pub struct ClusterTls {
    cert_pem: Arc<Vec<u8>>,
    key_pem: Arc<Zeroizing<Vec<u8>>>,
    ca_pem: Arc<Vec<u8>>,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls { certificate, private key: <redacted>, CA }")
    }
}

/// The crypto of every TLS connection here (rustls with ring, the one the workspace builds).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's rustls provider (tonic's servers take the process default); a
/// second call, or one after another provider was installed, changes nothing.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ClusterTls {
    /// Reads and checks the three files (see [`TlsArgs`]).
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, String> {
        let read =
            |flag: &str, p: &Path| std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display()));
        let cert_pem = read("--tls-cert", cert)?;
        let key_pem = Zeroizing::new(read("--tls-key", key)?);
        let ca_pem = read("--tls-ca", ca)?;
        Self::from_pem(cert_pem, key_pem, ca_pem, [cert, key, ca])
    }

    fn from_pem(
        cert_pem: Vec<u8>,
        key_pem: Zeroizing<Vec<u8>>,
        ca_pem: Vec<u8>,
        [cert, key, ca]: [&Path; 3],
    ) -> Result<Self, String> {
        let certs = |flag: &str, p: &Path, pem: &[u8]| -> Result<Vec<CertificateDer<'static>>, String> {
            let v = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{flag} {}: not a PEM certificate file: {e}", p.display()))?;
            if v.is_empty() {
                return Err(format!("{flag} {}: no PEM certificate in it", p.display()));
            }
            Ok(v)
        };
        let chain = certs("--tls-cert", cert, &cert_pem)?;
        let cas = certs("--tls-ca", ca, &ca_pem)?;
        // The parser's error is not shown: it may quote a line of the key file.
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            format!("--tls-key {}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)", key.display())
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in cas {
            roots
                .add(c)
                .map_err(|e| format!("--tls-ca {}: not a usable CA certificate: {e}", ca.display()))?;
        }
        let roots = Arc::new(roots);
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), private.clone_key())
            .map_err(|e| format!("--tls-cert {} with --tls-key {}: {e}", cert.display(), key.display()))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private)
            .map_err(|e| format!("--tls-cert {} with --tls-key {}: {e}", cert.display(), key.display()))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ClusterTls {
            cert_pem: Arc::new(cert_pem),
            key_pem: Arc::new(key_pem),
            ca_pem: Arc::new(ca_pem),
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(self.cert_pem.as_slice(), self.key_pem.as_slice())
    }

    /// The server side for tonic servers: this process's certificate, client certificates of
    /// the CA required.
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(self.ca_pem.as_slice()))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The server side as a rustls configuration (the scheduler's port): client certificates of
    /// the CA required, HTTP/2 and HTTP/1.1 offered.
    pub fn rustls_server(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// The client side as a rustls configuration (for plain HTTPS, such as the scheduler's REST
    /// API): the server's certificate checked against the CA, this process's presented.
    pub fn rustls_client(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// The client side: the server's certificate checked against the CA (and the name or
    /// address connected to), this process's certificate presented.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca_pem.as_slice()))
            .identity(self.identity())
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// Ballista's hook for every gRPC / Flight connection it opens: TLS with
    /// [`ClusterTls::client_tls`], on `https` (Ballista writes some addresses as `http://`
    /// whatever the configuration; they are rewritten).
    pub fn endpoint_override(&self) -> EndpointOverrideFn {
        let tls = self.client_tls();
        Arc::new(move |endpoint: Endpoint| {
            let endpoint = match endpoint.uri().scheme_str() {
                Some("https") => endpoint,
                _ => {
                    let uri = endpoint.uri();
                    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
                    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
                    let path = if path == "/" { "" } else { path };
                    ballista_core::utils::create_grpc_client_endpoint(
                        format!("https://{authority}{path}"),
                        None,
                    )
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
                }
            };
            endpoint
                .tls_config(tls.clone())
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
    }

    /// `config` with every connection of a Ballista session made over TLS (a client's queries
    /// and result fetches; an executor's shuffle reads).
    pub fn session(&self, config: SessionConfig) -> SessionConfig {
        config
            .with_ballista_use_tls(true)
            .with_ballista_override_create_grpc_client_endpoint(self.endpoint_override())
    }
}

/// A listener that hands out connections only once their TLS handshake has succeeded (with a
/// client certificate of the CA). Handshakes run concurrently, each within
/// [`HANDSHAKE_TIMEOUT`], so a slow or silent peer delays nobody; a failed one is logged (at
/// debug level, with the peer's address) and dropped.
pub struct TlsListener {
    incoming:
        tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS on `tcp` with `config`.
    pub fn new(tcp: tokio::net::TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, incoming) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, handed) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = handed.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => log::debug!("TLS handshake with {peer} refused: {e}"),
                        Err(_) => log::debug!("TLS handshake with {peer}: no answer in time"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { incoming, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(c) => c,
            // The accepting task only ends when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves a scheduler on `listener` as Ballista 55's `start_grpc_service_with_listener` does
/// (the scheduler's gRPC service, the Flight SQL front end or the Flight proxy, the REST API, on
/// one port), behind TLS. (Ballista's health routes are internal to it and are not served.)
pub async fn serve_scheduler(
    listener: tokio::net::TcpListener,
    scheduler: ballista_scheduler::scheduler_server::SchedulerServer<
        datafusion_proto::protobuf::LogicalPlanNode,
        datafusion_proto::protobuf::PhysicalPlanNode,
    >,
    tls: &ClusterTls,
) -> ballista_core::error::Result<()> {
    use arrow_flight::flight_service_server::FlightServiceServer;
    use ballista_core::extension::BallistaConfigGrpcEndpoint;
    use ballista_core::flight_proxy_service::BallistaFlightProxyService;
    use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;

    let config = scheduler.state.config.clone();
    let max_decoding = config.grpc_server_max_decoding_message_size as usize;
    let max_encoding = config.grpc_server_max_encoding_message_size as usize;
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(
        SchedulerGrpcServer::new(scheduler.clone())
            .max_encoding_message_size(max_encoding)
            .max_decoding_message_size(max_decoding),
    );
    let customize = config
        .override_create_grpc_client_endpoint
        .clone()
        .map(|f| Arc::new(BallistaConfigGrpcEndpoint::new(f)));
    let proxy = BallistaFlightProxyService::new(max_decoding, max_encoding, config.use_tls, customize);
    let scheduler = Arc::new(scheduler);
    if config.flight_sql_enabled() {
        let mut flight_sql = ballista_flight_sql::BallistaFlightSqlService::new(scheduler.clone(), proxy);
        if let Some(a) = config.override_flight_sql_authenticator.clone() {
            flight_sql = flight_sql.with_authenticator(a);
        }
        routes.add_service(
            FlightServiceServer::new(flight_sql)
                .max_decoding_message_size(max_decoding)
                .max_encoding_message_size(max_encoding),
        );
    } else if config.enable_embedded_flight_proxy {
        routes.add_service(
            FlightServiceServer::new(proxy)
                .max_decoding_message_size(max_decoding)
                .max_encoding_message_size(max_encoding),
        );
    }
    let grpc = routes.routes().into_axum_router();
    let router = if config.disable_rest_api {
        grpc
    } else {
        ballista_scheduler::api::get_routes(scheduler).merge(grpc)
    };
    let router = router.fallback(|| async { axum::http::StatusCode::NOT_FOUND });
    // Each connection's requests carry its peer's address, as with Ballista's own server (the
    // scheduler takes an executor's address from it when the executor names none).
    let connections = tower::service_fn(move |incoming: axum::serve::IncomingStream<'_, TlsListener>| {
        let peer = axum::extract::ConnectInfo(*incoming.remote_addr());
        let router = router.clone().layer(axum::Extension(peer));
        async move { Ok::<_, std::convert::Infallible>(router) }
    });
    axum::serve(TlsListener::new(listener, tls.rustls_server())?, connections)
        .await
        .map_err(ballista_core::error::BallistaError::from)
}

/// The executor's Flight service (task results and shuffle data, from its work folder) as
/// Ballista's built-in one, behind `tls`: Ballista's hook for its own Flight server.
pub fn flight_server(
    tls: ClusterTls,
    max_encoding: usize,
    max_decoding: usize,
) -> Arc<ballista_executor::ArrowFlightServerProvider> {
    use arrow_flight::flight_service_server::FlightServiceServer;
    use ballista_executor::flight_service::BallistaFlightService;
    Arc::new(move |work_dir, address, mut shutdown, grpc_config| {
        let tls = tls.server_tls();
        tokio::spawn(async move {
            log::info!("Flight service listening with TLS on {address}");
            ballista_core::utils::create_grpc_server(&grpc_config)
                .tls_config(tls)?
                .add_service(
                    FlightServiceServer::new(BallistaFlightService::new(work_dir))
                        .max_decoding_message_size(max_decoding)
                        .max_encoding_message_size(max_encoding),
                )
                .serve_with_shutdown(address, shutdown.recv())
                .await
                .map_err(ballista_core::error::BallistaError::TonicError)
        })
    })
}
