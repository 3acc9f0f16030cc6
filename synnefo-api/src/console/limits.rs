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

    /// Marks `port` in use; false if it already was.
    fn reserve(&self, port: u16) -> bool {
        lock(&self.state).in_use.insert(port)
    }

    /// Binds `port` (which must be in the pool), or a free pool port chosen
    /// at random when `port` is 0: the next console's port cannot be
    /// guessed from the last one. The lock is held only to reserve a
    /// candidate, never across a bind.
    pub fn acquire(&self, port: u16) -> Result<(PortLease, TcpListener), ConsoleError> {
        let lease = |port| PortLease {
            port,
            state: self.state.clone(),
        };
        if port != 0 {
            if port < self.first || port > self.last {
                return Err(ConsoleError::PortUnavailable {
                    port,
                    reason: format!("outside the pool {}..={}", self.first, self.last),
                });
            }
            if !self.reserve(port) {
                return Err(ConsoleError::PortUnavailable {
                    port,
                    reason: "already forwarded".into(),
                });
            }
            let held = lease(port);
            let listener = self.bind(port).map_err(|e| ConsoleError::PortUnavailable {
                port,
                reason: e.to_string(),
            })?;
            return Ok((held, listener));
        }
        let size = u32::from(self.last - self.first) + 1;
        let start = rand::random::<u32>() % size;
        for i in 0..size {
            let candidate = self.first + ((start + i) % size) as u16;
            if !self.reserve(candidate) {
                continue;
            }
            let held = lease(candidate);
            match self.bind(candidate) {
                Ok(listener) => return Ok((held, listener)),
                // Out of descriptors: no other port will do better.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EMFILE | nix::libc::ENFILE)
                    ) =>
                {
                    return Err(ConsoleError::Io(e));
                }
                Err(_) => drop(held),
            }
        }
        Err(ConsoleError::PoolExhausted {
            first: self.first,
            last: self.last,
        })
    }
}

/// Pending forwardings per user and per project.
#[derive(Debug)]
pub(crate) struct OwnerCounts {
    per_user: usize,
    per_project: usize,
    state: Mutex<(HashMap<String, usize>, HashMap<String, usize>)>,
}

/// One pending forwarding counted against its owner; released on drop.
#[derive(Debug)]
pub(crate) struct OwnerSlot {
    counts: Arc<OwnerCounts>,
    user: Option<String>,
    project: Option<String>,
}

impl OwnerCounts {
    pub fn new(per_user: usize, per_project: usize) -> Arc<Self> {
        Arc::new(Self {
            per_user,
            per_project,
            state: Mutex::new((HashMap::new(), HashMap::new())),
        })
    }

    /// Counts one more pending forwarding of `user` in `project`, or says
    /// which cap it would break.
    pub fn take(
        self: &Arc<Self>,
        user: Option<&str>,
        project: Option<&str>,
    ) -> Result<OwnerSlot, ConsoleError> {
        let mut st = lock(&self.state);
        if let Some(u) = user
            && st.0.get(u).copied().unwrap_or(0) >= self.per_user
        {
            return Err(ConsoleError::TooManyPending {
                scope: "user",
                limit: self.per_user,
            });
        }
        if let Some(p) = project
            && st.1.get(p).copied().unwrap_or(0) >= self.per_project
        {
            return Err(ConsoleError::TooManyPending {
                scope: "project",
                limit: self.per_project,
            });
        }
        if let Some(u) = user {
            *st.0.entry(u.to_owned()).or_default() += 1;
        }
        if let Some(p) = project {
            *st.1.entry(p.to_owned()).or_default() += 1;
        }
        Ok(OwnerSlot {
            counts: self.clone(),
            user: user.map(str::to_owned),
            project: project.map(str::to_owned),
        })
    }
}

fn release(map: &mut HashMap<String, usize>, key: &Option<String>) {
    if let Some(k) = key
        && let Some(n) = map.get_mut(k)
    {
        *n -= 1;
        if *n == 0 {
            map.remove(k);
        }
    }
}

impl Drop for OwnerSlot {
    fn drop(&mut self) {
        let mut st = lock(&self.counts.state);
        release(&mut st.0, &self.user);
        release(&mut st.1, &self.project);
    }
}

/// Connections that have not finished authenticating, per source address
/// and in total.
#[derive(Debug)]
pub(crate) struct Unauthenticated {
    per_address: usize,
    total: usize,
    state: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One unauthenticated connection; released on drop (when the handshake
/// ends, either way).
#[derive(Debug)]
pub(crate) struct UnauthSlot {
    owner: Arc<Unauthenticated>,
    ip: IpAddr,
}

impl Unauthenticated {
    pub fn new(per_address: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_address,
            total,
            state: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for one more connection from `ip`, if both caps allow.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<UnauthSlot> {
        let mut st = lock(&self.state);
        let mine = st.1.get(&ip).copied().unwrap_or(0);
        if st.0 >= self.total || mine >= self.per_address {
            return None;
        }
        st.0 += 1;
        *st.1.entry(ip).or_default() += 1;
        Some(UnauthSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Connections now holding a slot.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        lock(&self.state).0
    }
}

impl Drop for UnauthSlot {
    fn drop(&mut self) {
        let mut st = lock(&self.owner.state);
        st.0 -= 1;
        if let Some(n) = st.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.1.remove(&self.ip);
            }
        }
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
        // an explicit port outside the pool is refused
        let outside = if first > 1 { first - 1 } else { last + 1 };
        assert!(matches!(
            pool.acquire(outside),
            Err(ConsoleError::PortUnavailable { reason, .. }) if reason.contains("outside")
        ));
    }

    #[test]
    fn owners_are_capped_and_released() {
        let c = OwnerCounts::new(2, 3);
        let a1 = c.take(Some("alice"), Some("p")).unwrap();
        let _a2 = c.take(Some("alice"), Some("p")).unwrap();
        assert!(matches!(
            c.take(Some("alice"), Some("q")),
            Err(ConsoleError::TooManyPending { scope: "user", .. })
        ));
        let _b = c.take(Some("bob"), Some("p")).unwrap();
        assert!(matches!(
            c.take(Some("carol"), Some("p")),
            Err(ConsoleError::TooManyPending {
                scope: "project",
                ..
            })
        ));
        // another project is unaffected
        let _d = c.take(Some("dave"), Some("q")).unwrap();
        drop(a1);
        let _a3 = c.take(Some("alice"), Some("p")).unwrap();
        // owner-less forwardings count against nobody
        for _ in 0..10 {
            std::mem::forget(c.take(None, None).unwrap());
        }
    }

    #[test]
    fn unauthenticated_connections_are_capped_per_address_and_in_total() {
        let u = Unauthenticated::new(2, 3);
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let a1 = u.take(a).unwrap();
        let _a2 = u.take(a).unwrap();
        assert!(u.take(a).is_none());
        let _b1 = u.take(b).unwrap();
        assert!(u.take(b).is_none(), "total cap");
        drop(a1);
        let _b2 = u.take(b).unwrap();
        assert_eq!(u.count(), 3);
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
