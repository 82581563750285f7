//! Timers per key: an operator registers "call me back at time t for key k" in event time
//! (fires when the watermark passes t) or processing time (fires when the clock does). A timer
//! registered twice fires once.

use std::collections::{BTreeMap, HashSet};

use crate::value::{Key, KeyHasher, Value};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    Event,
    Processing,
}

/// A timer that fired.
#[derive(Clone, Debug, PartialEq)]
pub struct Timer {
    pub key: Value,
    pub namespace: i64,
    pub time: i64,
    pub domain: TimeDomain,
}

/// The timers of one operator instance.
#[derive(Default)]
pub struct Timers {
    event: BTreeMap<i64, Vec<(Key, i64)>>,
    processing: BTreeMap<i64, Vec<(Key, i64)>>,
    registered: HashSet<(TimeDomain, i64, Key, i64), KeyHasher>,
}

impl Timers {
    /// Registers a timer for `key` (and `namespace`, 0 unless the operator uses several) at `time`.
    pub fn register(&mut self, domain: TimeDomain, key: &Value, namespace: i64, time: i64) {
        if self.registered.insert((domain, time, Key(key.clone()), namespace)) {
            let queue = match domain {
                TimeDomain::Event => &mut self.event,
                TimeDomain::Processing => &mut self.processing,
            };
            queue.entry(time).or_default().push((Key(key.clone()), namespace));
        }
    }

    /// Deletes a registered timer (no effect if there is none).
    pub fn delete(&mut self, domain: TimeDomain, key: &Value, namespace: i64, time: i64) {
        let k = Key(key.clone());
        if self.registered.remove(&(domain, time, k.clone(), namespace)) {
            let queue = match domain {
                TimeDomain::Event => &mut self.event,
                TimeDomain::Processing => &mut self.processing,
            };
            if let Some(v) = queue.get_mut(&time) {
                v.retain(|(x, n)| !(x == &k && *n == namespace));
                if v.is_empty() {
                    queue.remove(&time);
                }
            }
        }
    }

    /// Removes and returns the timers of `domain` due at or before `upto`, in time order.
    pub fn due(&mut self, domain: TimeDomain, upto: i64) -> Vec<Timer> {
        let queue = match domain {
            TimeDomain::Event => &mut self.event,
            TimeDomain::Processing => &mut self.processing,
        };
        let mut out = Vec::new();
        while let Some(entry) = queue.first_entry() {
            if *entry.key() > upto {
                break;
            }
            let (time, keys) = entry.remove_entry();
            for (key, namespace) in keys {
                self.registered.remove(&(domain, time, key.clone(), namespace));
                out.push(Timer { key: key.0, namespace, time, domain });
            }
        }
        out
    }

    /// When the next processing-time timer is due.
    pub fn next_processing(&self) -> Option<i64> {
        self.processing.keys().next().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.registered.is_empty()
    }

    /// Every registered timer, for a checkpoint.
    pub fn save(&self) -> Vec<(bool, i64, Value, i64)> {
        let mut out = Vec::with_capacity(self.registered.len());
        for (event, queue) in [(true, &self.event), (false, &self.processing)] {
            for (time, keys) in queue {
                out.extend(keys.iter().map(|(k, ns)| (event, *time, k.0.clone(), *ns)));
            }
        }
        out
    }

    /// Registers the timers of [`save`](Self::save).
    pub fn load(&mut self, saved: Vec<(bool, i64, Value, i64)>) {
        for (event, time, key, ns) in saved {
            self.register(if event { TimeDomain::Event } else { TimeDomain::Processing }, &key, ns, time);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_in_order_once() {
        let mut t = Timers::default();
        let a = Value::str("a");
        t.register(TimeDomain::Event, &a, 0, 20);
        t.register(TimeDomain::Event, &a, 0, 10);
        t.register(TimeDomain::Event, &a, 0, 10);
        t.register(TimeDomain::Event, &Value::Int(1), 0, 30);
        t.register(TimeDomain::Processing, &a, 0, 5);
        t.delete(TimeDomain::Event, &Value::Int(1), 0, 30);
        let due: Vec<i64> = t.due(TimeDomain::Event, 25).iter().map(|x| x.time).collect();
        assert_eq!(due, [10, 20]);
        assert!(t.due(TimeDomain::Event, 100).is_empty());
        assert_eq!(t.next_processing(), Some(5));
    }
}
