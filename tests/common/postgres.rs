//! A real PostgreSQL server for tests (Debian's package, installed by scripts/setup.sh): a
//! private cluster made with `initdb` in a temporary folder, on a free loopback port, with
//! password authentication and `max_prepared_transactions` set; stopped when dropped. The
//! server refuses to run as root, so as root it runs as the user `rill-pg` (setup.sh makes it).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::wait_for;

pub const USER: &str = "rill";
/// The test clusters' password: given to Rill through PGPASSWORD only, so a test can check that
/// it is never printed.
pub const PASSWORD: &str = "s3cret-pg-pass";

pub struct Server {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    /// Refuses TCP connections without TLS (the tests' own client goes by the Unix socket).
    tls_only: bool,
}

/// A server's TLS: its certificate and key (PEM files), and the CA client certificates must
/// be signed by, if it asks for them.
pub struct Tls<'a> {
    pub cert: &'a std::path::Path,
    pub key: &'a std::path::Path,
    pub client_ca: Option<&'a std::path::Path>,
}

fn bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("PostgreSQL's {name} is missing: run `bash scripts/setup.sh` (it installs Debian's postgresql)"))
}

/// (uid, gid) to run the server as: ours, or `rill-pg`'s when we are root.
fn account() -> Option<(u32, u32)> {
    let out = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&out.stdout).trim() != "0" {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "rill-pg"]).output().unwrap();
        assert!(out.status.success(), "running as root, the tests run PostgreSQL as the user rill-pg: run `bash scripts/setup.sh` to add it");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    Some((id("-u"), id("-g")))
}

fn spawn(dir: &std::path::Path, port: u16) -> std::process::Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).unwrap();
    as_account(
        Command::new(bin("postgres"))
            .args(["-D", dir.join("data").to_str().unwrap(), "-p", &port.to_string(), "-k", dir.to_str().unwrap()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_prepared_transactions=32", "-c", "max_connections=60"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log),
        account(),
    )
    .spawn()
    .expect("postgres starts")
}

fn as_account(c: &mut Command, who: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = who {
        c.uid(uid).gid(gid);
    }
    c
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(None)
    }

    /// A server that speaks TLS and refuses TCP connections without it (`hostnossl ... reject`).
    pub fn start_tls(tls: Tls) -> Server {
        Server::start_with(Some(tls))
    }

    fn start_with(tls: Option<Tls>) -> Server {
        let who = account();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some((uid, gid)) = who {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let out = as_account(
            Command::new(bin("initdb"))
                .args(["-D", data.to_str().unwrap(), "-U", USER, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .current_dir(dir.path()),
            who,
        )
        .output()
        .expect("initdb runs");
        assert!(out.status.success(), "initdb failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if let Some(tls) = &tls {
            let copy = |from: &std::path::Path, name: &str| {
                let to = data.join(name);
                std::fs::copy(from, &to).unwrap();
                std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
                if let Some((uid, gid)) = who {
                    std::os::unix::fs::chown(&to, Some(uid), Some(gid)).unwrap();
                }
            };
            copy(tls.cert, "server.crt");
            copy(tls.key, "server.key");
            let mut conf = "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n".to_string();
            let mut client_cert = "";
            if let Some(ca) = tls.client_ca {
                copy(ca, "client-ca.crt");
                conf += "ssl_ca_file = 'client-ca.crt'\n";
                client_cert = " clientcert=verify-ca";
            }
            let mut f = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
            std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
            let hba = format!("local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256{client_cert}\nhostnossl all all 127.0.0.1/32 reject\n");
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        }
        let port = super::free_port();
        let child = spawn(dir.path(), port);
        let server = Server { child, port, _dir: dir, tls_only: tls.is_some() };
        server.wait_up();
        server
    }

    fn wait_up(&self) {
        let up = wait_for(Duration::from_secs(30), || self.try_client().is_some());
        assert!(up, "PostgreSQL did not accept connections on {}: {}", self.port, self.log());
    }

    /// Shuts the server down (fast: open connections are cut) and waits until it has.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        assert!(wait_for(Duration::from_secs(20), || self.child.try_wait().ok().flatten().is_some()), "PostgreSQL did not stop");
    }

    /// Starts it again on the same port and data.
    pub fn start_again(&mut self) {
        self.child = spawn(self._dir.path(), self.port);
        self.wait_up();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    /// `postgres://rill@127.0.0.1:PORT/postgres` (the password goes by PGPASSWORD).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    fn try_client(&self) -> Option<postgres::Client> {
        let host = if self.tls_only { self._dir.path().to_str().unwrap() } else { "127.0.0.1" };
        postgres::Config::new().host(host).port(self.port).user(USER).password(PASSWORD).dbname("postgres").connect(postgres::NoTls).ok()
    }

    pub fn client(&self) -> postgres::Client {
        self.try_client().expect("PostgreSQL answers")
    }

    /// Runs SQL statements.
    pub fn exec(&self, sql: &str) {
        self.client().batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The rows of a query, each as its columns' text (`NULL` for null), sorted.
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let mut rows: Vec<Vec<String>> = self
            .client()
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_string()).collect()),
                _ => None,
            })
            .collect();
        rows.sort();
        rows
    }

    /// The names of prepared transactions still waiting.
    pub fn prepared(&self) -> Vec<String> {
        self.rows("SELECT gid FROM pg_prepared_xacts").into_iter().map(|mut r| r.remove(0)).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Fast shutdown (SIGINT), then wait: a killed postmaster would leave its backends.
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        if !wait_for(Duration::from_secs(20), || self.child.try_wait().ok().flatten().is_some()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
