//! Arbitrary control-socket lines: parsing must never panic, and whatever
//! parses must be a valid forwarding that survives a JSON round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synnefo_api::console::Forwarding;
use synnefo_api::console::control::{self, RequestForm};

fuzz_target!(|line: &[u8]| {
    let _ = control::request_form(line);
    let _ = control::parse_response(line);
    if let Ok((fwd, form)) = control::parse_request(line) {
        control::validate(&fwd).expect("parsed requests are valid");
        let json = serde_json_roundtrip(&fwd);
        assert_eq!(json, fwd);
        if form == RequestForm::Legacy {
            assert_ne!(fwd.source_port, 0);
        }
        let _ = control::encode_response(form, &Ok(fwd.source_port));
    }
});

fn serde_json_roundtrip(fwd: &Forwarding) -> Forwarding {
    let line = serde_json::to_vec(fwd).expect("serializes");
    if line.len() > control::MAX_REQUEST_LEN {
        // Escaping can push a valid request past the line limit.
        return fwd.clone();
    }
    let (back, form) = control::parse_request(&line).expect("re-encoded request parses");
    assert_eq!(form, RequestForm::Json);
    back
}
