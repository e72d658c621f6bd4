//! Running the control plane: open and migrate the database, offer first-run set-up, listen
//! (HTTPS with rustls when a certificate is configured, else plain HTTP for a TLS-terminating
//! proxy in front), and stop gracefully on SIGTERM / Ctrl-C: stop accepting, let requests in
//! flight finish (up to 30 s), close the database.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::api::{self, AppState};
use crate::auth::secret::{random_token, sha256_hex};
use crate::config::{Config, redact_url};
use crate::store::{Store, StoreError, now_us};

/// How long requests in flight may take to finish at shutdown.
pub const DRAIN: Duration = Duration::from_secs(30);
/// How long a first-run token lives.
pub const SETUP_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be opened or migrated.
    #[error("database {url}: {source}")]
    Store {
        /// The URL (password redacted).
        url: String,
        /// What failed.
        source: StoreError,
    },
    /// The address could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; is another process using the port? change `listen`"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The certificate or key file could not be read.
    #[error("cannot read the TLS {what} file {path}: {source}; check the `{setting}` setting")]
    TlsFile {
        /// "certificate" or "private key".
        what: &'static str,
        /// The setting that named it: `tls_cert` or `tls_key`.
        setting: &'static str,
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The certificate or key could not be loaded.
    #[error("cannot load the TLS certificate {cert} / key {key}: {source}")]
    Tls {
        /// Certificate path.
        cert: String,
        /// Key path.
        key: String,
        /// The error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the database named by `config` and applies pending migrations.
pub async fn open_store(config: &Config) -> Result<Store, ServerError> {
    let err = |source| ServerError::Store {
        url: redact_url(&config.database_url),
        source,
    };
    let store = Store::connect(&config.database_url).await.map_err(err)?;
    store.migrate().await.map_err(err)?;
    Ok(store)
}

/// When no account exists yet, withdraws older set-up tokens and makes a new one; the caller
/// shows it to the person starting the server.
pub async fn first_run_token(store: &Store) -> Result<Option<String>, StoreError> {
    if store.any_user_exists().await? {
        return Ok(None);
    }
    store.expire_setup_tokens().await?;
    let token = random_token(24);
    let lifetime = i64::try_from(SETUP_TOKEN_LIFETIME.as_micros()).unwrap_or(i64::MAX / 2);
    store
        .create_setup_token(&sha256_hex(&token), now_us() + lifetime)
        .await?;
    Ok(Some(token))
}

/// The text printed on first start.
pub fn first_run_message(public_url: &str, token: &str) -> String {
    format!(
        "\nFlowLink has no accounts yet. Create the owner account and the first organisation\n\
         within 24 hours with this one-time set-up token:\n\n    {token}\n\n\
         for example:\n    curl -X POST {public_url}/api/v1/setup -H 'content-type: application/json' \\\n      \
         -d '{{\"token\":\"{token}\",\"email\":\"you@example.com\",\"password\":\"a long passphrase\",\"display_name\":\"You\",\"org_name\":\"Acme\",\"org_slug\":\"acme\"}}'\n\n\
         or open {public_url}/ui/setup?token={token} in a browser\n\
         (or: flowlink-control admin create-org / create-user). A new token is printed at each start until then.\n"
    )
}

/// A bound, not yet serving, control plane.
pub struct Server {
    listener: std::net::TcpListener,
    state: AppState,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
}

impl Server {
    /// Binds the listening socket and loads the certificate (so errors surface before start).
    pub async fn bind(state: AppState) -> Result<Server, ServerError> {
        let addr = state.config.listen;
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| ServerError::Bind { addr, source })?;
        listener.set_nonblocking(true)?;
        let tls = match &state.config.tls {
            Some(files) => Some({
                // Name the file that is missing or unreadable before rustls parses either.
                for (what, setting, path) in [
                    ("certificate", "tls_cert", &files.cert),
                    ("private key", "tls_key", &files.key),
                ] {
                    std::fs::File::open(path).map_err(|source| ServerError::TlsFile {
                        what,
                        setting,
                        path: path.display().to_string(),
                        source,
                    })?;
                }
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                    .await
                    .map_err(|source| ServerError::Tls {
                        cert: files.cert.display().to_string(),
                        key: files.key.display().to_string(),
                        source,
                    })?
            }),
            None => None,
        };
        Ok(Server {
            listener,
            state,
            tls,
        })
    }

    /// The bound address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains for up to [`DRAIN`].
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = self.state.clone();
        let housekeeping = tokio::spawn(housekeeping(state.clone()));
        let app = api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        let streams = state.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, draining requests in flight");
            // Open live-update streams would otherwise hold the drain for its whole length.
            crate::ui::events::close_streams(&streams);
            stopper.graceful_shutdown(Some(DRAIN));
        });
        // TCP_NODELAY: a link sends small frames in both directions; with Nagle a frame written
        // while the previous one awaits the peer's delayed ACK waits up to 40 ms (measured:
        // approval decisions reached the proxy 40 ms after the approver's POST).
        use axum_server::accept::NoDelayAcceptor;
        let result = match self.tls {
            Some(tls) => {
                axum_server::from_tcp_rustls(self.listener, tls)?
                    .map(|tls| tls.acceptor(NoDelayAcceptor::new()))
                    .handle(handle)
                    .serve(app)
                    .await
            }
            None => {
                axum_server::from_tcp(self.listener)?
                    .acceptor(NoDelayAcceptor::new())
                    .handle(handle)
                    .serve(app)
                    .await
            }
        };
        housekeeping.abort();
        state.store.close().await;
        tracing::info!("stopped");
        result.map_err(ServerError::Io)
    }
}

/// Hourly: drop ended sessions, forget idle sign-in throttle entries.
async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match state.store.purge_sessions().await {
            Ok(n) if n > 0 => tracing::debug!(sessions = n, "purged ended sessions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not purge ended sessions"),
        }
        state.login_throttle.shrink();
    }
}

/// Resolves on SIGTERM or SIGINT. The signal handlers are installed when this is *called*, not
/// when the future is first polled: call it early (inside the runtime), and a signal that arrives
/// while the server is still starting stops it gracefully once it serves, instead of killing the
/// process with the default action.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                }
                (Ok(mut one), Err(e)) | (Err(e), Ok(mut one)) => {
                    tracing::warn!(error = %e, "cannot watch one of SIGTERM/SIGINT");
                    one.recv().await;
                }
                (Err(e), Err(_)) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT; stop with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
