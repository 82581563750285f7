//! Any bytes either decode into a record that re-encodes and decodes to the same record, or fail
//! with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_engine::record::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::from_json(data) {
        let again = Record::from_json(r.to_json().as_bytes()).expect("re-encoded record decodes");
        assert_eq!(again.to_json(), r.to_json());
    }
});
