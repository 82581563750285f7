//! `socket` source and sink: TCP, one record per line.
//!
//! The source listens (`mode: server`, the default: every client's lines are read until the job
//! is stopped) or connects (`mode: client`: reads until the peer closes, then ends). Lines are
//! framed by tokio-util's `LinesCodec` on the instance's own event loop and handed to the source
//! through a bounded channel, so a slow pipeline slows the reader and TCP pushes back on the
//! sender. The sink connects to a server and writes lines; it is at-least-once.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rill_engine::config::{ConfigError, ConfigErrors, Spanned};
use rill_engine::operator::{Collector, OperatorContext, OperatorError, Sink};
use rill_engine::record::Batch;
use rill_engine::registry::{BuildContext, SinkSpec, SourceSpec};
use rill_engine::source::{Source, SourceContext, SourceOutput, SourceStatus};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

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
    let description = match mode {
        Mode::Server => format!("listens on {addr} for lines"),
        Mode::Client => format!("reads lines from {addr}"),
    };
    let mut spec = SourceSpec::new(description, move |_: &SourceContext| {
        Ok(SocketSource { addr, mode, decoder: Decoder::new(&format), lines: None, listener: None, line: 0 })
    });
    spec.max_parallelism = Some(1);
    Ok(spec)
}

enum Line {
    Text(String, u64),
    TooLong(u64),
}

pub struct SocketSource {
    addr: SocketAddr,
    mode: Mode,
    decoder: Decoder,
    lines: Option<mpsc::Receiver<Line>>,
    listener: Option<std::net::TcpListener>,
    line: u64,
}

async fn read_lines(stream: tokio::net::TcpStream, tx: &mpsc::Sender<Line>, offset: &mut u64) {
    let mut framed = FramedRead::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
    while let Some(item) = framed.next().await {
        let msg = match item {
            Ok(text) => {
                let len = text.len() as u64 + 1;
                let m = Line::Text(text, *offset);
                *offset += len;
                m
            }
            Err(LinesCodecError::MaxLineLengthExceeded) => Line::TooLong(*offset),
            Err(LinesCodecError::Io(e)) => {
                tracing::warn!("socket read error: {e}");
                break;
            }
        };
        if tx.send(msg).await.is_err() {
            break;
        }
    }
}

impl Source for SocketSource {
    fn open(&mut self, _ctx: &SourceContext) -> Result<(), OperatorError> {
        let (tx, rx) = mpsc::channel(4096);
        self.lines = Some(rx);
        match self.mode {
            Mode::Server => {
                let l = std::net::TcpListener::bind(self.addr)
                    .map_err(|e| OperatorError::new(format!("cannot listen on {}: {e}", self.addr)))?;
                l.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(l.try_clone()?)?;
                self.listener = Some(l);
                tracing::info!("socket source listening on {}", self.addr);
                actix::spawn(async move {
                    let mut offset = 0u64;
                    while let Ok((stream, peer)) = listener.accept().await {
                        tracing::info!("socket source: client {peer} connected");
                        read_lines(stream, &tx, &mut offset).await;
                        if tx.is_closed() {
                            break;
                        }
                    }
                });
            }
            Mode::Client => {
                let addr = self.addr;
                actix::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    loop {
                        match tokio::net::TcpStream::connect(addr).await {
                            Ok(s) => {
                                let mut offset = 0;
                                read_lines(s, &tx, &mut offset).await;
                                return;
                            }
                            Err(e) if Instant::now() > deadline => {
                                tracing::error!("socket source: cannot connect to {addr}: {e}");
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
                Ok(Line::Text(text, offset)) => {
                    self.line += 1;
                    match self.decoder.decode(text.as_bytes()) {
                        Ok(Some(mut r)) => {
                            r.origin.offset = offset;
                            out.emit(r)
                        }
                        Ok(None) => {}
                        Err(e) => out.reject_raw(
                            text,
                            format!("{} at {}:{}:{}", e.message, self.addr, self.line, e.column),
                            serde_json::json!({"address": self.addr.to_string(), "line": self.line, "column": e.column, "offset": offset}),
                        ),
                    }
                }
                Ok(Line::TooLong(offset)) => {
                    self.line += 1;
                    out.reject_raw("", format!("line longer than {MAX_LINE} bytes"), serde_json::json!({"line": self.line, "offset": offset}))
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    return Ok(if out.records().is_empty() && out.rejected().is_empty() {
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
}

pub(crate) fn build_sink(ctx: &BuildContext) -> Result<SinkSpec, ConfigErrors> {
    let cfg: SocketSinkConfig = ctx.options()?;
    let addr = parse_addr(&cfg.address)?;
    let format = cfg.format.build()?;
    let timeout = cfg.connect_timeout.unwrap_or(Duration::from_secs(10));
    let mut spec = SinkSpec::new(format!("writes lines to {addr} (at-least-once)"), move |_: &OperatorContext| {
        Ok(SocketSink { addr, timeout, encoder: Encoder::new(&format), stream: None, buf: Vec::new() })
    });
    spec.max_parallelism = Some(1);
    Ok(spec)
}

pub struct SocketSink {
    addr: SocketAddr,
    timeout: Duration,
    encoder: Encoder,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Sink for SocketSink {
    fn open(&mut self, _ctx: &OperatorContext) -> Result<(), OperatorError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match TcpStream::connect(self.addr) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    self.stream = Some(s);
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(OperatorError::new(format!("cannot connect to {}: {e} (is a server listening there?)", self.addr)))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn write(&mut self, batch: Batch, _out: &mut Collector) -> Result<(), OperatorError> {
        self.buf.clear();
        for r in &batch.records {
            self.encoder.encode(r, &mut self.buf);
        }
        self.stream
            .as_mut()
            .expect("connected")
            .write_all(&self.buf)
            .map_err(|e| OperatorError::new(format!("cannot write to {}: {e}", self.addr)))
    }

    fn close(&mut self) -> Result<(), OperatorError> {
        if let Some(s) = self.stream.as_mut() {
            s.flush()?;
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }
}
