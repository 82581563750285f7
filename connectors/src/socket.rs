//! `socket` source and sink: TCP, one record per line.
//!
//! The source listens (`mode: server`, the default: every client's lines are read until the job
//! is stopped) or connects (`mode: client`: reads until the peer closes, then ends; a connection
//! that cannot be made or breaks fails the job). Lines are framed as bytes on the instance's own
//! event loop; a line that is not UTF-8 or too long is dead-lettered and reading goes on. They
//! reach the source through a bounded channel, so a slow pipeline slows the reader and TCP
//! pushes back on the sender. The sink connects to a server and writes lines; it is at-least-once.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rill_engine::config::{ConfigError, ConfigErrors, Spanned};
use rill_engine::operator::{Collector, OperatorContext, OperatorError, Sink};
use rill_engine::record::Batch;
use rill_engine::registry::{BuildContext, SinkSpec, SourceSpec};
use rill_engine::source::{Source, SourceContext, SourceOutput, SourceStatus};
use tokio::sync::mpsc;
use bytes::BytesMut;
use tokio_util::codec::FramedRead;

use crate::format::{Decoder, Encoder, FormatConfig};

const MAX_LINE: usize = 1 << 20;

#[derive(serde::Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Server,
    Client,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketSourceConfig {
    /// `host:port` to listen on (server) or connect to (client).
    address: Spanned<String>,
    #[serde(default = "server")]
    mode: Mode,
    #[serde(default)]
    format: FormatConfig,
    /// Client mode: how long to keep trying to connect at start (default 10s).
    #[serde(default, with = "rill_engine::config::de::duration::option")]
    connect_timeout: Option<Duration>,
    /// TLS (see [`crate::tls`]).
    tls: Option<crate::tls::TlsConfig>,
}

/// How a connection is secured: plain TCP, or TLS as a server or a client.
#[derive(Clone)]
enum Secure {
    Plain,
    Server(tokio_rustls::TlsAcceptor),
    Client(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>),
}

/// The `tls` option checked now (its files read), so that a bad one is an error before the run.
fn tls_error(ctx: &BuildContext, e: String) -> ConfigErrors {
    ConfigError::new(ctx.options.get("tls").map(|n| &n.span), format!("tls: {e}")).hint("`tls` takes PEM files: `{cert, key[, client_ca]}` for a server, `{ca[, cert, key, server_name]}` for a client").into()
}

fn server() -> Mode {
    Mode::Server
}

fn parse_addr(a: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
    a.value.parse().map_err(|e| {
        ConfigError::new(Some(&a.span), format!("`{}` is not a socket address: {e}", a.value)).hint("write `address: 127.0.0.1:9000`")
    })
}

pub(crate) fn build_source(ctx: &BuildContext) -> Result<SourceSpec, ConfigErrors> {
    let cfg: SocketSourceConfig = ctx.options()?;
    let addr = parse_addr(&cfg.address)?;
    let format = cfg.format.build()?;
    let mode = cfg.mode;
    let connect_timeout = cfg.connect_timeout.unwrap_or(Duration::from_secs(10));
    let tls = cfg.tls.as_ref().map(|t| t.resolved(ctx.pipeline));
    let secure = match (&tls, mode) {
        (None, _) => Secure::Plain,
        (Some(t), Mode::Server) => Secure::Server(crate::tls::server(t).map_err(|e| tls_error(ctx, e))?.into()),
        (Some(t), Mode::Client) => {
            let name = crate::tls::server_name(t, addr).map_err(|e| tls_error(ctx, e))?;
            Secure::Client(crate::tls::client(t).map_err(|e| tls_error(ctx, e))?.into(), name)
        }
    };
    let over = if cfg.tls.is_some() { " over TLS" } else { "" };
    let description = match mode {
        Mode::Server => format!("listens on {addr} for lines{over}"),
        Mode::Client => format!("reads lines from {addr}{over}"),
    };
    let mut spec = SourceSpec::new(description, move |_: &SourceContext| {
        Ok(SocketSource { addr, mode, connect_timeout, secure: secure.clone(), decoder: Decoder::new(&format), lines: None, listener: None, line: 0 })
    });
    spec.max_parallelism = Some(1);
    Ok(spec)
}

