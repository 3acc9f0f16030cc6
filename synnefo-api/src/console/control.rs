//! The control protocol, as pure functions (fuzzed in `synnefo-api/fuzz`).
//!
//! One request per line on the control socket, one answer line back:
//! - JSON (snf-vncauthproxy ≥ 1.0): `{"source_port": 0, "destination_address":
//!   "node1", "destination_port": 11000, "password": "..."}` answered by
//!   `{"status": "OK", "source_port": 25001}` or
//!   `{"status": "FAILED", "reason": "..."}`. Unknown keys (such as
//!   snf-vncauthproxy's `auth_user`) are ignored; `label` names the session
//!   in the log line.
//! - v0.3 line form: `sport:daddr:dport:password` answered by `OK` or
//!   `FAILED`. The destination may be an IPv6 address (colons and all); the
//!   password is everything after the last colon, so it cannot contain one.
//!   The source port must be given (the answer cannot carry a port).

use serde::{Deserialize, Serialize};

use super::{ConsoleError, Forwarding};

/// Longest request line accepted.
pub const MAX_REQUEST_LEN: usize = 4096;

/// Which syntax a request used (the answer uses the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestForm {
    /// A JSON object.
    Json,
    /// The v0.3 `sport:daddr:dport:password` line.
    Legacy,
}

/// The JSON answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResponse {
    /// `OK` or `FAILED`.
    pub status: String,
    /// The port the forwarding listens on (on `OK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    /// Why it failed (on `FAILED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On `FAILED` for lack of room: which limit (our extension; other
    /// clients ignore it). Lets the API answer 429/503 honestly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<BusyReason>,
    /// The limit that was reached, with `busy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Which capacity limit refused a forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusyReason {
    /// The user's pending forwardings.
    User,
    /// The project's pending forwardings.
    Project,
    /// The port pool.
    Pool,
}

/// The syntax a (possibly malformed) request line looks like, so even a
/// refusal is answered in the caller's dialect.
pub fn request_form(line: &[u8]) -> RequestForm {
    if line.trim_ascii_start().starts_with(b"{") {
        RequestForm::Json
    } else {
        RequestForm::Legacy
    }
}

/// Parses one request line (trailing `\r\n` or `\n` allowed) and checks the
/// forwarding ([`validate`]).
pub fn parse_request(line: &[u8]) -> Result<(Forwarding, RequestForm), ConsoleError> {
    if line.len() > MAX_REQUEST_LEN {
        return Err(ConsoleError::BadRequest("request too long".into()));
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line)
        .map_err(|_| ConsoleError::BadRequest("request is not UTF-8".into()))?;
    let (fwd, form) = if request_form(line) == RequestForm::Json {
        let fwd: Forwarding = serde_json::from_str(text)
            .map_err(|e| ConsoleError::BadRequest(format!("invalid JSON request: {e}")))?;
        (fwd, RequestForm::Json)
    } else {
        (parse_legacy(text)?, RequestForm::Legacy)
    };
    validate(&fwd)?;
    Ok((fwd, form))
}

fn parse_legacy(text: &str) -> Result<Forwarding, ConsoleError> {
    let bad = |m: &str| {
        ConsoleError::BadRequest(format!(
            "v0.3 request {m}; expected sport:daddr:dport:password"
        ))
    };
    let (sport, rest) = text.split_once(':').ok_or_else(|| bad("has no fields"))?;
    let (rest, password) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("has too few fields"))?;
    let (daddr, dport) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("has too few fields"))?;
    let port = |s: &str, what: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|_| bad(&format!("has a bad {what} {s:?}")))
    };
    let source_port = port(sport, "source port")?;
    if source_port == 0 {
        return Err(bad("needs a source port"));
    }
    let daddr = daddr.trim();
    let daddr = daddr
        .strip_prefix('[')
        .and_then(|d| d.strip_suffix(']'))
        .unwrap_or(daddr);
    Ok(Forwarding::new(
        source_port,
        daddr,
        port(dport, "destination port")?,
        password,
    ))
}

/// Checks a forwarding's fields (also used for in-process requests).
pub fn validate(fwd: &Forwarding) -> Result<(), ConsoleError> {
    let bad = |m: &str| Err(ConsoleError::BadRequest(m.to_owned()));
    if fwd.destination_address.is_empty() || fwd.destination_address.len() > 255 {
        return bad("destination_address must be 1..=255 bytes");
    }
    if fwd
        .destination_address
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return bad("destination_address contains invalid characters");
    }
    if fwd.destination_port == 0 {
        return bad("destination_port must not be 0");
    }
    if fwd.password.is_empty() {
        return bad("password must not be empty");
    }
    if fwd.password.len() > 1024 {
        return bad("password too long");
    }
    if matches!(&fwd.label, Some(l) if l.len() > 256) {
        return bad("label too long");
    }
    for owner in [&fwd.user, &fwd.project].into_iter().flatten() {
        if owner.is_empty() || owner.len() > 256 || owner.chars().any(char::is_control) {
            return bad("user and project must be 1..=256 bytes without control characters");
        }
    }
    Ok(())
}

