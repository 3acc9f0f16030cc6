//! RFB (VNC) handshakes, versions 3.3, 3.7 and 3.8 (RFC 6143), as sans-IO
//! state machines plus thin async drivers.
//!
//! The proxy plays both roles: [`ServerHandshake`] faces the user's viewer
//! (offering only VNC authentication, so the one-time password is checked;
//! or only None, for a browser that already presented its one-time token),
//! [`ClientHandshake`] faces the backend VNC server (security type None, or
//! VNC authentication with the backend password). Each machine is fed the
//! bytes received so far and answers how many it consumed, what to send and
//! whether it is finished; it never reads past the message it waits for.
//! Because they are pure, malformed input is tested and fuzzed directly
//! (`synnefo-api/fuzz`). The handshake ends right after security: the
//! viewer's ClientInit and the server's ServerInit are relayed untouched.
//!
//! VNC authentication: the server sends a random 16-byte challenge, the
//! client answers with the challenge DES-encrypted (ECB, two blocks) under a
//! key made of the password's first 8 bytes (zero padded), each byte
//! bit-reversed (the historical VNC convention).

use des::Des;
use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockEncrypt, KeyInit};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ConsoleError;

/// Security type "Invalid" (carries a failure reason).
pub const SECURITY_INVALID: u8 = 0;
/// Security type "None".
pub const SECURITY_NONE: u8 = 1;
/// Security type "VNC Authentication".
pub const SECURITY_VNC_AUTH: u8 = 2;
/// Length of a ProtocolVersion message (`RFB xxx.yyy\n`).
pub const VERSION_LEN: usize = 12;
/// Length of the VNC authentication challenge and response.
pub const CHALLENGE_LEN: usize = 16;
/// Longest failure reason accepted from a peer.
pub const MAX_REASON_LEN: usize = 64 * 1024;
/// Most bytes buffered while waiting for one handshake message.
pub const MAX_HANDSHAKE_BUFFER: usize = MAX_REASON_LEN + 1024;

/// The protocol versions this module speaks. Ordered: `V3_3 < V3_7 < V3_8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RfbVersion {
    /// RFB 3.3: the server picks the security type; no failure reasons.
    V3_3,
    /// RFB 3.7: security type list; no reason on SecurityResult failure.
    V3_7,
    /// RFB 3.8: security type list; SecurityResult for None too, with reasons.
    V3_8,
}

impl RfbVersion {
    /// The ProtocolVersion message for this version.
    pub fn as_bytes(self) -> &'static [u8; VERSION_LEN] {
        match self {
            Self::V3_3 => b"RFB 003.003\n",
            Self::V3_7 => b"RFB 003.007\n",
            Self::V3_8 => b"RFB 003.008\n",
        }
    }
}

impl std::fmt::Display for RfbVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V3_3 => "3.3",
            Self::V3_7 => "3.7",
            Self::V3_8 => "3.8",
        })
    }
}

/// Parses a ProtocolVersion message. `Ok(None)` if fewer than 12 bytes are
/// given. Minor versions 3..=6 map to 3.3 (as RFC 6143 asks), 7 to 3.7, 8 and
/// above (e.g. Apple's 3.889) and any major version above 3 to 3.8.
pub fn parse_version(buf: &[u8]) -> Result<Option<RfbVersion>, ConsoleError> {
    let Some(msg) = buf.get(..VERSION_LEN) else {
        return Ok(None);
    };
    let bad = || ConsoleError::protocol(format!("bad ProtocolVersion {:?}", escape(msg)));
    if &msg[..4] != b"RFB " || msg[7] != b'.' || msg[11] != b'\n' {
        return Err(bad());
    }
    let num = |d: &[u8]| -> Option<u32> {
        d.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (Some(major), Some(minor)) = (num(&msg[4..7]), num(&msg[8..11])) else {
        return Err(bad());
    };
    match (major, minor) {
        (3, 3..=6) => Ok(Some(RfbVersion::V3_3)),
        (3, 7) => Ok(Some(RfbVersion::V3_7)),
        (3, 8..) => Ok(Some(RfbVersion::V3_8)),
        (4.., _) => Ok(Some(RfbVersion::V3_8)),
        _ => Err(ConsoleError::protocol(format!(
            "unsupported RFB version {major}.{minor}"
        ))),
    }
}

/// The DES response to a VNC authentication challenge for `password` (only
/// its first 8 bytes count).
pub fn vnc_auth_response(password: &[u8], challenge: &[u8; CHALLENGE_LEN]) -> [u8; CHALLENGE_LEN] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let cipher = Des::new(&GenericArray::from(key));
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    out
}

