//! PostgreSQL through tokio-postgres: a pool of connections of our own,
//! each statement prepared once per connection, and the statements of a
//! request sent together.
//!
//! What a PostgreSQL request costs here is round trips: the bot sends a
//! statement, the server's process wakes, answers, and the bot's task wakes
//! again (BENCHMARKS.md, "PostgreSQL: where a click's time goes"). The
//! protocol lets a client send several statements before reading any
//! answer, and the server runs them in order; tokio-postgres does so for
//! requests made together. A transaction uses that: its `BEGIN` goes with
//! its first read, the writes whose answers nobody reads wait and go with
//! the next read or with the `COMMIT`, so a click is two round trips — the
//! run's lock and its rows, then the writes and the commit.
//!
//! The pool keeps up to [`POOL_SIZE`] connections and hands the most
//! recently used one out first. A transaction dropped before its commit (a
//! refusal, a failed statement, a request whose client went away) is rolled
//! back in a task of its own before its connection serves anyone else, so
//! its row locks are released at once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::{join3, join_all, try_join_all};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::batch::Batch;
use super::sql::{self, Arg, Row};

/// Connections the pool keeps open at most.
pub(super) const POOL_SIZE: usize = 10;
/// How long a request waits for a free connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a connection (TCP, TLS, authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Prepared statements kept per connection; past it they are all closed
/// and prepared again as they come.
const KEPT_STATEMENTS: usize = 256;

/// A pool of PostgreSQL connections.
pub(super) struct Pg {
    config: tokio_postgres::Config,
    tls: tls::Connector,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

/// One connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// What one statement of a pipeline answers with.
enum Answer {
    Rows(Vec<tokio_postgres::Row>),
    Count(u64),
}

/// What one statement of a pipeline answered: its rows, and how many rows
/// it changed (or answered with).
pub(super) struct Answered {
    pub rows: Vec<Row>,
    pub changed: u64,
}

/// One statement of a pipeline: its text, its arguments, and whether its
/// rows are read (else only the count of rows it changed).
#[derive(Clone, Copy)]
pub(super) struct Step<'a> {
    pub sql: &'a str,
    pub args: &'a [Arg],
    pub rows: bool,
}

impl<'a> Step<'a> {
    /// A statement whose rows are read.
    pub(super) fn rows(sql: &'a str, args: &'a [Arg]) -> Step<'a> {
        Step {
            sql,
            args,
            rows: true,
        }
    }

    /// A statement whose count of changed rows is read.
    pub(super) fn exec(sql: &'a str, args: &'a [Arg]) -> Step<'a> {
        Step {
            sql,
            args,
            rows: false,
        }
    }
}

impl Pg {
    /// A pool for `url`, its settings read but no connection opened yet.
    pub(super) fn new(url: &str) -> Result<Arc<Pg>> {
        let (config, tls) = tls::config(url)?;
        Ok(Arc::new(Pg {
            config,
            tls,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(POOL_SIZE)),
        }))
    }

    /// Open the pool's first connection, to show the settings work.
    pub(super) async fn open_first(&self) -> Result<()> {
        let first = self.open().await?;
        self.idle.lock().expect("the pool's lock").push(first);
        Ok(())
    }

    async fn open(&self) -> Result<Conn> {
        let (client, connection) =
            tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(self.tls.clone()))
                .await
                .context("connecting to PostgreSQL timed out")?
                .context("cannot connect to PostgreSQL")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "a PostgreSQL connection ended");
            }
        });
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }

    /// A connection of the pool, held until the lease is dropped.
    pub(super) async fn lease(self: &Arc<Self>) -> Result<Lease> {
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.clone().acquire_owned())
            .await
            .context("no PostgreSQL connection came free within 10 s")?
            .context("the PostgreSQL pool is closed")?;
        let kept = loop {
            let conn = self.idle.lock().expect("the pool's lock").pop();
            match conn {
                Some(conn) if conn.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match kept {
            Some(conn) => conn,
            None => self.open().await?,
        };
        Ok(Lease {
            conn: Some(conn),
            pool: self.clone(),
            permit: Some(permit),
            open: false,
        })
    }

    /// Close every connection and take no more leases.
    pub(super) fn close(&self) {
        self.permits.close();
        self.idle.lock().expect("the pool's lock").clear();
    }
}

