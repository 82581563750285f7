//! Any text given as a pipeline file is either accepted or rejected with located errors; the
//! YAML layer and the config checks never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_engine::config::PipelineConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = PipelineConfig::parse(text, "fuzz.yaml", &[]);
});
