//! `rill top` and `rill tap`: clients of a running job's HTTP API (plain or TLS), on a small
//! HTTP/1.1 client of their own (one GET a connection, chunked bodies read as they come).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where the API is and how to reach it.
pub struct Target {
    /// `host:port`.
    addr: String,
    tls: Option<PathBuf>,
    token: Option<String>,
}

impl Target {
    /// `ADDR` is `host:port`, `http://host:port` or `https://host:port` (then `ca` is the PEM of
    /// the CA that signed the API's certificate). The token comes from `token` or `RILL_TOKEN`.
    pub fn new(addr: &str, ca: Option<PathBuf>, token: Option<String>) -> Result<Target, String> {
        let (tls, rest) = match addr.split_once("://") {
            Some(("http", r)) => (false, r),
            Some(("https", r)) => (true, r),
            Some((scheme, _)) => return Err(format!("`{addr}`: the scheme `{scheme}` is not http or https")),
            None => (false, addr),
        };
        let addr = rest.trim_end_matches('/').to_string();
        if tls && ca.is_none() {
            return Err(format!("`https://{addr}` needs --ca PEM: the CA that signed the API's certificate"));
        }
        let token = token.or_else(|| std::env::var("RILL_TOKEN").ok()).filter(|t| !t.is_empty());
        Ok(Target { addr, tls: if tls { ca } else { None }, token })
    }

    fn connect(&self) -> Result<Box<dyn ReadWrite>, String> {
        let tcp = TcpStream::connect(&self.addr).map_err(|e| format!("cannot reach the job's HTTP API at {}: {e}", self.addr))?;
        tcp.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        let Some(ca) = &self.tls else { return Ok(Box::new(tcp)) };
        let config = rill_connectors::tls::client_config(&ca.display().to_string())?;
        let host = self.addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&self.addr).trim_matches(['[', ']']);
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| format!("`{host}`: {e}"))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
    }

    /// GETs `path`, handing the body to `on_body` piece by piece as it arrives (it returns
    /// `false` to stop). A status other than 200 is an error with the API's message.
    pub fn get(&self, path: &str, mut on_body: impl FnMut(&[u8]) -> bool) -> Result<(), String> {
        let mut stream = self.connect()?;
        let auth = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n", self.addr).map_err(|e| format!("{}: {e}", self.addr))?;
        let mut r = BufReader::new(stream);
        let mut status_line = String::new();
        r.read_line(&mut status_line).map_err(|e| format!("{}: {e}", self.addr))?;
        let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("{} answered something that is not HTTP", self.addr))?;
        let (mut chunked, mut length) = (false, None::<usize>);
        loop {
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            } else if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().ok();
            }
        }
        if status != 200 {
            let mut body = Vec::new();
            read_body(&mut r, chunked, length, &mut |b| {
                body.extend_from_slice(b);
                true
            })?;
            let msg = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["error"].as_str().map(str::to_string)).unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            let hint = match status {
                401 => " (give a token with --token or RILL_TOKEN)",
                _ => "",
            };
            return Err(format!("{path} at {}: {status}: {msg}{hint}", self.addr));
        }
        read_body(&mut r, chunked, length, &mut on_body)
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn read_body(r: &mut impl BufRead, chunked: bool, length: Option<usize>, on_body: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), String> {
    if !chunked {
        let mut body = Vec::new();
        match length {
            Some(n) => r.take(n as u64).read_to_end(&mut body),
            None => r.read_to_end(&mut body),
        }
        .map_err(|e| e.to_string())?;
        on_body(&body);
        return Ok(());
    }
    loop {
        let mut size = String::new();
        if r.read_line(&mut size).map_err(|e| e.to_string())? == 0 {
            return Ok(());
        }
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).map_err(|_| format!("a bad chunk size `{}`", size.trim()))?;
        if n == 0 {
            return Ok(());
        }
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
        if !on_body(&chunk[..n]) {
            return Ok(());
        }
    }
}

/// `rill tap`: prints up to `limit` records leaving `component`, one JSON object a line.
pub fn tap(target: &Target, component: &str, limit: u64) -> Result<(), String> {
    let mut pending = Vec::new();
    let mut printed = 0u64;
    let out = std::io::stdout();
    target.get(&format!("/api/v1/tap/{component}?limit={limit}"), |bytes| {
        pending.extend_from_slice(bytes);
        while let Some(at) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            if line.len() > 1 {
                let mut o = out.lock();
                let _ = o.write_all(&line);
                let _ = o.flush();
                printed += 1;
            }
        }
        printed < limit
    })
}

/// The job's status, once.
pub fn status(target: &Target) -> Result<serde_json::Value, String> {
    let mut body = Vec::new();
    target.get("/api/v1/job", |b| {
        body.extend_from_slice(b);
        true
    })?;
    serde_json::from_slice(&body).map_err(|e| format!("/api/v1/job at {}: not JSON ({e})", target.addr))
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

fn lag(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{} min", ms / 60_000),
    }
}

/// `rill top`'s table of a status.
pub fn render(j: &serde_json::Value) -> String {
    let mut s = String::new();
    let ck = &j["checkpoints"];
    let last = ck["latest"]["duration_ms"].as_u64().map(|d| format!(" (last {d} ms)")).unwrap_or_default();
    s.push_str(&format!(
        "{}  {}  up {:.1} s  restarts {}  dead letters {}  checkpoints {}{last}\n\n",
        j["job"].as_str().unwrap_or("?"),
        j["state"].as_str().unwrap_or("?"),
        j["uptime_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        j["restarts"],
        j["dead_letters"]["count"],
        ck["completed"]
    ));
    s.push_str(&format!("{:<20} {:<10} {:>4} {:>13} {:>9} {:>9} {:>9} {:>5}  {:<12} {:>10}\n", "component", "type", "inst", "records in", "in/s", "out/s", "rejected", "busy", "backpressure", "wm lag"));
    for c in j["components"].as_array().into_iter().flatten() {
        let busy = c["instances"].as_array().into_iter().flatten().filter_map(|i| i["busy"].as_f64()).fold(0.0, f64::max);
        s.push_str(&format!(
            "{:<20} {:<10} {:>4} {:>13} {:>9} {:>9} {:>9} {:>4}%  {:<12} {:>10}\n",
            c["name"].as_str().unwrap_or("?"),
            c["type"].as_str().unwrap_or("?"),
            c["parallelism"].as_u64().unwrap_or(0),
            c["records_in"].as_u64().unwrap_or(0),
            rate(c["records_in_per_s"].as_f64().unwrap_or(0.0)),
            rate(c["records_out_per_s"].as_f64().unwrap_or(0.0)),
            c["rejected"].as_u64().unwrap_or(0),
            (busy * 100.0).round(),
            c["backpressure"].as_str().unwrap_or("?"),
            lag(c["watermark_lag_ms"].as_i64())
        ));
    }
    s
}

/// `rill top`: the table, refreshed in place every `every` (once with `once`), until the job
/// goes away.
pub fn top(target: &Target, every: Duration, once: bool) -> Result<(), String> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    let mut seen = false;
    loop {
        let j = match status(target) {
            Ok(j) => j,
            Err(e) if seen && e.starts_with("cannot reach") => {
                println!("the job at {} is gone", target.addr);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        seen = true;
        let table = render(&j);
        if tty && !once {
            print!("\x1b[H\x1b[2J{table}");
        } else {
            println!("{table}");
        }
        let _ = std::io::stdout().flush();
        if once || matches!(j["state"].as_str(), Some("finished" | "failed")) {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}