/// A connection taken from the pool; back in it when dropped (after a
/// rollback if a transaction is open on it).
pub(super) struct Lease {
    conn: Option<Conn>,
    pool: Arc<Pg>,
    permit: Option<OwnedSemaphorePermit>,
    /// A `BEGIN` was sent and no `COMMIT` answered.
    open: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if conn.client.is_closed() {
            return;
        }
        if !self.open {
            self.pool.idle.lock().expect("the pool's lock").push(conn);
            return;
        }
        // Without a runtime (one shutting down) the connection is closed,
        // which rolls the transaction back on the server too.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        let permit = self.permit.take();
        runtime.spawn(async move {
            if conn.client.batch_execute("ROLLBACK").await.is_ok() {
                pool.idle.lock().expect("the pool's lock").push(conn);
            }
            drop(permit);
        });
    }
}

impl Lease {
    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a lease holds its connection")
    }

    /// Send `steps` together, after `BEGIN` when `begin` and followed by
    /// `COMMIT` when `commit`, and wait for every answer: one round trip
    /// (two the first time a statement is seen on this connection, to
    /// prepare it). The first failure is the answer; in a transaction it
    /// fails the statements after it too, and the transaction is rolled
    /// back.
    pub(super) async fn pipeline(
        &mut self,
        begin: bool,
        steps: &[Step<'_>],
        commit: bool,
    ) -> Result<Vec<Answered>> {
        if begin {
            self.open = true;
        }
        let statements = self.conn().prepare(steps).await?;
        let client = &self.conn().client;
        let begin_sent = async {
            if begin {
                client.batch_execute("BEGIN").await.context("BEGIN")
            } else {
                Ok(())
            }
        };
        let answers = join_all(
            steps
                .iter()
                .zip(&statements)
                .map(|(step, statement)| async move {
                    let params: Vec<&(dyn ToSql + Sync)> =
                        step.args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                    if step.rows {
                        client.query(statement, &params).await.map(Answer::Rows)
                    } else {
                        client.execute(statement, &params).await.map(Answer::Count)
                    }
                }),
        );
        let commit_sent = async {
            if commit {
                client.batch_execute("COMMIT").await.context("COMMIT")
            } else {
                Ok(())
            }
        };
        let (began, answers, committed) = join3(begin_sent, answers, commit_sent).await;
        if commit {
            // Committed, or ended by the failure reported below.
            self.open = false;
        }
        began?;
        let mut out = Vec::with_capacity(steps.len());
        for (answer, step) in answers.into_iter().zip(steps) {
            out.push(
                match answer.map_err(pg_error).with_context(|| clip(step.sql))? {
                    Answer::Rows(rows) => Answered {
                        changed: rows.len() as u64,
                        rows: sql::from_pg(rows)?,
                    },
                    Answer::Count(changed) => Answered {
                        rows: Vec::new(),
                        changed,
                    },
                },
            );
        }
        committed.map_err(|e| e.context("cannot commit"))?;
        Ok(out)
    }
}

/// A transaction on a connection of its own: `BEGIN` waits for the first
/// statement, and writes whose answer nobody reads wait for the next
/// statement or the commit, and go with it, joined into as few statements
/// as [`Batch`] allows (each statement costs the server a flush of its
/// answer, the largest part of its work per request on this machine).
pub(super) struct Tx {
    lease: Lease,
    begun: bool,
    /// Writes waiting, as the statements they were joined into.
    waiting: Vec<(String, Vec<Arg>)>,
    /// The writes still being joined.
    batch: Batch,
}

impl Tx {
    pub(super) async fn begin(pool: &Arc<Pg>) -> Result<Tx> {
        Ok(Tx {
            lease: pool.lease().await?,
            begun: false,
            waiting: Vec::new(),
            batch: Batch::default(),
        })
    }

    /// A write sent with the transaction's next statement or its commit;
    /// its failure fails that.
    pub(super) fn write(&mut self, sql: &str, args: &[Arg]) {
        if Batch::takes(sql) && self.batch.fits(sql) {
            self.batch.push(sql, args);
            return;
        }
        self.waiting.extend(self.batch.take());
        if Batch::takes(sql) {
            self.batch.push(sql, args);
        } else {
            self.waiting.push((sql.to_string(), args.to_vec()));
        }
    }

