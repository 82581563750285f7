//! A real Kafka-protocol broker for tests: tansu 0.6.0 (installed by scripts/setup.sh as
//! `.venv/bin/tansu`), in memory, on a free loopback port, stopped when dropped.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::{root, wait_for, Guard};

pub struct Broker {
    _process: Guard,
    /// The port clients connect to (the TLS proxy's, for a broker behind one).
    pub port: u16,
    /// The broker's own, plain port.
    inner: u16,
    _proxy: Option<Guard>,
    /// librdkafka settings the tests' own clients use (TLS, SASL).
    client: Vec<(String, String)>,
}

/// How a broker is secured: TLS through a proxy (stunnel, with this certificate and key: tansu
/// 0.6 has no TLS listener), and SASL SCRAM required (`--authentication`).
pub struct Secured<'a> {
    pub tls: Option<(&'a std::path::Path, &'a std::path::Path)>,
    pub authentication: bool,
    /// librdkafka settings for the tests' own clients.
    pub client: &'a [(&'a str, &'a str)],
}

fn tansu() -> std::path::PathBuf {
    let t = root().join(".venv/bin/tansu");
    assert!(t.exists(), "{} is missing: run `bash scripts/setup.sh` (it installs the tansu broker)", t.display());
    t
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_secured(Secured { tls: None, authentication: false, client: &[] })
    }

    pub fn start_secured(how: Secured) -> Broker {
        let inner = super::free_port();
        let port = if how.tls.is_some() { super::free_port() } else { inner };
        let (listen, advertised) = (format!("tcp://127.0.0.1:{inner}"), format!("tcp://127.0.0.1:{port}"));
        let mut broker = Command::new(tansu());
        broker.args(["broker", "--listener-url", &listen, "--advertised-listener-url", &advertised, "--storage-engine", "memory://tansu/"]);
        if how.authentication {
            broker.arg("--authentication");
        }
        let process = Guard(broker.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("tansu starts"));
        assert!(wait_for(Duration::from_secs(30), || TcpStream::connect(("127.0.0.1", inner)).is_ok()), "tansu did not listen on {inner}");
        let proxy = how.tls.map(|(cert, key)| {
            let conf = format!(
                "foreground = yes\npid =\ndebug = 3\n[kafka]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{inner}\ncert = {}\nkey = {}\n",
                cert.display(),
                key.display()
            );
            let file = cert.with_file_name(format!("stunnel-{port}.conf"));
            std::fs::write(&file, conf).unwrap();
            let stunnel = Command::new("stunnel").arg(&file).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
            let proxy = Guard(stunnel.expect("stunnel starts: run `bash scripts/setup.sh` (it installs stunnel4)"));
            assert!(wait_for(Duration::from_secs(30), || TcpStream::connect(("127.0.0.1", port)).is_ok()), "stunnel did not listen on {port}");
            proxy
        });
        let client = how.client.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Broker { _process: process, port, inner, _proxy: proxy, client }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A librdkafka configuration for the tests' own clients.
    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }

    /// Every message of `topic` as its value's text, read to the end of each partition.
    pub fn read_all(&self, topic: &str) -> Vec<String> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;
        let c: BaseConsumer = self.config().set("group.id", "rill-tests-read").set("enable.partition.eof", "true").set("auto.offset.reset", "earliest").create().unwrap();
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(30)).unwrap();
        let parts = md.topics()[0].partitions().len();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..parts {
            tpl.add_partition_offset(topic, p as i32, rdkafka::Offset::Beginning).unwrap();
        }
        c.assign(&tpl).unwrap();
        let (mut out, mut ended) = (Vec::new(), std::collections::HashSet::new());
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while ended.len() < parts {
            assert!(std::time::Instant::now() < until, "reading {topic} took more than a minute");
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    ended.insert(p);
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu())
            .args(["topic", "create", "--broker", &format!("tcp://127.0.0.1:{}", self.inner), "--partitions", &partitions.to_string(), name])
            .output()
            .expect("tansu runs");
        assert!(out.status.success(), "creating topic {name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Produces `(partition, key, value)` messages (not transactional) and waits for them.
    pub fn produce(&self, topic: &str, messages: &[(i32, String, String)]) {
        let p: BaseProducer = self.config().set("linger.ms", "5").create().unwrap();
        for (part, k, v) in messages {
            loop {
                match p.send(BaseRecord::to(topic).partition(*part).key(k).payload(v)) {
                    Ok(()) => break,
                    Err((e, _)) => {
                        assert!(matches!(e, rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)), "{e}");
                        p.poll(Duration::from_millis(10));
                    }
                }
            }
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }

    /// The first record batches and transaction markers of each partition of `topic`, for a
    /// failing test to show.
    pub fn dump(&self, topic: &str) -> String {
        let code = "import sys; sys.path.insert(0, sys.argv[1]); import kafka_committed as kc; res, u = kc.committed(sys.argv[2], sys.argv[3]); \
                    print('undecided', u, 'kept', {p: len(r) for p, r in res.items()}); \
                    print('markers', sorted((m[1], m[2], m[3], m[4]) for m in kc._markers)[:40]); \
                    print('records', sorted((p, o, v[0]) for (t, p, o), v in kc._meta.items() if o < 3))";
        let out = Command::new(root().join(".venv/bin/python")).args(["-c", code]).arg(root().join("scripts")).args([&self.bootstrap(), topic]).output().expect("python runs");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// Asserts that every transaction in `topic` has ended (committed or aborted): one left
    /// open would hold every `read_committed` consumer back at its first message until the
    /// broker's transaction timeout.
    pub fn assert_settled(&self, topic: &str) {
        let out = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("scripts/kafka_committed.py"))
            .args([&self.bootstrap(), topic, "--settled"])
            .output()
            .expect("python runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !err.contains("without a marker"), "a transaction in {topic} is still open: {err}");
    }

    /// Every message of `topic` a `read_committed` consumer would see (aborted transactions
    /// left out, which tansu itself does not do): `{partition, offset, key, value}` each.
    pub fn committed(&self, topic: &str) -> Vec<serde_json::Value> {
        let out = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("scripts/kafka_committed.py"))
            .args([&self.bootstrap(), topic, "--settled"])
            .output()
            .expect("python runs");
        assert!(out.status.success(), "kafka_committed.py: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}
