//! Any text either fails to compile with an error, or compiles and evaluates (to a value or an
//! error) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_engine::expr::Expr;
use rill_engine::record::Record;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(e) = Expr::compile(text) {
        let r = Record::from_json(br#"{"a": 1, "b": 2.5, "s": "text", "l": [1, 2], "m": {"x": null}}"#).unwrap();
        let _ = e.eval(&r);
    }
});
