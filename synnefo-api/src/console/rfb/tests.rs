use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn des_matches_the_fips_vector_through_the_bit_reversed_key() {
    // FIPS 81 / classic DES vector: key 133457799BBCDFF1,
    // plaintext 0123456789ABCDEF -> 85E813540F0AB405. VNC reverses the
    // bits of each password byte to form the key, so the password is
    // the bit-reversed key.
    let key = hex("133457799BBCDFF1");
    let password: Vec<u8> = key.iter().map(|b| b.reverse_bits()).collect();
    let mut challenge = [0u8; 16];
    challenge[..8].copy_from_slice(&hex("0123456789ABCDEF"));
    challenge[8..].copy_from_slice(&hex("0123456789ABCDEF"));
    let r = vnc_auth_response(&password, &challenge);
    assert_eq!(&r[..8], &hex("85E813540F0AB405")[..]);
    assert_eq!(&r[8..], &hex("85E813540F0AB405")[..]);
}

#[test]
fn des_known_vnc_vector() {
    // Computed independently with OpenSSL (des-ecb, key = bit-reversed
    // "password"): `printf '\x00..\x0f' | openssl enc -des-ecb -nopad
    // -K 0e86ceceeef64e26 -provider legacy -provider default`.
    let challenge: [u8; 16] = core::array::from_fn(|i| i as u8);
    let r = vnc_auth_response(b"password", &challenge);
    assert_eq!(r.to_vec(), hex(KNOWN_RESPONSE));
    assert!(verify_vnc_auth(b"password", &challenge, &r));
    // Only the first 8 bytes count.
    assert!(verify_vnc_auth(b"password-and-more", &challenge, &r));
    assert!(!verify_vnc_auth(b"passwore", &challenge, &r));
    let mut flipped = r;
    flipped[15] ^= 1;
    assert!(!verify_vnc_auth(b"password", &challenge, &flipped));
}

const KNOWN_RESPONSE: &str = "b866924125c8eebb9debc1db61c538e2";

#[test]
fn version_parsing() {
    assert_eq!(
        parse_version(b"RFB 003.003\n").unwrap(),
        Some(RfbVersion::V3_3)
    );
    assert_eq!(
        parse_version(b"RFB 003.005\n").unwrap(),
        Some(RfbVersion::V3_3)
    );
    assert_eq!(
        parse_version(b"RFB 003.007\n").unwrap(),
        Some(RfbVersion::V3_7)
    );
    assert_eq!(
        parse_version(b"RFB 003.008\n").unwrap(),
        Some(RfbVersion::V3_8)
    );
    assert_eq!(
        parse_version(b"RFB 003.889\n").unwrap(),
        Some(RfbVersion::V3_8)
    );
    assert_eq!(
        parse_version(b"RFB 004.001\n").unwrap(),
        Some(RfbVersion::V3_8)
    );
    assert_eq!(parse_version(b"RFB 003.00").unwrap(), None);
    for bad in [
        &b"RFB 003.008\r"[..],
        b"GET / HTTP/1.1",
        b"RFB 00x.008\n",
        b"RFB 002.000\n",
        b"RFB 003.002\n",
        b"rfb 003.008\n",
    ] {
        assert!(parse_version(bad).is_err(), "{bad:?}");
    }
}

/// Runs a server machine against a client machine in memory; with
/// `bytewise`, each side sees one more received byte per round, which
/// exercises every partial-message path.
fn converse(
    server: &mut ServerHandshake,
    client: &mut ClientHandshake,
    server_password: &[u8],
    bytewise: bool,
) -> Result<(), ConsoleError> {
    let mut to_client = Vec::new();
    let mut to_server = Vec::new();
    let (mut client_seen, mut server_seen) = (0usize, 0usize);
    let mut server_done = false;
    for _ in 0..10_000 {
        if !server_done {
            server_seen = if bytewise {
                (server_seen + 1).min(to_server.len())
            } else {
                to_server.len()
            };
            let p = server.advance(&to_server[..server_seen])?;
            to_server.drain(..p.consumed);
            server_seen -= p.consumed;
            to_client.extend(p.output);
            if p.finished {
                server_done = true;
                if let (Some(v), Some(resp)) = (server.version(), server.response()) {
                    let ok = verify_vnc_auth(server_password, server.challenge(), &resp);
                    to_client.extend(encode_security_result(
                        v,
                        if ok { Ok(()) } else { Err("bad password") },
                    ));
                }
            }
        }
        client_seen = if bytewise {
            (client_seen + 1).min(to_client.len())
        } else {
            to_client.len()
        };
        let p = client.advance(&to_client[..client_seen])?;
        to_client.drain(..p.consumed);
        client_seen -= p.consumed;
        to_server.extend(p.output);
        if p.finished {
            return Ok(());
        }
    }
    panic!("no progress");
}