/// Checks a viewer's response in constant time.
pub fn verify_vnc_auth(
    password: &[u8],
    challenge: &[u8; CHALLENGE_LEN],
    response: &[u8; CHALLENGE_LEN],
) -> bool {
    let expected = vnc_auth_response(password, challenge);
    expected
        .iter()
        .zip(response)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The SecurityResult a viewer expects after `security`, if any: VNC
/// authentication always gets one, None only in 3.8 (RFC 6143 7.1.3). Empty
/// when the protocol has no place for it (a failure then just closes).
pub fn encode_security_result_for(
    version: RfbVersion,
    security: u8,
    result: Result<(), &str>,
) -> Vec<u8> {
    if security == SECURITY_NONE && version != RfbVersion::V3_8 {
        return Vec::new();
    }
    encode_security_result(version, result)
}

/// SecurityResult message: OK, or failed with a reason (sent in 3.8 only).
pub fn encode_security_result(version: RfbVersion, result: Result<(), &str>) -> Vec<u8> {
    match result {
        Ok(()) => 0u32.to_be_bytes().to_vec(),
        Err(reason) => {
            let mut out = 1u32.to_be_bytes().to_vec();
            if version == RfbVersion::V3_8 {
                push_reason(&mut out, reason);
            }
            out
        }
    }
}

/// A failure sent instead of the security types (before authentication).
pub fn encode_failure_before_security(version: RfbVersion, reason: &str) -> Vec<u8> {
    let mut out = match version {
        RfbVersion::V3_3 => 0u32.to_be_bytes().to_vec(),
        _ => vec![0u8],
    };
    push_reason(&mut out, reason);
    out
}

fn push_reason(out: &mut Vec<u8>, reason: &str) {
    let bytes = &reason.as_bytes()[..reason.len().min(MAX_REASON_LEN)];
    // MAX_REASON_LEN fits in u32.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// What one [`Handshake::advance`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes consumed (complete messages only).
    pub consumed: usize,
    /// Bytes to send to the peer, in order.
    pub output: Vec<u8>,
    /// The handshake is over; later input belongs to the relayed stream.
    pub finished: bool,
}

/// A sans-IO handshake state machine.
pub trait Handshake {
    /// Feeds everything received and not yet consumed; returns what was
    /// consumed, what to send and whether the handshake is finished. Errors
    /// are final.
    fn advance(&mut self, input: &[u8]) -> Result<Progress, ConsoleError>;
}

/// Byte cursor whose reads fail softly (`None`) when input runs out.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn array16(&mut self) -> Option<[u8; CHALLENGE_LEN]> {
        let s = self.take(CHALLENGE_LEN)?;
        let mut a = [0u8; CHALLENGE_LEN];
        a.copy_from_slice(s);
        Some(a)
    }
    /// A u32-length-prefixed reason string.
    fn reason(&mut self) -> Result<Option<String>, ConsoleError> {
        let mut c = *self;
        let Some(len) = c.u32() else { return Ok(None) };
        let len = len as usize;
        if len > MAX_REASON_LEN {
            return Err(ConsoleError::protocol(format!(
                "failure reason of {len} bytes is too long"
            )));
        }
        let Some(bytes) = c.take(len) else {
            return Ok(None);
        };
        *self = c;
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Start,
    AwaitVersion,
    AwaitChoice,
    AwaitResponse,
    Done,
}