/// Encodes the answer line (with its newline) to a request of `form`.
pub fn encode_response(form: RequestForm, result: &Result<u16, ConsoleError>) -> Vec<u8> {
    let mut out = match (form, result) {
        (RequestForm::Legacy, Ok(_)) => b"OK".to_vec(),
        (RequestForm::Legacy, Err(_)) => b"FAILED".to_vec(),
        (RequestForm::Json, Ok(port)) => serde_json::to_vec(&ControlResponse {
            status: "OK".into(),
            source_port: Some(*port),
            reason: None,
            busy: None,
            limit: None,
        })
        .unwrap_or_default(),
        (RequestForm::Json, Err(e)) => {
            let (busy, limit) = match e {
                ConsoleError::TooManyPending { scope, limit } => (
                    Some(if *scope == "user" {
                        BusyReason::User
                    } else {
                        BusyReason::Project
                    }),
                    Some(*limit),
                ),
                ConsoleError::PoolExhausted { .. } => (Some(BusyReason::Pool), None),
                _ => (None, None),
            };
            serde_json::to_vec(&ControlResponse {
                status: "FAILED".into(),
                source_port: None,
                reason: Some(e.to_string()),
                busy,
                limit,
            })
            .unwrap_or_default()
        }
    };
    out.push(b'\n');
    out
}

/// Parses a JSON answer line into the allocated port, or the refusal.
pub fn parse_response(line: &[u8]) -> Result<u16, ConsoleError> {
    let r: ControlResponse = serde_json::from_slice(line.trim_ascii())
        .map_err(|e| ConsoleError::protocol(format!("invalid control answer: {e}")))?;
    match (r.status.as_str(), r.source_port) {
        ("OK", Some(port)) if port != 0 => Ok(port),
        ("OK", _) => Err(ConsoleError::protocol("control answer OK without a port")),
        _ if r.busy == Some(BusyReason::Pool) => {
            Err(ConsoleError::PoolExhausted { first: 0, last: 0 })
        }
        _ if r.busy.is_some() => Err(ConsoleError::TooManyPending {
            scope: if r.busy == Some(BusyReason::User) {
                "user"
            } else {
                "project"
            },
            limit: r.limit.unwrap_or(0),
        }),
        _ => Err(ConsoleError::Refused(
            r.reason.unwrap_or_else(|| format!("status {}", r.status)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_requests() {
        let (f, form) = parse_request(
            br#"{"source_port":0,"destination_address":"node1.example.org","destination_port":11000,"password":"abc","auth_user":"x"}
"#,
        )
        .unwrap();
        assert_eq!(form, RequestForm::Json);
        assert_eq!(f, Forwarding::new(0, "node1.example.org", 11000, "abc"));
        let (f, _) = parse_request(
            br#"{"destination_address":"::1","destination_port":5900,"password":"p","label":"vm 42"}"#,
        )
        .unwrap();
        assert_eq!(f.source_port, 0);
        assert_eq!(f.label.as_deref(), Some("vm 42"));
    }

    #[test]
    fn legacy_requests() {
        let (f, form) = parse_request(b"25001:10.0.0.1:11000:s3cret\n").unwrap();
        assert_eq!(form, RequestForm::Legacy);
        assert_eq!(f, Forwarding::new(25001, "10.0.0.1", 11000, "s3cret"));
        let (f, _) = parse_request(b"25001:fe80::1:5901:pw\r\n").unwrap();
        assert_eq!(f.destination_address, "fe80::1");
        assert_eq!(f.destination_port, 5901);
        let (f, _) = parse_request(b"25001:[::1]:5901:pw").unwrap();
        assert_eq!(f.destination_address, "::1");
    }

    #[test]
    fn malformed_requests() {
        for bad in [
            &b""[..],
            b"\n",
            b"hello",
            b"1:2",
            b"1:host:3",
            b"0:host:5900:pw",
            b"x:host:5900:pw",
            b"70000:host:5900:pw",
            b"1:host:0:pw",
            b"1:host:5900:",
            b"1::5900:pw",
            b"1:ho st:5900:pw",
            b"{",
            br#"{"destination_address":"h","destination_port":1}"#,
            br#"{"destination_address":"h","destination_port":70000,"password":"p"}"#,
            br#"{"destination_address":"h","destination_port":1,"password":""}"#,
            br#"{"destination_address":"","destination_port":1,"password":"p"}"#,
            b"\xff\xfe:1:2:3",
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_request(&vec![b'1'; MAX_REQUEST_LEN + 1]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_lines_never_panic(line in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_request(&line);
            let _ = parse_response(&line);
        }

        #[test]
        fn legacy_lines_round_trip(sport in 1u16.., host in "[a-z0-9.-]{1,30}", dport in 1u16.., pw in "[^:\n\r]{1,20}") {
            let line = format!("{sport}:{host}:{dport}:{pw}");
            let (f, form) = parse_request(line.as_bytes()).unwrap();
            proptest::prop_assert_eq!(form, RequestForm::Legacy);
            proptest::prop_assert_eq!(f, Forwarding::new(sport, host, dport, pw));
        }
    }

    #[test]
    fn responses_round_trip() {
        let ok = encode_response(RequestForm::Json, &Ok(25001));
        assert_eq!(ok, b"{\"status\":\"OK\",\"source_port\":25001}\n");
        assert_eq!(parse_response(&ok).unwrap(), 25001);
        let failed = encode_response(RequestForm::Json, &Err(ConsoleError::TooManySessions(3)));
        let err = parse_response(&failed).unwrap_err();
        assert!(matches!(err, ConsoleError::Refused(r) if r.contains("too many")));
        assert_eq!(encode_response(RequestForm::Legacy, &Ok(1)), b"OK\n");
        assert_eq!(
            encode_response(RequestForm::Legacy, &Err(ConsoleError::ShuttingDown)),
            b"FAILED\n"
        );
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(br#"{"status":"OK"}"#).is_err());
    }
}