#[test]
fn server_and_client_machines_agree() {
    for bytewise in [false, true] {
        let mut s = ServerHandshake::new([7; 16]);
        let mut c = ClientHandshake::new(Some(b"secret"));
        converse(&mut s, &mut c, b"secret", bytewise).unwrap();
        assert_eq!(c.version(), Some(RfbVersion::V3_8));
        assert_eq!(c.security_type(), Some(SECURITY_VNC_AUTH));

        let mut s = ServerHandshake::new([7; 16]);
        let mut c = ClientHandshake::new(Some(b"wrong"));
        let err = converse(&mut s, &mut c, b"secret", bytewise).unwrap_err();
        assert!(
            matches!(err, ConsoleError::AuthFailed(ref r) if r == "bad password"),
            "{err}"
        );
    }
}

/// Plays a 3.3 or 3.7 viewer against the server machine by hand.
fn viewer_transcript(version: &[u8; 12], choose: Option<u8>) -> (Vec<u8>, ServerHandshake) {
    let mut s = ServerHandshake::new([9; 16]);
    let mut sent = s.advance(&[]).unwrap().output;
    assert_eq!(sent, b"RFB 003.008\n");
    let p = s.advance(version).unwrap();
    assert_eq!(p.consumed, 12);
    sent = p.output;
    if let Some(t) = choose {
        let p = s.advance(&[t]).unwrap();
        sent.extend(p.output);
    }
    (sent, s)
}

#[test]
fn server_speaks_3_3() {
    let (sent, mut s) = viewer_transcript(b"RFB 003.003\n", None);
    let mut expect = vec![0, 0, 0, 2];
    expect.extend([9; 16]);
    assert_eq!(sent, expect);
    let resp = vnc_auth_response(b"pw", &[9; 16]);
    let p = s.advance(&resp).unwrap();
    assert!(p.finished);
    assert_eq!(s.version(), Some(RfbVersion::V3_3));
    assert_eq!(s.response(), Some(resp));
    assert_eq!(
        encode_security_result(RfbVersion::V3_3, Err("x")),
        vec![0, 0, 0, 1]
    );
}

#[test]
fn server_speaks_3_7_and_3_8() {
    for v in [b"RFB 003.007\n", b"RFB 003.008\n"] {
        let (sent, s) = viewer_transcript(v, Some(2));
        let mut expect = vec![1, 2];
        expect.extend([9; 16]);
        assert_eq!(sent, expect);
        assert!(s.response().is_none());
    }
    assert_eq!(
        encode_security_result(RfbVersion::V3_8, Err("no")),
        vec![0, 0, 0, 1, 0, 0, 0, 2, b'n', b'o']
    );
    assert_eq!(
        encode_security_result(RfbVersion::V3_7, Err("no")),
        vec![0, 0, 0, 1]
    );
}

#[test]
fn server_rejects_other_security_choices_and_garbage() {
    let mut s = ServerHandshake::new([0; 16]);
    s.advance(&[]).unwrap();
    s.advance(b"RFB 003.008\n").unwrap();
    assert!(s.advance(&[1]).is_err());

    let mut s = ServerHandshake::new([0; 16]);
    s.advance(&[]).unwrap();
    assert!(s.advance(b"GET / HTTP/1.1\r\n").is_err());
}