/// The server side of the handshake, up to the viewer's VNC authentication
/// response. Offers only VNC authentication (or, made by
/// [`ServerHandshake::without_authentication`], only None). When
/// [`Handshake::advance`] reports `finished`, check
/// [`ServerHandshake::response`] against the password and send
/// [`encode_security_result_for`]; or, for a machine made by
/// [`ServerHandshake::rejecting`], close the connection.
#[derive(Debug, Clone)]
pub struct ServerHandshake {
    state: ServerState,
    security: u8,
    challenge: [u8; CHALLENGE_LEN],
    version: Option<RfbVersion>,
    reject: Option<String>,
    response: Option<[u8; CHALLENGE_LEN]>,
}

impl ServerHandshake {
    /// A handshake that will send `challenge` (16 random bytes).
    pub fn new(challenge: [u8; CHALLENGE_LEN]) -> Self {
        Self {
            state: ServerState::Start,
            security: SECURITY_VNC_AUTH,
            challenge,
            version: None,
            reject: None,
            response: None,
        }
    }

    /// A handshake that negotiates the version and then refuses the viewer
    /// with `reason` (rate limits, session limits).
    pub fn rejecting(reason: impl Into<String>) -> Self {
        Self {
            reject: Some(reason.into()),
            ..Self::new([0; CHALLENGE_LEN])
        }
    }

    /// A handshake that offers only security type None: for a viewer that
    /// already proved who it is another way (a browser's one-time token).
    /// Finishes when the viewer has chosen None (3.7, 3.8) or right after
    /// the version (3.3); [`ServerHandshake::response`] stays `None`.
    pub fn without_authentication() -> Self {
        Self {
            security: SECURITY_NONE,
            ..Self::new([0; CHALLENGE_LEN])
        }
    }

    /// The negotiated version, once the viewer has sent its own.
    pub fn version(&self) -> Option<RfbVersion> {
        self.version
    }

    /// The security type offered: [`SECURITY_VNC_AUTH`] or [`SECURITY_NONE`].
    pub fn security_type(&self) -> u8 {
        self.security
    }

    /// The challenge sent to the viewer.
    pub fn challenge(&self) -> &[u8; CHALLENGE_LEN] {
        &self.challenge
    }

    /// The viewer's authentication response, once finished (None when
    /// rejecting).
    pub fn response(&self) -> Option<[u8; CHALLENGE_LEN]> {
        self.response
    }
}

