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
    pub port: u16,
}

fn tansu() -> std::path::PathBuf {
    let t = root().join(".venv/bin/tansu");
    assert!(t.exists(), "{} is missing: run `bash scripts/setup.sh` (it installs the tansu broker)", t.display());
    t
}

impl Broker {
    pub fn start() -> Broker {
        let port = super::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let process = Guard(child);
        assert!(wait_for(Duration::from_secs(30), || TcpStream::connect(("127.0.0.1", port)).is_ok()), "tansu did not listen on {port}");
        Broker { _process: process, port }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu())
            .args(["topic", "create", "--broker", &format!("tcp://127.0.0.1:{}", self.port), "--partitions", &partitions.to_string(), name])
            .output()
            .expect("tansu runs");
        assert!(out.status.success(), "creating topic {name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Produces `(partition, key, value)` messages (not transactional) and waits for them.
    pub fn produce(&self, topic: &str, messages: &[(i32, String, String)]) {
        let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", self.bootstrap()).set("linger.ms", "5").create().unwrap();
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
