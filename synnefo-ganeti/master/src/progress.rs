//! `synnefo progress-monitor INSTANCE`: snf-image's `PROGRESS_MONITOR`.
//!
//! snf-image's OS create script runs `$PROGRESS_MONITOR "$instance"` on
//! the node that builds the instance, with its monitor messages on
//! standard input: JSON objects, one per line (`image-info`,
//! `image-copy-progress`, `image-error`, `image-helper`; snf-image's
//! "Progress Monitoring Interface"). Synnefo's `snf-progress-monitor` adds
//! the instance's name (`instance`) and the time it read the message
//! (`event_time`, `[seconds, microseconds]`) and publishes each on the
//! `ganeti` exchange with the routing key `ganeti.<prefix>.event.progress`.
//! This does the same ([`ProgressMessage`]), so either dispatcher reads
//! what either monitor publishes.
//!
//! Unlike Synnefo's, it never stops reading early: snf-image ignores
//! SIGPIPE but fails a deployment whose helper VM dies of one, so a
//! broker outage or a line it cannot read is logged and skipped, and
//! standard input is drained to its end whatever happens.

use std::time::Duration;

use serde_json::Value;
use synnefo_core::ids::InstanceName;
use synnefo_core::messages::{MessageKind, ProgressMessage};
use synnefo_core::ports::EventBus;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest line kept (snf-image's are a few hundred bytes; a helper's
/// standard error is cut to its last lines).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What a monitor run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MonitorStats {
    /// Messages read.
    pub read: u64,
    /// Messages published.
    pub published: u64,
    /// Lines or values skipped (not JSON objects with a string `type`,
    /// too long, or for an instance that is not one of ours).
    pub skipped: u64,
    /// Messages the bus did not take in time.
    pub failed: u64,
}

/// snf-image's message `msg` as the monitor publishes it: `instance` and
/// `event_time` added (replacing any the message had); `None` unless it
/// is a JSON object with a string `type`.
pub fn stamp(msg: Value, instance: &str, now: (i64, i64)) -> Option<ProgressMessage> {
    let Value::Object(mut m) = msg else {
        return None;
    };
    if !m.get("type").is_some_and(Value::is_string) {
        return None;
    }
    m.insert("instance".into(), Value::String(instance.to_string()));
    m.insert("event_time".into(), serde_json::json!([now.0, now.1]));
    serde_json::from_value(Value::Object(m)).ok()
}

/// The JSON values of one line (snf-image writes one per line; Synnefo's
/// reader also takes several in a row, so does this).
fn values(line: &[u8]) -> (Vec<Value>, bool) {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(line).into_iter::<Value>();
    loop {
        match it.next() {
            Some(Ok(v)) => out.push(v),
            Some(Err(_)) => return (out, true),
            None => return (out, false),
        }
    }
}

/// Reads snf-image's messages from `input` to its end and publishes each
/// for `instance` on `bus` (each publish waits at most `timeout`).
/// `now` gives the `event_time` of each message.
pub async fn run<R: AsyncRead + Unpin>(
    mut input: R,
    instance: &str,
    prefix: &str,
    bus: &dyn EventBus,
    timeout: Duration,
    now: impl Fn() -> (i64, i64),
) -> MonitorStats {
    let mut stats = MonitorStats::default();
    let ours = InstanceName::parse(prefix, instance).is_some();
    if !ours {
        tracing::warn!(%instance, %prefix, "not one of this deployment's instances: its progress is read and dropped");
    }
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    let mut discarding = false;
    loop {
        let n = match input.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading snf-image's messages failed");
                break;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if std::mem::take(&mut discarding) {
                continue;
            }
            handle_line(&line, instance, ours, bus, timeout, &now, &mut stats).await;
        }
        if buf.len() > MAX_LINE_BYTES {
            tracing::warn!(bytes = buf.len(), "an over-long monitor line is skipped");
            stats.skipped += 1;
            buf.clear();
            discarding = true;
        }
    }
    if !buf.is_empty() && !discarding {
        let line = std::mem::take(&mut buf);
        handle_line(&line, instance, ours, bus, timeout, &now, &mut stats).await;
    }
    stats
}

async fn handle_line(
    line: &[u8],
    instance: &str,
    ours: bool,
    bus: &dyn EventBus,
    timeout: Duration,
    now: &impl Fn() -> (i64, i64),
    stats: &mut MonitorStats,
) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let (vals, bad) = values(line);
    if bad {
        stats.skipped += 1;
        tracing::warn!(line = %String::from_utf8_lossy(&line[..line.len().min(256)]), "not a JSON monitor message; skipped");
    }
    for v in vals {
        stats.read += 1;
        let Some(msg) = stamp(v, instance, now()) else {
            stats.skipped += 1;
            continue;
        };
        if !ours {
            stats.skipped += 1;
            continue;
        }
        let body = match serde_json::to_vec(&msg) {
            Ok(b) => b,
            Err(_) => {
                stats.skipped += 1;
                continue;
            }
        };
        match tokio::time::timeout(timeout, bus.publish(MessageKind::Progress, body)).await {
            Ok(Ok(())) => stats.published += 1,
            Ok(Err(e)) => {
                stats.failed += 1;
                tracing::warn!(%instance, kind = %msg.kind, error = %e, "publishing a progress message failed; going on");
            }
            Err(_) => {
                stats.failed += 1;
                tracing::warn!(%instance, kind = %msg.kind, ?timeout, "publishing a progress message timed out; going on");
            }
        }
    }
}

