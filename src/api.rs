//! The HTTP API of a running job (`http:` in the pipeline, or `rill run --http ADDR`), served by
//! the job process on a thread of its own (actix-web, one worker):
//!
//! - `GET /`: the live page (static, built into the binary; it polls `/api/v1/job`);
//! - `GET /metrics`: Prometheus text format ([`rill_engine::live::Live::prometheus`]);
//! - `GET /api/v1/job`: the whole status as JSON ([`rill_engine::live::Live::status`]);
//! - `GET /api/v1/tap/COMPONENT?limit=N`: records sampled as they leave a component, as JSON
//!   lines while they come (`rill tap`);
//! - `POST /api/v1/savepoint`, `POST /api/v1/stop[?checkpoint=false]`: control, served only
//!   with `http.tokens`, to `operate` tokens.
//!
//! With `http.tokens` no endpoint answers without a token (401), given as
//! `Authorization: Bearer TOKEN` (or as the password of HTTP basic authentication, which a
//! browser asks for); a `read` token gets 403 on control. Tokens are compared in constant time
//! and never logged. Control calls and every refused call go to the audit trail.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use rill_engine::config::HttpConfig;
use rill_engine::live::{Control, Live};
use sha2::{Digest, Sha256};

/// What may be done with a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Metrics, status, the page.
    Read,
    /// Read, and savepoint and stop.
    Operate,
}

struct Token {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The tokens file: one `NAME ROLE TOKEN` a line (`#` comments and blank lines aside).
pub struct Tokens(Vec<Token>);

/// Shortest token accepted: shorter ones are guessed too easily.
const MIN_TOKEN: usize = 16;

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the tokens file {}: {e}", path.display()))?;
        Tokens::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, file: &str) -> Result<Tokens, String> {
        let mut out: Vec<Token> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{file}:{}", n + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, token] = fields[..] else {
                return Err(format!("{at}: expected `NAME ROLE TOKEN` (three fields), found {}", fields.len()));
            };
            let role = match role {
                "read" => Role::Read,
                "operate" => Role::Operate,
                other => return Err(format!("{at}: role `{other}` is not `read` or `operate`")),
            };
            if token.chars().count() < MIN_TOKEN {
                return Err(format!("{at}: the token of `{name}` is shorter than {MIN_TOKEN} characters (e.g. `openssl rand -hex 24` makes one)"));
            }
            if out.iter().any(|t| t.name == name) {
                return Err(format!("{at}: `{name}` is named twice"));
            }
            out.push(Token { name: name.to_string(), role, digest: Sha256::digest(token.as_bytes()).into() });
        }
        if out.is_empty() {
            return Err(format!("{file} holds no token: every call would be refused"));
        }
        Ok(Tokens(out))
    }

    /// The token `given` is, compared in constant time with every token (the digests, so that
    /// neither the length nor the place of a difference shows in the time taken).
    fn find(&self, given: &str) -> Option<(&str, Role)> {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let mut found = None;
        for t in &self.0 {
            let diff = t.digest.iter().zip(&digest).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some((t.name.as_str(), t.role));
            }
        }
        found
    }
}

/// Writes an audit entry: (action, details, result).
pub type Auditor = Arc<dyn Fn(&str, serde_json::Value, &str) + Send + Sync>;

struct State {
    live: Arc<Live>,
    tokens: Option<Tokens>,
    audit: Auditor,
}

/// The API, serving.
pub struct Api {
    /// Where it listens (the port chosen, for `:0`).
    pub addr: SocketAddr,
    pub tls: bool,
    handle: actix_web::dev::ServerHandle,
}

impl Api {
    /// Stops serving (waiting for calls in progress, briefly).
    pub fn stop(self) {
        let h = self.handle;
        let _ = std::thread::spawn(move || actix_web::rt::System::new().block_on(h.stop(true))).join();
    }
}

