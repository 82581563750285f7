//! PostgreSQL: the `postgres` sink (append or upsert, at-least-once or exactly-once) and the
//! `postgres` source (a query or a table, read once).
//!
//! The client is the `postgres` crate (synchronous, over `tokio-postgres`). It runs its own
//! runtime, which cannot run inside the actor's, so each sink or source instance talks to the
//! database through a thread of its own ([`Db`]): the actor hands it a closure and waits.
//!
//! The password never appears in a pipeline: `url` must not hold one; it is read from the
//! environment variable `password_env` names (`PGPASSWORD` by default, as libpq does). Errors
//! and descriptions show the URL without it.

pub mod sink;
pub mod source;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rill_engine::config::{ConfigError, PipelineConfig, Spanned};
use rill_engine::operator::OperatorError;

/// Where to connect, parsed from `url` (password from the environment).
#[derive(Clone)]
pub(crate) struct Target {
    pub config: postgres::Config,
    /// The URL as shown in errors and descriptions: without a password.
    pub shown: String,
    /// TLS (`sslmode`), unless `disable`.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

pub(crate) fn parse_url(url: &Spanned<String>, password_env: Option<&str>, pipeline: &PipelineConfig) -> Result<Target, ConfigError> {
    let (rest, ssl) = take_ssl(&url.value);
    let mut config: postgres::Config = rest.parse().map_err(|e| {
        ConfigError::new(Some(&url.span), format!("`url` is not a PostgreSQL connection string: {e}")).hint("write postgres://USER@HOST:PORT/DATABASE")
    })?;
    if config.get_password().is_some() {
        return Err(ConfigError::new(Some(&url.span), "`url` holds a password, which would then sit in the pipeline file and in logs")
            .hint("leave it out of the URL and set it in the environment: PGPASSWORD (or the variable `password_env` names)"));
    }
    let tls = ssl.client(pipeline, &mut config).map_err(|e| ConfigError::new(Some(&url.span), e))?;
    let var = password_env.unwrap_or("PGPASSWORD");
    if let Ok(p) = std::env::var(var) {
        config.password(p);
    }
    let host = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .next()
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = config.get_dbname().unwrap_or("");
    let shown = format!("postgres://{user}{host}:{port}/{db}");
    Ok(Target { config, shown, tls })
}

/// libpq's TLS settings in the URL (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), taken
/// out of it: tokio-postgres knows only some of them.
#[derive(Default, Debug, PartialEq)]
struct Ssl {
    mode: Option<String>,
    root: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Splits the TLS settings off a connection string (a URL's query, or `key=value` words).
fn take_ssl(url: &str) -> (String, Ssl) {
    let mut ssl = Ssl::default();
    let mut take = |k: &str, v: String| -> bool {
        let slot = match k {
            "sslmode" => &mut ssl.mode,
            "sslrootcert" => &mut ssl.root,
            "sslcert" => &mut ssl.cert,
            "sslkey" => &mut ssl.key,
            _ => return false,
        };
        *slot = Some(v);
        true
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_string(), ssl) };
        let kept: Vec<&str> = query.split('&').filter(|kv| !kv.split_once('=').is_some_and(|(k, v)| take(k, percent_decode(v)))).collect();
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        (rest, ssl)
    } else {
        let kept: Vec<&str> = url.split_whitespace().filter(|kv| !kv.split_once('=').is_some_and(|(k, v)| !v.starts_with('\'') && take(k, v.to_string()))).collect();
        (kept.join(" "), ssl)
    }
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Ssl {
    /// Sets the connection's TLS mode and gives the TLS configuration (none for
    /// `sslmode=disable`), its files read now. As libpq: `prefer` (the default) and `require`
    /// encrypt without checking the server unless `sslrootcert` is given, `verify-ca` checks
    /// that the CA signed its certificate, `verify-full` also that it is for the host.
    fn client(&self, pipeline: &PipelineConfig, config: &mut postgres::Config) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, String> {
        use crate::tls::Verify;
        use postgres::config::SslMode;
        let file = |p: &Option<String>| p.as_deref().map(|p| pipeline.resolve(p).display().to_string());
        let (root, cert, key) = (file(&self.root), file(&self.cert), file(&self.key));
        if cert.is_some() != key.is_some() {
            return Err("`sslcert` and `sslkey` go together: give both (a client certificate and its key) or neither".into());
        }
        if self.root.as_deref() == Some("system") {
            return Err("`sslrootcert=system` (the system's CAs) is not supported".into());
        }
        let (mode, verify) = match self.mode.as_deref().unwrap_or("prefer") {
            "disable" => {
                config.ssl_mode(SslMode::Disable);
                return Ok(None);
            }
            m @ ("prefer" | "require") => (if m == "prefer" { SslMode::Prefer } else { SslMode::Require }, if root.is_some() { Verify::Chain } else { Verify::Nothing }),
            "verify-ca" => (SslMode::Require, Verify::Chain),
            "verify-full" => (SslMode::Require, Verify::Full),
            other => return Err(format!("`sslmode={other}` is not one of disable, prefer, require, verify-ca, verify-full")),
        };
        if verify != Verify::Nothing && root.is_none() {
            return Err(format!("`sslmode={}` checks the server's certificate: give the CA that signed it as `sslrootcert=PATH` (a PEM file)", self.mode.as_deref().unwrap_or_default()));
        }
        config.ssl_mode(mode);
        crate::tls::client_verifying(verify, root.as_deref(), cert.as_deref(), key.as_deref()).map(Some).map_err(|e| format!("`url`'s TLS settings: {e}"))
    }
}

/// How a statement failed.
pub(crate) enum Failure {
    /// The database refused this row's data (SQLSTATE class 22, data exception, or 23,
    /// integrity constraint): the row is dead-lettered with the message.
    Row(String),
    /// The connection is gone (or never came), or the statement may work when tried again
    /// (a deadlock, a serialization failure, a lock wait past `lock_timeout`).
    Lost(String),
    /// Anything else (no such table or column, no permission...): the job fails.
    Fatal(String),
}

impl Failure {
    pub fn of(e: &postgres::Error) -> Failure {
        match e.as_db_error() {
            Some(db) => {
                let mut m = format!("{} ({})", db.message(), db.code().code());
                if let Some(d) = db.detail() {
                    m += &format!(": {d}");
                }
                let code = db.code().code();
                if code.starts_with("22") || code.starts_with("23") {
                    Failure::Row(m)
                } else if code.starts_with("08") || code.starts_with("57P") || code.starts_with("40") || code == "55P03" {
                    Failure::Lost(m)
                } else {
                    Failure::Fatal(m)
                }
            }
            None => Failure::Lost(e.to_string()),
        }
    }

