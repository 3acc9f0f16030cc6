//! Feeds arbitrary peer bytes, in arbitrary chunks, to both RFB handshake
//! state machines and the version parser. They must never panic, never
//! claim to consume more than they were given, and stop after finishing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synnefo_api::console::rfb::{self, ClientHandshake, Handshake, ServerHandshake};

fn run(machine: &mut dyn Handshake, data: &[u8], chunks: &[u8]) {
    let mut buf: Vec<u8> = Vec::new();
    let mut rest = data;
    let mut chunk_sizes = chunks.iter().copied().cycle();
    for _ in 0..10_000 {
        match machine.advance(&buf) {
            Ok(p) => {
                assert!(p.consumed <= buf.len());
                buf.drain(..p.consumed);
                if p.finished {
                    // Finished machines consume nothing more.
                    let again = machine.advance(&buf).expect("finished machine errs");
                    assert_eq!(again.consumed, 0);
                    assert!(again.output.is_empty());
                    return;
                }
            }
            Err(_) => return,
        }
        if rest.is_empty() {
            return;
        }
        let n = usize::from(chunk_sizes.next().unwrap_or(255)).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, input)) = input.split_first() else {
        return;
    };
    let (chunks, data) = input.split_at(input.len().min(usize::from(selector & 7)));
    let chunks = if chunks.is_empty() {
        &[255u8][..]
    } else {
        chunks
    };
    let _ = rfb::parse_version(data);
    match selector >> 6 {
        0 => run(&mut ServerHandshake::new([0x5a; 16]), data, chunks),
        1 => run(&mut ServerHandshake::rejecting("busy"), data, chunks),
        2 => run(&mut ClientHandshake::new(None), data, chunks),
        _ => run(&mut ClientHandshake::new(Some(b"password")), data, chunks),
    }
});