#[test]
fn server_without_authentication_offers_only_none() {
    // 3.8: list [None], choice, then the caller sends SecurityResult.
    let mut s = ServerHandshake::without_authentication();
    assert_eq!(s.advance(&[]).unwrap().output, b"RFB 003.008\n");
    let p = s.advance(b"RFB 003.008\n").unwrap();
    assert_eq!(p.output, vec![1, SECURITY_NONE]);
    assert!(!p.finished);
    let p = s.advance(&[SECURITY_NONE, 1]).unwrap();
    assert!(p.finished);
    assert_eq!(p.consumed, 1, "ClientInit belongs to the relayed stream");
    assert_eq!(s.response(), None);
    assert_eq!(s.security_type(), SECURITY_NONE);
    assert_eq!(
        encode_security_result_for(RfbVersion::V3_8, SECURITY_NONE, Ok(())),
        vec![0, 0, 0, 0]
    );
    // 3.7: no SecurityResult for None.
    let mut s = ServerHandshake::without_authentication();
    s.advance(&[]).unwrap();
    s.advance(b"RFB 003.007\n").unwrap();
    assert!(s.advance(&[SECURITY_NONE]).unwrap().finished);
    assert!(encode_security_result_for(RfbVersion::V3_7, SECURITY_NONE, Ok(())).is_empty());
    assert!(encode_security_result_for(RfbVersion::V3_7, SECURITY_NONE, Err("x")).is_empty());
    assert_eq!(
        encode_security_result_for(RfbVersion::V3_7, SECURITY_VNC_AUTH, Err("x")),
        vec![0, 0, 0, 1]
    );
    // 3.3: the server decides None; done right after the version.
    let mut s = ServerHandshake::without_authentication();
    s.advance(&[]).unwrap();
    let p = s.advance(b"RFB 003.003\n").unwrap();
    assert_eq!(p.output, vec![0, 0, 0, SECURITY_NONE]);
    assert!(p.finished);
    // Choosing VNC authentication when only None was offered fails.
    let mut s = ServerHandshake::without_authentication();
    s.advance(&[]).unwrap();
    s.advance(b"RFB 003.008\n").unwrap();
    assert!(s.advance(&[SECURITY_VNC_AUTH]).is_err());
    // And the library's client (None, 3.8) gets through it.
    let mut s = ServerHandshake::without_authentication();
    let mut c = ClientHandshake::new(None);
    let p = c.advance(&s.advance(&[]).unwrap().output).unwrap();
    let p = c.advance(&s.advance(&p.output).unwrap().output).unwrap();
    assert!(s.advance(&p.output).unwrap().finished);
    assert!(c.advance(&[0, 0, 0, 0]).unwrap().finished);
    assert_eq!(c.security_type(), Some(SECURITY_NONE));
}

#[test]
fn rejecting_server_sends_reason() {
    let mut s = ServerHandshake::rejecting("busy");
    s.advance(&[]).unwrap();
    let p = s.advance(b"RFB 003.008\n").unwrap();
    assert!(p.finished);
    assert_eq!(p.output, vec![0, 0, 0, 0, 4, b'b', b'u', b's', b'y']);
    let mut s = ServerHandshake::rejecting("busy");
    s.advance(&[]).unwrap();
    let p = s.advance(b"RFB 003.003\n").unwrap();
    assert_eq!(
        p.output,
        vec![0, 0, 0, 0, 0, 0, 0, 4, b'b', b'u', b's', b'y']
    );
    // and a client machine reports it
    let mut c = ClientHandshake::new(None);
    c.advance(b"RFB 003.008\n").unwrap();
    let err = c
        .advance(&[0, 0, 0, 0, 4, b'b', b'u', b's', b'y'])
        .unwrap_err();
    assert!(matches!(err, ConsoleError::AuthFailed(r) if r == "busy"));
}

#[test]
fn client_speaks_none_in_each_version() {
    // 3.3: server decides None; no SecurityResult follows.
    let mut c = ClientHandshake::new(None);
    let p = c.advance(b"RFB 003.003\n").unwrap();
    assert_eq!(p.output, b"RFB 003.003\n");
    let p = c.advance(&[0, 0, 0, 1, 0xAA]).unwrap();
    assert!(p.finished);
    assert_eq!(p.consumed, 4, "must not consume relayed bytes");
    // 3.7: list, choose None, no SecurityResult.
    let mut c = ClientHandshake::new(None);
    c.advance(b"RFB 003.007\n").unwrap();
    let p = c.advance(&[2, 1, 2]).unwrap();
    assert_eq!(p.output, vec![1]);
    assert!(p.finished);
    // 3.8: list, choose None, SecurityResult OK.
    let mut c = ClientHandshake::new(None);
    c.advance(b"RFB 003.008\n").unwrap();
    let p = c.advance(&[1, 1]).unwrap();
    assert!(!p.finished);
    let p = c.advance(&[0, 0, 0]).unwrap();
    assert_eq!(p.consumed, 0);
    let p = c.advance(&[0, 0, 0, 0]).unwrap();
    assert!(p.finished);
}

