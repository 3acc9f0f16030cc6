//! Arbitrary request input for the HTTP API's decoding: JSON bodies of
//! every request type, query strings through the server-list filters, and
//! microversion headers. Nothing may panic, and every refusal is a client
//! error (4xx), never a 5xx.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synnefo_api::fuzzing;

fn client_error(r: Result<(), synnefo_api::fuzzing::StatusCode>) {
    if let Err(status) = r {
        assert!(status.is_client_error(), "decoding answered {status}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => client_error(fuzzing::body(selector / 3, rest)),
        1 => client_error(fuzzing::query(&String::from_utf8_lossy(rest))),
        _ => {
            let cut = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let (a, b) = rest.split_at(cut);
            client_error(fuzzing::microversion(a, b.get(1..).unwrap_or_default()));
        }
    }
});
