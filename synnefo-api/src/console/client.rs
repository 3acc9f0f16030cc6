//! The control-socket client the API uses to ask a vncauthproxy (ours, or a
//! running snf-vncauthproxy) for a forwarding.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::control::{self, MAX_REQUEST_LEN};
use super::{ConsoleError, Forwarding};

/// How long a control request may take, connect to answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `forwarding` as a JSON request over the control socket at
/// `socket_path` and returns the port the proxy listens on for it.
/// A refusal is [`ConsoleError::Refused`] with the proxy's reason.
pub async fn request_forwarding(
    socket_path: impl AsRef<Path>,
    forwarding: &Forwarding,
) -> Result<u16, ConsoleError> {
    control::validate(forwarding)?;
    let mut line =
        serde_json::to_vec(forwarding).map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    line.push(b'\n');
    let answer = exchange(socket_path.as_ref(), &line).await?;
    control::parse_response(&answer)
}

/// Sends one raw request line (JSON or the v0.3 form; a newline is added if
/// missing) and returns the raw answer line without its newline.
pub async fn request_raw(
    socket_path: impl AsRef<Path>,
    line: &[u8],
) -> Result<Vec<u8>, ConsoleError> {
    let mut line = line.to_vec();
    if line.last() != Some(&b'\n') {
        line.push(b'\n');
    }
    exchange(socket_path.as_ref(), &line).await
}

async fn exchange(path: &Path, line: &[u8]) -> Result<Vec<u8>, ConsoleError> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut stream = UnixStream::connect(path).await?;
        stream.write_all(line).await?;
        let mut reader = BufReader::new(stream).take(MAX_REQUEST_LEN as u64);
        let mut answer = Vec::new();
        reader.read_until(b'\n', &mut answer).await?;
        if answer.last() != Some(&b'\n') {
            return Err(ConsoleError::protocol("control answer truncated"));
        }
        answer.pop();
        Ok(answer)
    })
    .await
    .map_err(|_| ConsoleError::Timeout("control request"))?
}