#[test]
fn client_prefers_vnc_auth_with_password_and_needs_one_otherwise() {
    let mut c = ClientHandshake::new(Some(b"pw"));
    c.advance(b"RFB 003.008\n").unwrap();
    assert_eq!(c.advance(&[2, 1, 2]).unwrap().output, vec![2]);
    let mut c = ClientHandshake::new(None);
    c.advance(b"RFB 003.008\n").unwrap();
    assert!(c.advance(&[1, 2]).is_err());
    let mut c = ClientHandshake::new(None);
    c.advance(b"RFB 003.003\n").unwrap();
    assert!(c.advance(&[0, 0, 0, 2]).is_err());
    let mut c = ClientHandshake::new(None);
    c.advance(b"RFB 003.008\n").unwrap();
    assert!(c.advance(&[1, 16]).is_err(), "tight only");
}

#[test]
fn malformed_input_errors_instead_of_panicking() {
    let mut c = ClientHandshake::new(None);
    c.advance(b"RFB 003.008\n").unwrap();
    // Reason length beyond the limit.
    assert!(c.advance(&[0, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
    let mut c = ClientHandshake::new(None);
    c.advance(b"RFB 003.003\n").unwrap();
    assert!(c.advance(&[0, 0, 0, 77]).is_err());
    let mut c = ClientHandshake::new(Some(b"x"));
    c.advance(b"RFB 003.008\n").unwrap();
    c.advance(&[1, 2]).unwrap();
    c.advance(&[0; 16]).unwrap();
    assert!(c.advance(&[0, 0, 0, 1, 0, 0, 0, 1, b'x']).is_err());
}

proptest::proptest! {
    /// Arbitrary peer bytes in arbitrary chunks never make a machine
    /// panic or over-consume (the fuzz targets do the same, longer).
    #[test]
    fn machines_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                            chunk in 1usize..40, which in 0u8..4) {
        let mut machine: Box<dyn Handshake> = match which {
            0 => Box::new(ServerHandshake::new([3; 16])),
            1 => Box::new(ServerHandshake::rejecting("no")),
            2 => Box::new(ClientHandshake::new(None)),
            _ => Box::new(ClientHandshake::new(Some(b"pw"))),
        };
        let mut buf = Vec::new();
        for piece in data.chunks(chunk) {
            buf.extend_from_slice(piece);
            match machine.advance(&buf) {
                Ok(p) => {
                    proptest::prop_assert!(p.consumed <= buf.len());
                    buf.drain(..p.consumed);
                    if p.finished { break; }
                }
                Err(_) => break,
            }
        }
    }

    /// Valid-looking transcripts: any version string prefix plus noise.
    #[test]
    fn client_survives_plausible_servers(minor in 0u32..1000, types in proptest::collection::vec(proptest::num::u8::ANY, 0..5),
                                         tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
        let mut input = format!("RFB 003.{minor:03}\n").into_bytes();
        input.push(types.len() as u8);
        input.extend(&types);
        input.extend(&tail);
        let _ = ClientHandshake::new(Some(b"pw")).advance(&input);
        let _ = ClientHandshake::new(None).advance(&input);
    }
}

#[tokio::test]
async fn async_drivers_authenticate_over_a_duplex() {
    let (mut a, mut b) = tokio::io::duplex(64);
    let server = tokio::spawn(async move { server_handshake(&mut a, b"s3cret").await });
    let (v, rest) = client_handshake(&mut b, Some(b"s3cret")).await.unwrap();
    assert_eq!(v, RfbVersion::V3_8);
    assert!(rest.is_empty());
    assert_eq!(server.await.unwrap().unwrap(), RfbVersion::V3_8);

    let (mut a, mut b) = tokio::io::duplex(64);
    let server = tokio::spawn(async move { server_handshake(&mut a, b"s3cret").await });
    assert!(client_handshake(&mut b, Some(b"guess")).await.is_err());
    assert!(server.await.unwrap().is_err());
}