/// Starts serving `live` as `cfg` says, on a thread of its own.
pub fn start(live: Arc<Live>, cfg: &HttpConfig, audit: Auditor) -> Result<Api, String> {
    let tokens = cfg.tokens.as_deref().map(Tokens::load).transpose()?;
    let tls = match &cfg.tls {
        Some(t) => Some(rill_connectors::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref()).map_err(|e| format!("http.tls: {e}"))?),
        None => None,
    };
    let with_tls = tls.is_some();
    let state = web::Data::new(State { live: live.clone(), tokens, audit });
    let addr = cfg.listen;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("rill-http".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || App::new().app_data(state.clone()).default_service(web::to(handle))).workers(1).disable_signals().shutdown_timeout(1);
                let bound = match tls {
                    Some(c) => server.bind_rustls_0_23(addr, (*c).clone()),
                    None => server.bind(addr),
                };
                let server = match bound {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(format!("the HTTP API cannot listen on {addr}: {e}")));
                        return;
                    }
                };
                let at = server.addrs().first().copied().unwrap_or(addr);
                let running = server.run();
                let _ = tx.send(Ok((at, running.handle())));
                actix_web::rt::spawn(async move {
                    let mut every = tokio::time::interval(rill_engine::live::SAMPLE_EVERY);
                    loop {
                        every.tick().await;
                        live.sample();
                    }
                });
                let _ = running.await;
            })
        })
        .map_err(|e| format!("cannot start the HTTP API's thread: {e}"))?;
    let (addr, handle) = rx.recv().map_err(|_| "the HTTP API's thread stopped before it listened".to_string())??;
    Ok(Api { addr, tls: with_tls, handle })
}

#[derive(Clone, Copy, PartialEq)]
enum Route {
    Page,
    Metrics,
    Job,
    Tap,
    Savepoint,
    Stop,
}

/// The live page: one file, no CDN, nothing fetched but `/api/v1/job`.
const PAGE: &str = include_str!("page.html");

const ENDPOINTS: [&str; 6] = ["GET /", "GET /metrics", "GET /api/v1/job", "GET /api/v1/tap/COMPONENT?limit=N", "POST /api/v1/savepoint", "POST /api/v1/stop"];

fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({"error": message}))
}

/// The token in `Authorization`: `Bearer TOKEN`, or basic authentication's password.
fn presented(req: &HttpRequest) -> Option<String> {
    let h = req.headers().get("authorization")?.to_str().ok()?.trim();
    if let Some(t) = h.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    let b = h.strip_prefix("Basic ")?;
    use base64::Engine as _;
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()?).ok()?;
    Some(decoded.split_once(':').map(|(_, p)| p.to_string()).unwrap_or(decoded))
}

async fn handle(req: HttpRequest, st: web::Data<State>) -> HttpResponse {
    let (method, path) = (req.method().as_str().to_string(), req.path().to_string());
    let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_else(|| "?".into());
    let route = match (method.as_str(), path.as_str()) {
        ("GET", "/") => Route::Page,
        ("GET", "/metrics") => Route::Metrics,
        ("GET", "/api/v1/job") => Route::Job,
        ("GET", p) if p.starts_with("/api/v1/tap/") => Route::Tap,
        ("POST", "/api/v1/savepoint") => Route::Savepoint,
        ("POST", "/api/v1/stop") => Route::Stop,
        (_, "/" | "/metrics" | "/api/v1/job" | "/api/v1/savepoint" | "/api/v1/stop") => {
            return HttpResponse::MethodNotAllowed().json(serde_json::json!({"error": format!("{method} {path} is not served"), "endpoints": ENDPOINTS}))
        }
        _ => return HttpResponse::NotFound().json(serde_json::json!({"error": format!("no endpoint {path}"), "endpoints": ENDPOINTS})),
    };
    let control = matches!(route, Route::Savepoint | Route::Stop);
    let call = serde_json::json!({"method": method, "path": path, "peer": peer});
    let who = match &st.tokens {
        None if control => {
            return error(StatusCode::NOT_FOUND, "control endpoints are served only with `http.tokens` (see the README, \"HTTP API\")");
        }
        None => format!("peer {peer}"),
        Some(tokens) => match presented(&req).as_deref().and_then(|t| tokens.find(t)) {
            None => {
                let why = if req.headers().contains_key("authorization") { "a token that is not in the tokens file" } else { "no token" };
                tracing::warn!("HTTP API: {method} {path} from {peer} refused (401): {why}");
                (st.audit)("http", with(&call, "who", &peer), &format!("refused (401): {why}"));
                // The page asks a browser for basic authentication (the token as the password),
                // which it then sends with the page's own calls too.
                let challenge = if route == Route::Page { "Basic realm=\"rill\", charset=\"UTF-8\"" } else { "Bearer realm=\"rill\"" };
                return HttpResponse::Unauthorized()
                    .insert_header(("WWW-Authenticate", challenge))
                    .json(serde_json::json!({"error": format!("{why}: send `Authorization: Bearer TOKEN`")}));
            }
            Some((name, Role::Read)) if control => {
                tracing::warn!("HTTP API: {method} {path} by `{name}` refused (403): a read token");
                (st.audit)("http", with(&call, "who", name), "refused (403): a read token");
                return error(StatusCode::FORBIDDEN, &format!("`{name}` has role `read`; {method} {path} needs `operate`"));
            }
            Some((name, _)) => name.to_string(),
        },
    };
    match route {
        Route::Page => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("Content-Security-Policy", "default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:"))
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .insert_header(("Cache-Control", "no-store"))
            .body(PAGE),
        Route::Metrics => HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(st.live.prometheus()),
        Route::Job => HttpResponse::Ok().json(st.live.status()),
        Route::Tap => tap(&st.live, &path["/api/v1/tap/".len()..], req.query_string()),
        Route::Savepoint | Route::Stop => {
            let c = if route == Route::Savepoint {
                Control::Savepoint
            } else {
                Control::Stop { checkpoint: !req.query_string().split('&').any(|kv| kv == "checkpoint=false") }
            };
            let (status, result) = match st.live.request(c) {
                Ok(()) => (StatusCode::ACCEPTED, "ok".to_string()),
                Err(why) => (StatusCode::CONFLICT, format!("refused (409): {why}")),
            };
            (st.audit)(if route == Route::Savepoint { "savepoint" } else { "stop" }, with(&call, "who", &who), &result);
            tracing::info!("HTTP API: {method} {path} by {who}: {result}");
            if status == StatusCode::ACCEPTED {
                HttpResponse::Accepted().json(serde_json::json!({"requested": if route == Route::Savepoint { "savepoint" } else { "stop" }, "by": who}))
            } else {
                error(status, result.trim_start_matches("refused (409): "))
            }
        }
    }
}

