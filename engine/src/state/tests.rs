use super::*;
use proptest::prelude::*;

fn backend(dir: &Path, cache: usize) -> StateBackend {
    StateBackend::open_fresh(dir, cache, 128).unwrap()
}

fn k(i: i64) -> StateKey {
    StateKey { key: Key(Value::Int(i)), namespace: 0 }
}

#[test]
fn more_keys_than_the_cache_holds() {
    let dir = std::env::temp_dir().join(format!("rill-state-{}-big", std::process::id()));
    let b = backend(&dir, 100);
    let mut s: KeyedState<i64> = b.keyed("op", "sum", StateOptions::default()).unwrap();
    for round in 0..3 {
        for i in 0..5_000 {
            *s.get_or_insert_with(&k(i), || 0).unwrap() += i + round;
        }
        assert!(s.cached() <= 100, "the cache stays within its budget: {}", s.cached());
    }
    for i in 0..5_000 {
        assert_eq!(s.get(&k(i)).unwrap(), Some(&(3 * i + 3)), "key {i}");
    }
    assert_eq!(s.remove(&k(7)).unwrap(), Some(24));
    assert_eq!(s.get(&k(7)).unwrap(), None);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ttl_expires_entries() {
    let dir = std::env::temp_dir().join(format!("rill-state-{}-ttl", std::process::id()));
    let b = backend(&dir, 100);
    let s: ValueState<i64> =
        ValueState::new(b.keyed("op", "v", StateOptions { ttl: Some(Duration::from_millis(1)) }).unwrap());
    s.set(&Value::Int(1), 5).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(s.get(&Value::Int(1)).unwrap(), None, "expired after its TTL");
    let _ = std::fs::remove_dir_all(dir);
}

#[derive(Debug, Clone)]
enum Op {
    Put(i64, i64),
    Delete(i64),
    /// `modify`: add to the value if there is one, or (`None`) remove it.
    Modify(i64, Option<i64>),
    Flush,
    Checkpoint,
    /// An incremental checkpoint: only the changes since the last one, folded onto it.
    Delta,
    CrashAndRestore,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            (0i64..40, any::<i64>()).prop_map(|(k, v)| Op::Put(k, v)),
            (0i64..40).prop_map(Op::Delete),
            (0i64..40, proptest::option::of(-5i64..5)).prop_map(|(k, d)| Op::Modify(k, d)),
            Just(Op::Flush),
            Just(Op::Checkpoint),
            Just(Op::Delta),
            Just(Op::Delta),
            Just(Op::CrashAndRestore),
        ],
        0..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The sled-backed state agrees with a plain map under any sequence of puts, deletes,
    /// changes in place (`modify`), flushes, full and incremental checkpoints, and crashes followed by a restore of the last
    /// checkpoint (a full one with the deltas after it folded on) into a reopened database —
    /// whatever the cache size makes it spill.
    #[test]
    fn agrees_with_a_btreemap(ops in ops(), cache in 16usize..64) {
        let dir = std::env::temp_dir().join(format!("rill-state-{}-model-{cache}-{}", std::process::id(), ops.len()));
        let mut b = backend(&dir, cache);
        let mut s: KeyedState<i64> = b.keyed("op", "m", StateOptions::default()).unwrap();
        let mut model = std::collections::BTreeMap::new();
        let mut saved: (std::collections::BTreeMap<Vec<u8>, Vec<u8>>, _) = Default::default();
        let mut generation = 0;
        for op in &ops {
            match op {
                Op::Checkpoint => saved = (s.snapshot_entries().unwrap().into_iter().collect(), model.clone()),
                Op::Delta => {
                    let (upserts, removed) = s.snapshot_changes().unwrap();
                    saved.0.extend(upserts);
                    for key in removed {
                        saved.0.remove(&key);
                    }
                    saved.1 = model.clone();
                }
                Op::CrashAndRestore => {
                    drop(s);
                    drop(b);
                    generation += 1;
                    // A new process restores the checkpoint into a database of its own (sled
                    // may hold the old one's lock for a moment after a drop).
                    b = backend(&dir.join(generation.to_string()), cache);
                    s = b.keyed("op", "m", StateOptions::default()).unwrap();
                    s.restore_entries(&saved.0.clone().into_iter().collect::<Vec<_>>()).unwrap();
                    model = saved.1.clone();
                }
                Op::Put(key, v) => {
                    s.put(&k(*key), *v).unwrap();
                    model.insert(*key, *v);
                }
                Op::Delete(key) => {
                    prop_assert_eq!(s.remove(&k(*key)).unwrap(), model.remove(key));
                }
                Op::Modify(key, add) => {
                    let got = s.modify(&k(*key), |v| match add {
                        Some(d) => {
                            *v = v.wrapping_add(*d);
                            (true, *v)
                        }
                        None => (false, *v),
                    }).unwrap();
                    let want = match (model.get_mut(key), add) {
                        (Some(v), Some(d)) => {
                            *v = v.wrapping_add(*d);
                            Some(*v)
                        }
                        (Some(_), None) => model.remove(key),
                        (None, _) => None,
                    };
                    prop_assert_eq!(got, want);
                }
                Op::Flush => s.flush().unwrap(),
            }
        }
        for key in 0..40 {
            prop_assert_eq!(s.get(&k(key)).unwrap().copied(), model.get(&key).copied());
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn snapshot_entries_round_trip_as_bytes_and_cut_bytes_are_an_error() {
    let entries: Entries = vec![(vec![0, 1, 2], b"{\"a\":1}".to_vec()), (vec![], vec![]), (vec![9; 300], vec![7; 70000])];
    let bytes = entries_to_bytes(&entries);
    assert_eq!(entries_from_bytes(&bytes).unwrap(), entries);
    assert!(entries_from_bytes(&bytes[..bytes.len() - 1]).unwrap_err().contains("cut short"));
}
