//! Port pool, authentication-failure rate limit, file-descriptor limit.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::net::{TcpListener, TcpSocket};

use super::ConsoleError;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent
    // (plain inserts/removes), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises RLIMIT_NOFILE's soft limit towards `target` (and the hard limit,
/// when the process may). Returns the soft limit before and after.
pub fn raise_nofile_limit(target: u64) -> Result<(u64, u64), ConsoleError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft >= target {
        return Ok((soft, soft));
    }
    if hard < target && setrlimit(Resource::RLIMIT_NOFILE, target, target).is_ok() {
        return Ok((soft, target));
    }
    let new = target.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, new, hard).map_err(std::io::Error::from)?;
    Ok((soft, new))
}

#[derive(Debug)]
struct PoolState {
    next: u16,
    in_use: HashSet<u16>,
}

/// The ports forwardings listen on: explicit ones and the pool.
#[derive(Debug, Clone)]
pub(crate) struct PortPool {
    first: u16,
    last: u16,
    listen: IpAddr,
    state: Arc<Mutex<PoolState>>,
}

/// A port held by a pending forwarding; released on drop.
#[derive(Debug)]
pub(crate) struct PortLease {
    port: u16,
    state: Arc<Mutex<PoolState>>,
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        lock(&self.state).in_use.remove(&self.port);
    }
}

impl PortPool {
    pub fn new(listen: IpAddr, first: u16, last: u16) -> Self {
        Self {
            first,
            last,
            listen,
            state: Arc::new(Mutex::new(PoolState {
                next: first,
                in_use: HashSet::new(),
            })),
        }
    }

    fn bind(&self, port: u16) -> std::io::Result<TcpListener> {
        let addr = SocketAddr::new(self.listen, port);
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // Ports are reused soon after a session; connections of that
        // session may still exist or linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(64)
    }

    /// Binds `port`, or a free pool port when `port` is 0.
    pub fn acquire(&self, port: u16) -> Result<(PortLease, TcpListener), ConsoleError> {
        let mut st = lock(&self.state);
        let lease = |port| PortLease {
            port,
            state: self.state.clone(),
        };
        if port != 0 {
            if st.in_use.contains(&port) {
                return Err(ConsoleError::PortUnavailable {
                    port,
                    reason: "already forwarded".into(),
                });
            }
            let listener = self.bind(port).map_err(|e| ConsoleError::PortUnavailable {
                port,
                reason: e.to_string(),
            })?;
            st.in_use.insert(port);
            return Ok((lease(port), listener));
        }
        let size = u32::from(self.last - self.first) + 1;
        for _ in 0..size {
            let candidate = st.next;
            st.next = if candidate >= self.last {
                self.first
            } else {
                candidate + 1
            };
            if st.in_use.contains(&candidate) {
                continue;
            }
            match self.bind(candidate) {
                Ok(listener) => {
                    st.in_use.insert(candidate);
                    return Ok((lease(candidate), listener));
                }
                // Out of descriptors: no other port will do better.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EMFILE | nix::libc::ENFILE)
                    ) =>
                {
                    return Err(ConsoleError::Io(e));
                }
                Err(_) => {}
            }
        }
        Err(ConsoleError::PoolExhausted {
            first: self.first,
            last: self.last,
        })
    }
}

/// Fixed-window counter of authentication failures per source address.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    limit: u32,
    window: Duration,
    state: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// True when `ip` used up its failures in the current window.
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        lock(&self.state)
            .get(&ip)
            .is_some_and(|&(start, n)| now.duration_since(start) < self.window && n >= self.limit)
    }

    /// Counts one failure of `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut st = lock(&self.state);
        if st.len() >= 65_536 {
            let window = self.window;
            st.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = st.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn pool_allocates_distinct_ports_and_releases_them() {
        // Find a free range by binding port 0 first.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        let (first, last) = if base > 60000 {
            (base - 2, base)
        } else {
            (base, base + 2)
        };
        let pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), first, last);
        let mut held = Vec::new();
        while let Ok(x) = pool.acquire(0) {
            held.push(x);
        }
        assert!(!held.is_empty() && held.len() <= 3);
        let ports: HashSet<u16> = held.iter().map(|(l, _)| l.port()).collect();
        assert_eq!(ports.len(), held.len());
        assert!(matches!(
            pool.acquire(0),
            Err(ConsoleError::PoolExhausted { .. })
        ));
        let taken = held[0].0.port();
        assert!(matches!(
            pool.acquire(taken),
            Err(ConsoleError::PortUnavailable { .. })
        ));
        held.remove(0);
        let (lease, _l) = pool.acquire(0).unwrap();
        assert_eq!(lease.port(), taken);
    }

    #[test]
    fn limiter_blocks_after_limit_within_window() {
        let l = FailureLimiter::new(2, Duration::from_secs(60));
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let t0 = Instant::now();
        assert!(!l.is_blocked(ip, t0));
        l.record_failure(ip, t0);
        assert!(!l.is_blocked(ip, t0));
        l.record_failure(ip, t0);
        assert!(l.is_blocked(ip, t0));
        assert!(!l.is_blocked(IpAddr::V4(Ipv4Addr::LOCALHOST), t0));
        assert!(!l.is_blocked(ip, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn nofile_limit_is_raised_or_kept() {
        let (before, after) = raise_nofile_limit(1024).unwrap();
        assert!(after >= before.min(1024));
    }
}