enum Line {
    /// A line's bytes (without the newline) and its byte offset in the connection.
    Bytes(Vec<u8>, u64),
    /// A line longer than [`MAX_LINE`] (skipped up to its newline), at this offset.
    TooLong(u64),
    /// The source cannot go on (client mode: no connection, or it broke).
    Failed(String),
}

/// Frames lines as bytes. Unlike tokio-util's `LinesCodec`, whose first error (a line that is
/// not UTF-8, or too long) ends the stream and with it every later line of the connection, a
/// bad line here is an item of its own, which the source dead-letters before reading on.
#[derive(Default)]
struct LineFramer {
    /// Bytes of the buffer already searched for a newline.
    scanned: usize,
    /// Skipping the rest of a line that is too long.
    discarding: bool,
}

enum Frame {
    /// A line (without `\n` or `\r\n`) and the bytes it took, newline included.
    Line(Vec<u8>, u64),
    TooLong(u64),
}

impl tokio_util::codec::Decoder for LineFramer {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        loop {
            if let Some(i) = buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + i;
                let line = buf.split_to(end + 1);
                self.scanned = 0;
                if std::mem::take(&mut self.discarding) {
                    continue; // the end of a line already reported as too long
                }
                let text = line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]);
                return Ok(Some(Frame::Line(text.to_vec(), line.len() as u64)));
            }
            if buf.len() > MAX_LINE {
                let n = buf.len() as u64;
                buf.clear();
                self.scanned = 0;
                let first = !std::mem::replace(&mut self.discarding, true);
                // Reported once, when first seen too long; the rest is skipped.
                return Ok(first.then_some(Frame::TooLong(n)));
            }
            self.scanned = buf.len();
            return Ok(None);
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        match self.decode(buf)? {
            Some(f) => Ok(Some(f)),
            // A last line without a newline.
            None if !buf.is_empty() && !self.discarding => {
                let line = buf.split();
                self.scanned = 0;
                Ok(Some(Frame::Line(line.to_vec(), line.len() as u64)))
            }
            None => {
                buf.clear();
                Ok(None)
            }
        }
    }
}

pub struct SocketSource {
    addr: SocketAddr,
    mode: Mode,
    connect_timeout: Duration,
    secure: Secure,
    decoder: Decoder,
    lines: Option<mpsc::Receiver<Line>>,
    listener: Option<std::net::TcpListener>,
    line: u64,
}

/// Reads the lines of one connection into `tx`; `Err` if reading broke (not a clean close).
async fn read_lines(stream: impl tokio::io::AsyncRead + Unpin, tx: &mpsc::Sender<Line>, offset: &mut u64) -> Result<(), std::io::Error> {
    let mut framed = FramedRead::new(stream, LineFramer::default());
    while let Some(item) = framed.next().await {
        let msg = match item? {
            Frame::Line(bytes, len) => {
                let m = Line::Bytes(bytes, *offset);
                *offset += len;
                m
            }
            Frame::TooLong(len) => {
                let m = Line::TooLong(*offset);
                *offset += len;
                m
            }
        };
        if tx.send(msg).await.is_err() {
            break;
        }
    }
    Ok(())
}