impl Handshake for ServerHandshake {
    fn advance(&mut self, input: &[u8]) -> Result<Progress, ConsoleError> {
        let mut c = Cursor { buf: input, pos: 0 };
        let mut out = Vec::new();
        loop {
            match self.state {
                ServerState::Start => {
                    out.extend_from_slice(RfbVersion::V3_8.as_bytes());
                    self.state = ServerState::AwaitVersion;
                }
                ServerState::AwaitVersion => {
                    let Some(msg) = c.take(VERSION_LEN) else {
                        break;
                    };
                    let v = parse_version(msg)?
                        .ok_or_else(|| ConsoleError::protocol("short ProtocolVersion"))?;
                    self.version = Some(v);
                    if let Some(reason) = &self.reject {
                        out.extend(encode_failure_before_security(v, reason));
                        self.state = ServerState::Done;
                    } else if v == RfbVersion::V3_3 {
                        out.extend_from_slice(&u32::from(self.security).to_be_bytes());
                        if self.security == SECURITY_VNC_AUTH {
                            out.extend_from_slice(&self.challenge);
                            self.state = ServerState::AwaitResponse;
                        } else {
                            self.state = ServerState::Done;
                        }
                    } else {
                        out.extend_from_slice(&[1, self.security]);
                        self.state = ServerState::AwaitChoice;
                    }
                }
                ServerState::AwaitChoice => {
                    let Some(t) = c.u8() else { break };
                    if t != self.security {
                        return Err(ConsoleError::protocol(format!(
                            "viewer chose security type {t}; only {} was offered",
                            self.security
                        )));
                    }
                    if self.security == SECURITY_VNC_AUTH {
                        out.extend_from_slice(&self.challenge);
                        self.state = ServerState::AwaitResponse;
                    } else {
                        self.state = ServerState::Done;
                    }
                }
                ServerState::AwaitResponse => {
                    let Some(r) = c.array16() else { break };
                    self.response = Some(r);
                    self.state = ServerState::Done;
                }
                ServerState::Done => break,
            }
        }
        Ok(Progress {
            consumed: c.pos,
            output: out,
            finished: self.state == ServerState::Done,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    AwaitVersion,
    AwaitSecurity33,
    AwaitSecurityTypes,
    AwaitChallenge,
    AwaitResult,
    Done,
}

/// The client side of the handshake, through SecurityResult (ClientInit is
/// left to the caller). Picks VNC authentication when a password is given
/// and offered, else None.
#[derive(Clone)]
pub struct ClientHandshake {
    state: ClientState,
    password: Option<Vec<u8>>,
    version: Option<RfbVersion>,
    security: Option<u8>,
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("state", &self.state)
            .field("version", &self.version)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

impl ClientHandshake {
    /// A client handshake; `password` enables VNC authentication.
    pub fn new(password: Option<&[u8]>) -> Self {
        Self {
            state: ClientState::AwaitVersion,
            password: password.map(<[u8]>::to_vec),
            version: None,
            security: None,
        }
    }

    /// The negotiated version.
    pub fn version(&self) -> Option<RfbVersion> {
        self.version
    }

    /// The security type used.
    pub fn security_type(&self) -> Option<u8> {
        self.security
    }

    fn refused(reason: String) -> ConsoleError {
        ConsoleError::AuthFailed(if reason.is_empty() {
            "server refused the connection".to_owned()
        } else {
            reason
        })
    }
}

impl Handshake for ClientHandshake {
    fn advance(&mut self, input: &[u8]) -> Result<Progress, ConsoleError> {
        let mut c = Cursor { buf: input, pos: 0 };
        let mut out = Vec::new();
        loop {
            match self.state {
                ClientState::AwaitVersion => {
                    let Some(msg) = c.take(VERSION_LEN) else {
                        break;
                    };
                    let v = parse_version(msg)?
                        .ok_or_else(|| ConsoleError::protocol("short ProtocolVersion"))?;
                    out.extend_from_slice(v.as_bytes());
                    self.version = Some(v);
                    self.state = if v == RfbVersion::V3_3 {
                        ClientState::AwaitSecurity33
                    } else {
                        ClientState::AwaitSecurityTypes
                    };
                }
                ClientState::AwaitSecurity33 => {
                    let mut c2 = c;
                    let Some(t) = c2.u32() else { break };
                    match t {
                        0 => {
                            let Some(reason) = c2.reason()? else { break };
                            return Err(Self::refused(reason));
                        }
                        1 => {
                            self.security = Some(SECURITY_NONE);
                            self.state = ClientState::Done;
                        }
                        2 => {
                            if self.password.is_none() {
                                return Err(ConsoleError::AuthFailed(
                                    "server requires VNC authentication and no password is configured".into(),
                                ));
                            }
                            self.security = Some(SECURITY_VNC_AUTH);
                            self.state = ClientState::AwaitChallenge;
                        }
                        t => {
                            return Err(ConsoleError::protocol(format!(
                                "unsupported security type {t}"
                            )));
                        }
                    }
                    c = c2;
                }
                ClientState::AwaitSecurityTypes => {
                    let mut c2 = c;
                    let Some(n) = c2.u8() else { break };
                    if n == 0 {
                        let Some(reason) = c2.reason()? else { break };
                        return Err(Self::refused(reason));
                    }
                    let Some(types) = c2.take(usize::from(n)) else {
                        break;
                    };
                    let choice = if self.password.is_some() && types.contains(&SECURITY_VNC_AUTH) {
                        SECURITY_VNC_AUTH
                    } else if types.contains(&SECURITY_NONE) {
                        SECURITY_NONE
                    } else if types.contains(&SECURITY_VNC_AUTH) {
                        return Err(ConsoleError::AuthFailed(
                            "server requires VNC authentication and no password is configured"
                                .into(),
                        ));
                    } else {
                        return Err(ConsoleError::protocol(format!(
                            "no supported security type among {types:?}"
                        )));
                    };
                    out.push(choice);
                    self.security = Some(choice);
                    self.state = match (choice, self.version) {
                        (SECURITY_VNC_AUTH, _) => ClientState::AwaitChallenge,
                        (_, Some(RfbVersion::V3_8)) => ClientState::AwaitResult,
                        _ => ClientState::Done,
                    };
                    c = c2;
                }
                ClientState::AwaitChallenge => {
                    let Some(challenge) = c.array16() else { break };
                    let password = self.password.as_deref().unwrap_or_default();
                    out.extend_from_slice(&vnc_auth_response(password, &challenge));
                    self.state = ClientState::AwaitResult;
                }
                ClientState::AwaitResult => {
                    let mut c2 = c;
                    let Some(result) = c2.u32() else { break };
                    if result == 0 {
                        self.state = ClientState::Done;
                        c = c2;
                        continue;
                    }
                    if self.version == Some(RfbVersion::V3_8) {
                        let Some(reason) = c2.reason()? else { break };
                        return Err(Self::refused(reason));
                    }
                    return Err(Self::refused("authentication failed".into()));
                }
                ClientState::Done => break,
            }
        }
        Ok(Progress {
            consumed: c.pos,
            output: out,
            finished: self.state == ClientState::Done,
        })
    }
}

/// Runs a handshake over `stream` until it finishes. Returns the bytes
/// received after the handshake's last message (normally none), which
/// belong to the relayed stream.
pub async fn drive<H, S>(handshake: &mut H, stream: &mut S) -> Result<Vec<u8>, ConsoleError>
where
    H: Handshake + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let p = handshake.advance(&buf)?;
        buf.drain(..p.consumed.min(buf.len()));
        if !p.output.is_empty() {
            stream.write_all(&p.output).await?;
            stream.flush().await?;
        }
        if p.finished {
            return Ok(buf);
        }
        if buf.len() > MAX_HANDSHAKE_BUFFER {
            return Err(ConsoleError::protocol("handshake message too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ConsoleError::protocol(
                "connection closed during the handshake",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Connects as a viewer: runs [`ClientHandshake`] (VNC authentication if
/// `password` is given and offered) and returns the version and any bytes
/// received past SecurityResult. The caller sends ClientInit next.
pub async fn client_handshake<S>(
    stream: &mut S,
    password: Option<&[u8]>,
) -> Result<(RfbVersion, Vec<u8>), ConsoleError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut hs = ClientHandshake::new(password);
    let rest = drive(&mut hs, stream).await?;
    let version = hs
        .version()
        .ok_or_else(|| ConsoleError::protocol("no version negotiated"))?;
    Ok((version, rest))
}

/// Acts as a VNC server requiring VNC authentication with `password`: runs
/// [`ServerHandshake`] with a random challenge, checks the response and
/// sends SecurityResult. Test servers and benchmarks use it; the proxy
/// itself splits these steps.
pub async fn server_handshake<S>(
    stream: &mut S,
    password: &[u8],
) -> Result<RfbVersion, ConsoleError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut hs = ServerHandshake::new(rand::random());
    drive(&mut hs, stream).await?;
    let (Some(version), Some(response)) = (hs.version(), hs.response()) else {
        return Err(ConsoleError::protocol("handshake ended without a response"));
    };
    if verify_vnc_auth(password, hs.challenge(), &response) {
        stream
            .write_all(&encode_security_result(version, Ok(())))
            .await?;
        Ok(version)
    } else {
        stream
            .write_all(&encode_security_result(
                version,
                Err("authentication failed"),
            ))
            .await?;
        Err(ConsoleError::AuthFailed("wrong password".into()))
    }
}

fn escape(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

#[cfg(test)]
mod tests;
