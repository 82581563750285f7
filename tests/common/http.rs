//! Calling a running job's HTTP API from tests: a plain HTTP/1.1 request over any stream, and
//! `rill run` started with the API, its address read from its log.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{rill, Guard};

/// A response: status, headers (lowercased names), body.
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub fn request(mut stream: impl Read + Write, method: &str, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: rill\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    Response { status, headers: head.to_lowercase(), body: body.to_string() }
}

pub fn call(addr: &str, method: &str, path: &str, token: Option<&str>) -> Response {
    request(TcpStream::connect(addr).unwrap(), method, path, token)
}

/// Starts `rill run` on `pipeline` and waits for the API's address in its log.
pub fn start(pipeline: &std::path::Path, args: &[&str]) -> (Guard, String, std::sync::mpsc::Receiver<String>) {
    start_with(pipeline, args, &[])
}

/// [`start`] with environment variables for the job (e.g. `RILL_FAULTS`).
pub fn start_with(pipeline: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (Guard, String, std::sync::mpsc::Receiver<String>) {
    let mut cmd = rill();
    cmd.args([&["run", pipeline.to_str().unwrap(), "--progress", "never"], args].concat()).envs(env.iter().copied()).stderr(std::process::Stdio::piped());
    let mut child = Guard(cmd.spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no API address in: {seen:?}"));
        if let Some(at) = line.strip_prefix("HTTP API at ") {
            let addr = at.split("://").nth(1).unwrap().split('/').next().unwrap().to_string();
            return (child, addr, rx);
        }
        seen.push(line);
    }
}

/// Everything the process wrote to stderr until it exits, and its exit code.
pub fn finish(mut child: Guard, rx: std::sync::mpsc::Receiver<String>) -> (i32, String) {
    let status = child.0.wait().unwrap();
    (status.code().unwrap_or(-1), rx.iter().collect::<Vec<_>>().join("\n"))
}