/// A monitor inside the process, for a simulated cluster (`synnefo up`,
/// tests): the returned function takes `(instance, snf-image message)` as
/// snf-image writes them and never blocks; a task spawned on the current
/// runtime stamps and publishes them in order, as [`run`] does for
/// standard input. The task ends when the function is dropped.
pub fn forwarder(
    bus: std::sync::Arc<dyn EventBus>,
    prefix: &str,
    timeout: Duration,
) -> impl Fn(&str, Value) + Send + Sync + 'static {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        let mut stats = MonitorStats::default();
        while let Some((instance, msg)) = rx.recv().await {
            let mut line = serde_json::to_vec(&msg).unwrap_or_default();
            line.push(b'\n');
            let ours = InstanceName::parse(&prefix, &instance).is_some();
            handle_line(
                &line,
                &instance,
                ours,
                bus.as_ref(),
                timeout,
                &crate::eventd::job::now_timestamp,
                &mut stats,
            )
            .await;
        }
    });
    move |instance: &str, msg: Value| {
        let _ = tx.send((instance.to_string(), msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use synnefo_core::bus::InProcessBus;

    async fn drain(bus: &InProcessBus, n: usize) -> Vec<Value> {
        let mut sub = bus.subscribe(MessageKind::Progress).await.unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(5), sub.recv_batch(16))
                .await
                .unwrap()
                .unwrap();
            for d in batch {
                out.push(serde_json::from_slice(&d.body).unwrap());
            }
        }
        out
    }

    #[tokio::test]
    async fn publishes_snf_images_lines_with_instance_and_time() {
        let bus = InProcessBus::default();
        let input = concat!(
            r#"{"messages": ["Starting image copy..."], "type": "image-info", "timestamp": 1378914866.209169}"#,
            "\n",
            r#"{"position": 335547996, "total": 474398720, "type": "image-copy-progress", "timestamp": 1378914869.312985, "progress": 70.73}"#,
            "\n\n  not json\n[1,2]\n",
            // two in a row, and a last line without its newline
            r#"{"type":"image-helper","subtype":"task-start","task":"FixPartitionTable","timestamp":1.5} {"type":"image-helper","subtype":"task-end","task":"FixPartitionTable","timestamp":2.5}"#,
        );
        let stats = run(
            input.as_bytes(),
            "snf-42",
            "snf-",
            &bus,
            Duration::from_secs(1),
            || (1_700_000_000, 7),
        )
        .await;
        assert_eq!(
            stats,
            MonitorStats {
                read: 5,
                published: 4,
                skipped: 2,
                failed: 0
            }
        );
        let got = drain(&bus, 4).await;
        assert_eq!(
            got[1],
            json!({"position": 335547996u64, "total": 474398720u64, "type": "image-copy-progress",
                "timestamp": 1378914869.312985, "progress": 70.73, "instance": "snf-42",
                "event_time": [1_700_000_000, 7]})
        );
        assert_eq!(got[2]["task"], "FixPartitionTable");
        assert_eq!(got[3]["subtype"], "task-end");
        // what the dispatcher reads from them
        let n = synnefo_core::messages::decode_any(&serde_json::to_vec(&got[1]).unwrap(), "snf-")
            .unwrap();
        assert!(matches!(
            n,
            synnefo_core::messages::Decoded::Progress(p)
                if p.report == synnefo_core::messages::BuildReport::Copy { percent: 70 }
        ));
    }

    #[tokio::test]
    async fn never_stops_reading_early() {
        // another deployment's instance: read to the end, nothing published
        let bus = InProcessBus::default();
        let line = "{\"type\":\"image-info\",\"messages\":[\"x\"]}\n".repeat(1000);
        let stats = run(
            line.as_bytes(),
            "other-1",
            "snf-",
            &bus,
            Duration::from_secs(1),
            || (1, 0),
        )
        .await;
        assert_eq!((stats.read, stats.published), (1000, 0));
        // a closed bus: every publish fails, the input is still drained
        bus.close();
        let stats = run(
            line.as_bytes(),
            "snf-1",
            "snf-",
            &bus,
            Duration::from_millis(50),
            || (1, 0),
        )
        .await;
        assert_eq!((stats.read, stats.failed), (1000, 1000));
        // an over-long line is skipped, the next one is read
        let bus = InProcessBus::default();
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\n{\"type\":\"image-info\"}\n");
        let stats = run(
            &input[..],
            "snf-1",
            "snf-",
            &bus,
            Duration::from_secs(1),
            || (1, 0),
        )
        .await;
        assert_eq!((stats.published, stats.skipped), (1, 1));
    }
}