    /// The job error for this failure, after `context`: a lost connection may come back
    /// (external, retried by `restart:`); anything else needs the pipeline or the database
    /// to change.
    pub fn into_error(self, context: &str) -> OperatorError {
        let m = format!("{context}: {}", self.message());
        match self {
            Failure::Lost(_) => OperatorError::external(m),
            _ => OperatorError::user(m),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Row(m) | Failure::Lost(m) | Failure::Fatal(m) => m,
        }
    }
}

/// A connection that comes back: the client, and what it takes to make it again.
pub(crate) struct Conn {
    target: Target,
    client: Option<postgres::Client>,
    /// How long connecting may keep failing before it gives up.
    patience: Duration,
}

impl Conn {
    /// The client, connecting (with backoff, for up to `patience`) if there is none.
    pub fn client(&mut self) -> Result<&mut postgres::Client, String> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            self.client = Some(connect(&self.target, self.patience)?);
        }
        Ok(self.client.as_mut().expect("just made"))
    }

    /// Forgets the client after its connection failed, so that the next call reconnects.
    pub fn lost(&mut self) {
        self.client = None;
    }
}

pub(crate) fn connect(target: &Target, patience: Duration) -> Result<postgres::Client, String> {
    let start = Instant::now();
    let mut wait = Duration::from_millis(50);
    loop {
        let made = match &target.tls {
            Some(tls) => target.config.connect(tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone())),
            None => target.config.connect(postgres::NoTls),
        };
        match made {
            Ok(mut c) => {
                // A lock held by a stuck transaction fails the statement (and the job, which
                // restarts) rather than hanging it for good.
                c.batch_execute("SET lock_timeout = '60s'").map_err(|e| format!("PostgreSQL at {}: {e}", target.shown))?;
                return Ok(c);
            }
            Err(e) => {
                // A refused login or a missing database does not get better by waiting.
                if let Some(db) = e.as_db_error() {
                    return Err(format!("PostgreSQL at {} refused the connection: {} ({})", target.shown, db.message(), db.code().code()));
                }
                // Nor does a failed TLS handshake (a certificate refused, no TLS on the server).
                if let Some(why) = tls_refusal(&e) {
                    return Err(format!("PostgreSQL at {}: {why}", target.shown));
                }
                if start.elapsed() >= patience {
                    return Err(format!("cannot connect to PostgreSQL at {} (tried for {}): {e}", target.shown, humantime::format_duration(Duration::from_secs(patience.as_secs()))));
                }
                tracing::warn!("cannot connect to PostgreSQL at {} ({e}); trying again in {} ms", target.shown, wait.as_millis());
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// The whole story of a failed TLS handshake, or of a connection the server's TLS cut (an alert:
/// our client certificate refused), if that is what `e` is.
fn tls_refusal(e: &postgres::Error) -> Option<String> {
    let mut why = e.to_string();
    let mut tls = why.starts_with("error performing TLS handshake");
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        why += &format!(": {c}");
        let inner = c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).map_or(c, |i| i as &(dyn std::error::Error + 'static));
        tls |= inner.is::<rustls::Error>();
        cause = c.source();
    }
    tls.then_some(why)
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// A thread that owns one connection and runs what it is handed, in order.
pub(crate) struct Db {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub shown: String,
}

impl Db {
    /// Starts the thread and connects (retrying for up to `patience`).
    pub fn open(target: &Target, patience: Duration, name: &str) -> Result<Db, OperatorError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready, is_ready) = mpsc::channel();
        let t = target.clone();
        let thread = std::thread::Builder::new()
            .name(format!("pg-{name}"))
            .spawn(move || {
                let mut conn = Conn { target: t, client: None, patience };
                let first = conn.client().map(|_| ());
                let ok = first.is_ok();
                let _ = ready.send(first);
                if ok {
                    for job in rx {
                        job(&mut conn);
                    }
                }
            })
            .map_err(|e| OperatorError::new(format!("cannot start a thread: {e}")))?;
        is_ready.recv().map_err(|_| OperatorError::new("the PostgreSQL thread stopped"))?.map_err(OperatorError::external)?;
        Ok(Db { jobs: Some(tx), thread: Some(thread), shown: target.shown.clone() })
    }

    /// Runs `f` on the connection's thread and waits for its result.
    pub fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Conn) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .as_ref()
            .expect("open")
            .send(Box::new(move |c| {
                let _ = tx.send(f(c));
            }))
            .expect("the PostgreSQL thread runs while its Db lives");
        rx.recv().expect("the PostgreSQL thread answers")
    }

    /// Hands `f` to the connection's thread without waiting (it reports through its own
    /// channel).
    pub fn submit(&self, f: impl FnOnce(&mut Conn) + Send + 'static) {
        self.jobs.as_ref().expect("open").send(Box::new(f)).expect("the PostgreSQL thread runs while its Db lives");
    }

    /// Runs statements (`;`-separated, no parameters) and maps failures to job errors.
    pub fn batch(&self, sql: String) -> Result<(), OperatorError> {
        let shown = self.shown.clone();
        self.call(move |c| {
            let client = c.client().map_err(OperatorError::external)?;
            client.batch_execute(&sql).map_err(|e| {
                let f = Failure::of(&e);
                if matches!(f, Failure::Lost(_)) {
                    c.lost();
                }
                f.into_error(&format!("PostgreSQL at {shown}"))
            })
        })
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What to do about an error, after it (as the pipeline checks' hints).
pub(crate) trait Hint {
    fn with_hint(self, hint: &str) -> Self;
}

impl Hint for OperatorError {
    fn with_hint(mut self, hint: &str) -> OperatorError {
        self.message = format!("{}\n  hint: {hint}", self.message);
        self
    }
}

/// `name` as an SQL identifier (double-quoted; `schema.table` quoted part by part).
pub(crate) fn ident(name: &str) -> String {
    name.split('.').map(|p| format!("\"{}\"", p.replace('"', "\"\""))).collect::<Vec<_>>().join(".")
}

/// `s` as an SQL string literal.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Epoch milliseconds as a PostgreSQL timestamp literal in UTC (`2026-12-03 05:31:35.123+00`).
pub(crate) fn timestamp_text(ms: i64, out: &mut String) {
    use std::fmt::Write;
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    let _ = write!(out, "{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{milli:03}+00");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = |ms| {
            let mut s = String::new();
            timestamp_text(ms, &mut s);
            s
        };
        assert_eq!(t(0), "1970-01-01 00:00:00.000+00");
        assert_eq!(t(1_764_740_000_123), "2025-12-03 05:33:20.123+00");
        assert_eq!(t(951_782_400_000), "2000-02-29 00:00:00.000+00");
        assert_eq!(t(-1), "1969-12-31 23:59:59.999+00");
    }

    #[test]
    fn identifiers_are_quoted_part_by_part() {
        assert_eq!(ident("public.card \"scores\""), "\"public\".\"card \"\"scores\"\"\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn tls_settings_come_out_of_the_url_and_the_rest_stays() {
        let (rest, ssl) = take_ssl("postgres://rill@db:5432/app?application_name=x&sslmode=verify-full&sslrootcert=certs%2Fca.pem");
        assert_eq!(rest, "postgres://rill@db:5432/app?application_name=x");
        assert_eq!(ssl, Ssl { mode: Some("verify-full".into()), root: Some("certs/ca.pem".into()), cert: None, key: None });
        let (rest, ssl) = take_ssl("postgresql://db/app?sslmode=require");
        assert_eq!((rest.as_str(), ssl.mode.as_deref()), ("postgresql://db/app", Some("require")));
        let (rest, ssl) = take_ssl("host=db user=rill sslmode=verify-ca sslrootcert=ca.pem sslcert=c.pem sslkey=c.key");
        assert_eq!(rest, "host=db user=rill");
        assert_eq!((ssl.cert.as_deref(), ssl.key.as_deref()), (Some("c.pem"), Some("c.key")));
        assert_eq!(take_ssl("postgres://db/app"), ("postgres://db/app".to_string(), Ssl::default()));
    }
}