    /// Run `steps` (after the waiting writes, and `BEGIN` if this is the
    /// transaction's first round trip); their answers.
    pub(super) async fn run(&mut self, steps: &[Step<'_>]) -> Result<Vec<Answered>> {
        self.send(steps, false).await
    }

    /// Send what waits, and commit with it.
    pub(super) async fn commit(mut self) -> Result<()> {
        self.waiting.extend(self.batch.take());
        if !self.begun && self.waiting.is_empty() {
            return Ok(());
        }
        self.send(&[], true).await.map(drop)
    }

    async fn send(&mut self, steps: &[Step<'_>], commit: bool) -> Result<Vec<Answered>> {
        self.waiting.extend(self.batch.take());
        let waiting = std::mem::take(&mut self.waiting);
        let all: Vec<Step> = waiting
            .iter()
            .map(|(sql, args)| Step {
                sql,
                args,
                rows: false,
            })
            .chain(steps.iter().copied())
            .collect();
        let begin = !self.begun;
        self.begun = true;
        let mut answers = self.lease.pipeline(begin, &all, commit).await?;
        Ok(answers.split_off(waiting.len()))
    }
}

/// One statement outside a transaction, on a connection of the pool.
pub(super) async fn once(pool: &Arc<Pg>, step: Step<'_>) -> Result<Answered> {
    let mut lease = pool.lease().await?;
    let mut answers = lease.pipeline(false, &[step], false).await?;
    Ok(answers.pop().expect("one answer per statement"))
}

impl Conn {
    /// The prepared statement of every step, preparing (together) those
    /// this connection has not seen. Each argument is typed by its kind:
    /// `bigint` or `text`.
    async fn prepare(&mut self, steps: &[Step<'_>]) -> Result<Vec<Statement>> {
        let keys: Vec<String> = steps.iter().map(|s| key(s.sql, s.args)).collect();
        let missing: Vec<usize> = (0..steps.len())
            .filter(|&i| !self.statements.contains_key(&keys[i]))
            .collect();
        if !missing.is_empty() {
            if self.statements.len() + missing.len() > KEPT_STATEMENTS {
                self.statements.clear();
            }
            let client = &self.client;
            let prepared = try_join_all(missing.iter().map(|&i| {
                let step = &steps[i];
                let types: Vec<Type> = step.args.iter().map(arg_type).collect();
                async move {
                    client
                        .prepare_typed(step.sql, &types)
                        .await
                        .map_err(pg_error)
                        .with_context(|| clip(step.sql))
                }
            }))
            .await?;
            for (i, statement) in missing.into_iter().zip(prepared) {
                self.statements.insert(keys[i].clone(), statement);
            }
        }
        Ok(keys.iter().map(|k| self.statements[k].clone()).collect())
    }
}

/// The type an argument is sent as.
fn arg_type(arg: &Arg) -> Type {
    match arg {
        Arg::Int(_) => Type::INT8,
        Arg::Text(_) => Type::TEXT,
    }
}

/// A statement's key among a connection's prepared ones: its arguments'
/// types, then its text.
fn key(sql: &str, args: &[Arg]) -> String {
    let mut key = String::with_capacity(args.len() + 1 + sql.len());
    key.extend(args.iter().map(|a| match a {
        Arg::Int(_) => 'i',
        Arg::Text(_) => 't',
    }));
    key.push('\n');
    key.push_str(sql);
    key
}

/// A PostgreSQL error with the server's message, detail and hint in its text
/// (tokio-postgres shows only "db error" at the top).
fn pg_error(e: tokio_postgres::Error) -> anyhow::Error {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            anyhow::anyhow!(text).context(format!("PostgreSQL error {}", db.code().code()))
        }
        None => anyhow::Error::new(e),
    }
}

/// The start of a statement, to name it in an error.
fn clip(sql: &str) -> String {
    let end = sql.char_indices().nth(80).map_or(sql.len(), |(at, _)| at);
    format!("running: {}", &sql[..end])
}

/// TLS towards PostgreSQL with rustls, as `sslmode` asks: `disable` never,
/// `prefer` (the default) when the server offers it, `require` always;
/// these three encrypt without checking the server's certificate, as libpq
/// does. `verify-ca` checks it against the system's roots (or
/// `sslrootcert`), `verify-full` also checks it names the host.
mod tls {
    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use tokio_postgres::config::SslMode;
    use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

    /// How certificates are checked.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Check {
        Nothing,
        Authority,
        AuthorityAndName,
    }

