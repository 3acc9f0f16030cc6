//! Free ports and polling helpers.

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for a child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Does something accept TCP connections on `127.0.0.1:port`?
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// Polls `check` every `every` until it returns `Some`, or `None` once
/// `timeout` has passed (checked once more at the end).
pub fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Waits (blocking) until `127.0.0.1:port` accepts connections.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    poll(timeout, Duration::from_millis(100), || {
        port_open(port).then_some(())
    })
    .is_some()
}

/// The async [`poll`]: awaits `check` every `every` until it returns
/// `Some`, or `None` once `timeout` has passed.
pub async fn poll_async<T, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_port_is_open_and_a_released_one_is_not() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(wait_port(port, Duration::from_secs(1)));
        drop(l);
        assert!(!port_open(port));
    }

    #[test]
    fn poll_gives_up_after_its_timeout() {
        let mut n = 0;
        assert_eq!(
            poll(Duration::from_millis(50), Duration::from_millis(5), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
        let t = Instant::now();
        assert_eq!(
            poll(
                Duration::from_millis(50),
                Duration::from_millis(5),
                || None::<()>
            ),
            None
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
    }
}