/// Query parameter `name` as a number.
fn query_number(query: &str, name: &str) -> Result<Option<u64>, String> {
    match query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| format!("`{name}={v}` is not a whole number")),
    }
}

/// Streams up to `limit` records (default 10) sampled from `component`, one JSON object a line,
/// for up to `seconds` (default 600); a blank line every 5 s of silence keeps a dead client from
/// holding the tap open.
fn tap(live: &Arc<Live>, component: &str, query: &str) -> HttpResponse {
    let (limit, seconds) = match (query_number(query, "limit"), query_number(query, "seconds")) {
        (Ok(l), Ok(s)) => (l.unwrap_or(10).max(1), s.unwrap_or(600)),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let session = match live.tap(component, limit) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::NOT_FOUND, &e),
    };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let stream = futures::stream::unfold((session, std::time::Instant::now()), move |(mut session, mut last)| async move {
        loop {
            if session.done() || std::time::Instant::now() >= end {
                return None;
            }
            let got = session.poll();
            if !got.is_empty() {
                let mut bytes = Vec::new();
                for v in got {
                    serde_json::to_writer(&mut bytes, &v).expect("JSON of JSON");
                    bytes.push(b'\n');
                }
                return Some((Ok::<_, actix_web::Error>(web::Bytes::from(bytes)), (session, std::time::Instant::now())));
            }
            if last.elapsed() >= std::time::Duration::from_secs(5) {
                last = std::time::Instant::now();
                return Some((Ok(web::Bytes::from_static(b"\n")), (session, last)));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    HttpResponse::Ok().content_type("application/x-ndjson").streaming(stream)
}

fn with(call: &serde_json::Value, key: &str, value: &str) -> serde_json::Value {
    let mut c = call.clone();
    c[key] = value.into();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_with_their_roles_and_bad_lines_are_named() {
        let t = Tokens::parse("# who role token\nscraper read 0123456789abcdef0\n\nops operate fedcba98765432100\n", "t.txt").unwrap();
        assert_eq!(t.find("0123456789abcdef0"), Some(("scraper", Role::Read)));
        assert_eq!(t.find("fedcba98765432100"), Some(("ops", Role::Operate)));
        assert_eq!(t.find("0123456789abcdef"), None);
        let err = |text: &str| Tokens::parse(text, "t.txt").err().unwrap();
        assert_eq!(err("a read\n"), "t.txt:1: expected `NAME ROLE TOKEN` (three fields), found 2");
        assert!(err("a admin 0123456789abcdef0\n").starts_with("t.txt:1: role `admin`"));
        assert!(err("\na read short\n").starts_with("t.txt:2: the token of `a` is shorter than 16"));
        assert!(err("a read 0123456789abcdef0\na read 0123456789abcdef1\n").contains("t.txt:2: `a` is named twice"));
        assert!(err("# nothing\n").contains("holds no token"));
    }
}