    /// The connection settings of `url` and its TLS connector. `sslmode`
    /// and `sslrootcert` are read here; every other parameter is
    /// tokio-postgres's (libpq's names).
    pub(super) fn config(url: &str) -> Result<(tokio_postgres::Config, Connector)> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = "prefer".to_string();
        let mut root_cert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .context("a DATABASE_URL parameter is not UTF-8")?
                .into_owned();
            match name {
                "sslmode" => mode = value,
                "sslrootcert" => root_cert = Some(value),
                _ => rest.push(pair),
            }
        }
        let (ssl_mode, check) = match mode.as_str() {
            "disable" => (SslMode::Disable, Check::Nothing),
            "allow" | "prefer" => (SslMode::Prefer, Check::Nothing),
            "require" => (SslMode::Require, Check::Nothing),
            "verify-ca" => (SslMode::Require, Check::Authority),
            "verify-full" => (SslMode::Require, Check::AuthorityAndName),
            other => anyhow::bail!(
                "DATABASE_URL's sslmode must be disable, allow, prefer, require, verify-ca \
                 or verify-full (got {other:?})"
            ),
        };
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            anyhow::anyhow!("DATABASE_URL is not a PostgreSQL URL tminus reads: {e}")
        })?;
        config.ssl_mode(ssl_mode);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("tminus");
        }
        let connector = if ssl_mode == SslMode::Disable {
            Connector { config: None }
        } else {
            Connector {
                config: Some(Arc::new(client_config(check, root_cert.as_deref())?)),
            }
        };
        Ok((config, connector))
    }

    fn client_config(check: Check, root_cert: Option<&str>) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS towards PostgreSQL")?;
        let chain = if check == Check::Nothing {
            None
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match root_cert {
                Some(path) => {
                    use rustls::pki_types::pem::PemObject;
                    for cert in CertificateDer::pem_file_iter(path)
                        .with_context(|| format!("reading sslrootcert {path}"))?
                    {
                        roots
                            .add(cert.with_context(|| format!("reading sslrootcert {path}"))?)
                            .with_context(|| format!("a certificate of sslrootcert {path}"))?;
                    }
                }
                None => {
                    for cert in rustls_native_certs::load_native_certs().certs {
                        // A system root rustls cannot read is left out, as
                        // the HTTP clients do.
                        let _ = roots.add(cert);
                    }
                }
            }
            Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .context("TLS towards PostgreSQL: no root certificate to check against")?,
            )
        };
        let verifier = Arc::new(Verifier {
            provider,
            chain,
            names: check == Check::AuthorityAndName,
        });
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }

    /// Checks the server's certificate as `sslmode` asks: not at all
    /// (`prefer`, `require`), its chain (`verify-ca`), or its chain and
    /// name (`verify-full`). The handshake's signatures are checked in
    /// every mode.
    #[derive(Debug)]
    struct Verifier {
        provider: Arc<rustls::crypto::CryptoProvider>,
        /// The chain's check, `None` for the modes that do not check.
        chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
        names: bool,
    }

    impl ServerCertVerifier for Verifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let Some(chain) = &self.chain else {
                return Ok(ServerCertVerified::assertion());
            };
            match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                )) if !self.names => Ok(ServerCertVerified::assertion()),
                other => other,
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

    /// Makes the TLS session of each new connection.
    #[derive(Clone)]
    pub(super) struct Connector {
        config: Option<Arc<rustls::ClientConfig>>,
    }

    /// The TLS session of one connection to `name`.
    pub(super) struct Connect {
        config: Option<Arc<rustls::ClientConfig>>,
        name: String,
    }

    impl<S> MakeTlsConnect<S> for Connector
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        type Stream = Stream<S>;
        type TlsConnect = Connect;
        type Error = std::io::Error;

        fn make_tls_connect(&mut self, domain: &str) -> std::io::Result<Connect> {
            Ok(Connect {
                config: self.config.clone(),
                name: domain.to_string(),
            })
        }
    }

    impl<S> TlsConnect<S> for Connect
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        type Stream = Stream<S>;
        type Error = std::io::Error;
        type Future = Pin<Box<dyn Future<Output = std::io::Result<Stream<S>>> + Send>>;

        fn connect(self, stream: S) -> Self::Future {
            Box::pin(async move {
                let config = self.config.ok_or_else(|| {
                    std::io::Error::other(
                        "TLS towards PostgreSQL is switched off (sslmode=disable)",
                    )
                })?;
                let name = ServerName::try_from(self.name)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await?;
                Ok(Stream(Box::new(stream)))
            })
        }
    }

    /// A connection's TLS stream.
    pub(super) struct Stream<S>(Box<tokio_rustls::client::TlsStream<S>>);

    impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for Stream<S> {
        fn channel_binding(&self) -> ChannelBinding {
            ChannelBinding::none()
        }
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut *self.0).poll_read(cx, buf)
        }
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut *self.0).poll_write(cx, buf)
        }

        fn poll_flush(
            mut self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut *self.0).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut *self.0).poll_shutdown(cx)
        }
    }
}
