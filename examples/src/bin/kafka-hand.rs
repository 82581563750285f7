//! Kafka → filter → Kafka as a hand-written rdkafka loop: the baseline of `benches/kafka.sh`
//! (BENCHMARKS.md, "Kafka"). Also writes the benchmark's input and counts its output.
//!
//! ```sh
//! kafka-hand produce BOOTSTRAP TOPIC N        # N small JSON transactions, round-robin over partitions
//! kafka-hand filter BOOTSTRAP IN OUT THREADS  # amount > 50.0, read to the end, at-least-once
//! kafka-hand count BOOTSTRAP TOPIC            # messages in TOPIC
//! ```
//!
//! `filter` is what a user would write by hand: each thread owns a share of the partitions
//! (assigned, no group protocol), polls messages, parses each value as JSON, keeps those with
//! `amount > 50.0` and produces their bytes unchanged (keyed as read) to `OUT` with an
//! idempotent producer, then flushes at the end of its partitions.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

fn producer(bootstrap: &str) -> BaseProducer {
    config(bootstrap).set("enable.idempotence", "true").set("linger.ms", "5").set("queue.buffering.max.messages", "1000000").create().expect("a producer")
}

/// Sends, waiting for room while librdkafka's queue is full.
fn send(p: &BaseProducer, topic: &str, key: Option<&[u8]>, value: &[u8]) {
    loop {
        let mut r = BaseRecord::to(topic).payload(value);
        if let Some(k) = key {
            r = r.key(k);
        }
        match p.send(r) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                p.poll(Duration::from_millis(1));
            }
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
}

fn partitions(c: &BaseConsumer, topic: &str) -> Vec<i32> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(30)).expect("metadata");
    md.topics()[0].partitions().iter().map(|p| p.id()).collect()
}

/// Reads `parts` of `topic` from the beginning to their end, calling `each` for every message.
fn read_to_end(bootstrap: &str, topic: &str, parts: &[i32], mut each: impl FnMut(&rdkafka::message::BorrowedMessage)) {
    let c: BaseConsumer = config(bootstrap).set("group.id", "kafka-hand").set("enable.partition.eof", "true").set("enable.auto.commit", "false").create().expect("a consumer");
    let mut tpl = TopicPartitionList::new();
    for &p in parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("a partition");
    }
    c.assign(&tpl).expect("assign");
    let mut ended = 0;
    while ended < parts.len() {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => each(&m),
            Some(Err(KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| panic!("usage: see the source (argument {i} missing)"));
    match arg(1) {
        "produce" => {
            let (bootstrap, topic, n): (&str, &str, u64) = (arg(2), arg(3), arg(4).parse().expect("N"));
            let p = producer(bootstrap);
            let t = Instant::now();
            for i in 0..n {
                let value = format!("{{\"id\":{i},\"card\":\"c{:05}\",\"amount\":{:.2}}}", i * 7919 % 10000, (i * 37 % 10000) as f64 / 100.0);
                send(&p, topic, Some(format!("c{:05}", i * 7919 % 10000).as_bytes()), value.as_bytes());
                p.poll(Duration::ZERO);
            }
            p.flush(Duration::from_secs(300)).expect("flush");
            eprintln!("produced {n} messages in {:.2} s", t.elapsed().as_secs_f64());
        }
        "filter" => {
            let (bootstrap, input, output, threads): (&str, &str, &str, usize) = (arg(2), arg(3), arg(4), arg(5).parse().expect("THREADS"));
            let probe: BaseConsumer = config(bootstrap).create().expect("a consumer");
            let all = partitions(&probe, input);
            let t = Instant::now();
            let kept: u64 = std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads)
                    .map(|w| {
                        let mine: Vec<i32> = all.iter().copied().filter(|p| *p as usize % threads == w).collect();
                        s.spawn(move || {
                            let p = producer(bootstrap);
                            let mut kept = 0u64;
                            read_to_end(bootstrap, input, &mine, |m| {
                                let Some(v) = m.payload() else { return };
                                let keep = serde_json::from_slice::<serde_json::Value>(v).ok().and_then(|j| j["amount"].as_f64()).is_some_and(|a| a > 50.0);
                                if keep {
                                    send(&p, output, m.key(), v);
                                    kept += 1;
                                }
                                p.poll(Duration::ZERO);
                            });
                            p.flush(Duration::from_secs(300)).expect("flush");
                            kept
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().expect("a worker")).sum()
            });
            println!("kept {kept} in {:.3} s", t.elapsed().as_secs_f64());
        }
        "count" => {
            let (bootstrap, topic) = (arg(2), arg(3));
            let probe: BaseConsumer = config(bootstrap).create().expect("a consumer");
            let parts = partitions(&probe, topic);
            let mut n = 0u64;
            read_to_end(bootstrap, topic, &parts, |_| n += 1);
            println!("{n}");
        }
        other => panic!("unknown command {other}: produce, filter or count"),
    }
}