impl Source for SocketSource {
    fn open(&mut self, _ctx: &SourceContext) -> Result<(), OperatorError> {
        let (tx, rx) = mpsc::channel(4096);
        self.lines = Some(rx);
        match self.mode {
            Mode::Server => {
                let l = std::net::TcpListener::bind(self.addr)
                    .map_err(|e| OperatorError::external(format!("cannot listen on {}: {e}", self.addr)))?;
                l.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(l.try_clone()?)?;
                self.listener = Some(l);
                tracing::info!("socket source listening on {}", self.addr);
                let secure = self.secure.clone();
                actix::spawn(async move {
                    let mut offset = 0u64;
                    while let Ok((stream, peer)) = listener.accept().await {
                        tracing::info!("socket source: client {peer} connected");
                        let read = match &secure {
                            Secure::Server(acceptor) => match acceptor.accept(stream).await {
                                Ok(tls) => read_lines(tls, &tx, &mut offset).await,
                                Err(e) => {
                                    // Refused: nothing of it is read; other clients may connect.
                                    tracing::warn!("socket source: TLS handshake with client {peer} failed: {e}");
                                    continue;
                                }
                            },
                            _ => read_lines(stream, &tx, &mut offset).await,
                        };
                        if let Err(e) = read {
                            // Another client may connect: the source listens on.
                            tracing::warn!("socket source: reading from client {peer} failed: {e}");
                        }
                        if tx.is_closed() {
                            break;
                        }
                    }
                });
            }
            Mode::Client => {
                let (addr, timeout, secure) = (self.addr, self.connect_timeout, self.secure.clone());
                actix::spawn(async move {
                    let deadline = Instant::now() + timeout;
                    loop {
                        match tokio::net::TcpStream::connect(addr).await {
                            Ok(s) => {
                                let mut offset = 0;
                                let read = match &secure {
                                    Secure::Client(connector, name) => match connector.connect(name.clone(), s).await {
                                        Ok(tls) => read_lines(tls, &tx, &mut offset).await,
                                        Err(e) => {
                                            let _ = tx.send(Line::Failed(format!("TLS handshake with {addr} failed: {e}"))).await;
                                            return;
                                        }
                                    },
                                    _ => read_lines(s, &tx, &mut offset).await,
                                };
                                if let Err(e) = read {
                                    let _ = tx.send(Line::Failed(format!("reading from {addr} failed after {offset} bytes: {e}"))).await;
                                }
                                return;
                            }
                            Err(e) if Instant::now() > deadline => {
                                let msg = format!("cannot connect to {addr} within {timeout:?}: {e} (is a server listening there?)");
                                let _ = tx.send(Line::Failed(msg)).await;
                                return;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                });
            }
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut SourceOutput) -> Result<SourceStatus, OperatorError> {
        let rx = self.lines.as_mut().expect("opened");
        while !out.is_full() {
            match rx.try_recv() {
                Ok(Line::Bytes(bytes, offset)) => {
                    self.line += 1;
                    let text = match std::str::from_utf8(&bytes) {
                        Ok(t) => t,
                        Err(e) => {
                            let column = e.valid_up_to() + 1;
                            out.reject_raw(
                                String::from_utf8_lossy(&bytes),
                                format!("the line is not valid UTF-8 (byte {column}) at {}:{}:{column}", self.addr, self.line),
                                serde_json::json!({"address": self.addr.to_string(), "line": self.line, "column": column, "offset": offset}),
                            );
                            continue;
                        }
                    };
                    match self.decoder.decode(text.as_bytes()) {
                        Ok(Some(mut r)) => {
                            r.origin.offset = offset;
                            out.emit(r)
                        }
                        Ok(None) => {}
                        Err(e) if e.fatal => return Err(OperatorError::user(format!("{} at {}:{}:{}", e.message, self.addr, self.line, e.column))),
                        Err(e) => out.reject_raw(
                            text,
                            format!("{} at {}:{}:{}", e.message, self.addr, self.line, e.column),
                            serde_json::json!({"address": self.addr.to_string(), "line": self.line, "column": e.column, "offset": offset}),
                        ),
                    }
                }
                Ok(Line::TooLong(offset)) => {
                    self.line += 1;
                    out.reject_raw(
                        "",
                        format!("line longer than {MAX_LINE} bytes at {}:{} (skipped up to its newline)", self.addr, self.line),
                        serde_json::json!({"address": self.addr.to_string(), "line": self.line, "offset": offset}),
                    )
                }
                Ok(Line::Failed(msg)) => return Err(OperatorError::external(msg)),
                Err(mpsc::error::TryRecvError::Empty) => {
                    return Ok(if out.is_empty() && out.rejected().is_empty() {
                        SourceStatus::Idle(Duration::from_millis(2))
                    } else {
                        SourceStatus::Ready
                    })
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(SourceStatus::Finished),
            }
        }
        Ok(SourceStatus::Ready)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketSinkConfig {
    /// `host:port` of a server to connect to.
    address: Spanned<String>,
    #[serde(default)]
    format: FormatConfig,
    /// How long to keep trying to connect at start.
    #[serde(default, with = "rill_engine::config::de::duration::option")]
    connect_timeout: Option<Duration>,
    /// TLS as a client (see [`crate::tls`]).
    tls: Option<crate::tls::TlsConfig>,
}

pub(crate) fn build_sink(ctx: &BuildContext) -> Result<SinkSpec, ConfigErrors> {
    let cfg: SocketSinkConfig = ctx.options()?;
    let addr = parse_addr(&cfg.address)?;
    let format = cfg.format.build()?;
    let timeout = cfg.connect_timeout.unwrap_or(Duration::from_secs(10));
    let tls = match cfg.tls.as_ref().map(|t| t.resolved(ctx.pipeline)) {
        Some(t) => Some((crate::tls::client(&t).map_err(|e| tls_error(ctx, e))?, crate::tls::server_name(&t, addr).map_err(|e| tls_error(ctx, e))?)),
        None => None,
    };
    let over = if tls.is_some() { " over TLS" } else { "" };
    let mut spec = SinkSpec::new(format!("writes lines to {addr}{over} (at-least-once)"), move |_: &OperatorContext| {
        Ok(SocketSink { addr, timeout, tls: tls.clone(), encoder: Encoder::new(&format), stream: None, buf: Vec::new() })
    });
    spec.max_parallelism = Some(1);
    Ok(spec)
}

pub struct SocketSink {
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    encoder: Encoder,
    stream: Option<SinkStream>,
    buf: Vec<u8>,
}

enum SinkStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl SinkStream {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            SinkStream::Plain(s) => s,
            SinkStream::Tls(s) => s.as_mut(),
        }
    }
}

impl Sink for SocketSink {
    fn open(&mut self, _ctx: &OperatorContext) -> Result<(), OperatorError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match TcpStream::connect(self.addr) {
                Ok(mut s) => {
                    s.set_nodelay(true)?;
                    self.stream = Some(match &self.tls {
                        None => SinkStream::Plain(s),
                        Some((cfg, name)) => {
                            // The handshake now, so that a server that cannot prove itself stops the job at start.
                            let mut conn = rustls::ClientConnection::new(cfg.clone(), name.clone()).map_err(|e| OperatorError::user(format!("TLS to {}: {e}", self.addr)))?;
                            while conn.is_handshaking() {
                                conn.complete_io(&mut s).map_err(|e| OperatorError::external(format!("TLS handshake with {} failed: {e}", self.addr)))?;
                            }
                            SinkStream::Tls(Box::new(rustls::StreamOwned::new(conn, s)))
                        }
                    });
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(OperatorError::external(format!("cannot connect to {}: {e} (is a server listening there?)", self.addr)))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn write(&mut self, batch: Batch, _out: &mut Collector) -> Result<(), OperatorError> {
        self.buf.clear();
        self.encoder.encode_batch(&batch, &mut self.buf);
        self.stream
            .as_mut()
            .expect("connected")
            .writer()
            .write_all(&self.buf)
            .map_err(|e| OperatorError::external(format!("cannot write to {}: {e}", self.addr)))
    }

    fn close(&mut self) -> Result<(), OperatorError> {
        match self.stream.as_mut() {
            Some(SinkStream::Plain(s)) => {
                s.flush()?;
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            Some(SinkStream::Tls(s)) => {
                s.conn.send_close_notify();
                s.flush()?;
                let _ = s.sock.shutdown(std::net::Shutdown::Write);
            }
            None => {}
        }
        Ok(())
    }
}
