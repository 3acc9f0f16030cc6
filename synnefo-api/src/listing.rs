//! Exact caching of server listings across any number of API processes.
//!
//! Listing 200 servers costs milliseconds of database reads and rendering,
//! and dashboards and CLIs poll the same listing over and over. Every write
//! to a project's VMs, by any API process or dispatcher, bumps the
//! project's `vm_generation` in its own transaction
//! ([`VmStore::vm_generation`]).
//! A listing request reads that one number *after it arrived*, then sends
//! the page rendered at that generation or a later one, else renders it:
//! what it sends is what a fresh read would have given at some instant
//! between the request's arrival and its answer. So API processes behind a
//! load balancer need no other coordination, no TTL, and a client always
//! sees its own writes, whichever process served them.
//!
//! Why each piece:
//! * A page is stamped with the generation read *before* its VMs were read:
//!   a write racing the render can only make the page newer than its stamp.
//! * Generation reads are coalesced ([`GenerationReads`]): requests that
//!   arrive while a read is in flight share the next one (never the one
//!   already in flight, which may have started before they arrived). Under
//!   load this turns one database round trip per request into one per
//!   batch, for all projects at once.
//! * Renders are single-flight per page: after a change, concurrent misses
//!   of one page wait for one render instead of each reading 200 VMs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use synnefo_core::StoreError;
use synnefo_core::ports::VmStore;
use tokio::sync::oneshot;

/// Default [`ApiConfig::list_cache_bytes`](crate::ApiConfig::list_cache_bytes): 64 MiB.
pub const DEFAULT_LIST_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Longest cache key kept: a request with a longer key (long filter
/// values) is rendered and not cached.
pub const MAX_KEY_BYTES: usize = 1024;

/// What one cached page costs beyond its key and body (map entry, stamp,
/// `Bytes` header), counted in the budget.
const ENTRY_OVERHEAD: usize = 96;

/// The listing cache of one API process (see the module docs).
pub struct Listings {
    pages: Pages,
    generations: GenerationReads,
    renders: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Listings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listings")
            .field("max_bytes", &self.pages.max_bytes)
            .field("bytes", &self.pages.bytes())
            .finish_non_exhaustive()
    }
}

impl Listings {
    /// A cache of at most `max_bytes` of pages (0: off, every request renders).
    pub fn new(store: Arc<dyn VmStore>, max_bytes: usize) -> Self {
        Self {
            pages: Pages::new(max_bytes),
            generations: GenerationReads::new(store),
            renders: Mutex::new(HashMap::new()),
        }
    }

    /// True when pages are kept.
    pub fn enabled(&self) -> bool {
        self.pages.max_bytes > 0
    }

    /// Bytes of pages held.
    pub fn bytes(&self) -> usize {
        self.pages.bytes()
    }

    /// The page `key` of `project`'s servers: kept, or made by `render`
    /// (which must read the VMs itself, after this is called).
    pub async fn page<F, Fut, E>(&self, project: &str, key: String, render: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, E>>,
        E: From<StoreError>,
    {
        if !self.enabled() || key.len() > MAX_KEY_BYTES {
            return render().await;
        }
        let generation = self.generations.read(project).await?;
        if let Some(page) = self.pages.get(&key, generation) {
            return Ok(page);
        }
        let lock = {
            let mut renders = self.renders.lock().unwrap_or_else(|e| e.into_inner());
            renders.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _one_render = lock.lock().await;
            match self.pages.get(&key, generation) {
                Some(page) => Ok(page),
                None => render().await.inspect(|page| {
                    self.pages.put(key.clone(), generation, page.clone());
                }),
            }
        };
        let mut renders = self.renders.lock().unwrap_or_else(|e| e.into_inner());
        // the map's reference and ours: nobody else waits on this page
        if Arc::strong_count(&lock) == 2 {
            renders.remove(&key);
        }
        result
    }
}

/// Pages by key, each with the generation it was stamped with.
#[derive(Debug)]
struct Pages {
    max_bytes: usize,
    inner: Mutex<PagesInner>,
}

#[derive(Debug, Default)]
struct PagesInner {
    bytes: usize,
    by_key: HashMap<String, (i64, Bytes)>,
}

impl Pages {
    fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(PagesInner::default()),
        }
    }

    /// The page for `key` stamped `generation` or later: generations only
    /// grow, so a later stamp was read after the caller's read, itself
    /// after the caller's request arrived.
    fn get(&self, key: &str, generation: i64) -> Option<Bytes> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .by_key
            .get(key)
            .filter(|(g, _)| *g >= generation)
            .map(|(_, b)| b.clone())
    }

    /// Keeps a page, unless a page with a later stamp is kept already. When
    /// the budget is spent the cache starts over: pages are cheap to rebuild
    /// and a page is replaced at its project's next change anyway.
    fn put(&self, key: String, generation: i64, page: Bytes) {
        let cost = key.len() + page.len() + ENTRY_OVERHEAD;
        if cost > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, old)) = inner.by_key.get(&key) {
            if *g > generation {
                return;
            }
            let old_cost = key.len() + old.len() + ENTRY_OVERHEAD;
            inner.bytes -= old_cost;
        }
        if inner.bytes + cost > self.max_bytes {
            inner.by_key.clear();
            inner.bytes = 0;
        }
        inner.bytes += cost;
        inner.by_key.insert(key, (generation, page));
    }

    fn bytes(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.bytes)
    }
}

type Reply = oneshot::Sender<Result<Option<i64>, StoreError>>;

/// Coalesced reads of projects' VM generations: one store read serves every
/// request queued before it started.
pub struct GenerationReads {
    store: Arc<dyn VmStore>,
    queue: Arc<Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    /// A task is draining the queue.
    draining: bool,
    waiting: Vec<(String, Reply)>,
}

impl GenerationReads {
    /// Reads through `store`.
    pub fn new(store: Arc<dyn VmStore>) -> Self {
        Self {
            store,
            queue: Arc::new(Mutex::new(Queue::default())),
        }
    }

    /// The project's generation, read from the store after this call began.
    pub async fn read(&self, project: &str) -> Result<i64, StoreError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.waiting.push((project.to_string(), tx));
            !std::mem::replace(&mut q.draining, true)
        };
        if start {
            tokio::spawn(drain(self.store.clone(), self.queue.clone()));
        }
        match rx.await {
            Ok(Ok(Some(g))) => Ok(g),
            Ok(Ok(None)) => Err(StoreError::NotFound(format!("project {project}"))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Database(
                "the generation read was dropped".into(),
            )),
        }
    }
}

/// Serves the queue batch by batch until it is empty.
async fn drain(store: Arc<dyn VmStore>, queue: Arc<Mutex<Queue>>) {
    // If this task dies early (cancelled at runtime shutdown, a panic in
    // the store), clear `draining` and fail the queued readers, so that
    // nobody hangs and the next reader starts a new task. Disarmed on the
    // normal exit, where the queue may already belong to a new task.
    struct Abandoned(Option<Arc<Mutex<Queue>>>);
    impl Drop for Abandoned {
        fn drop(&mut self) {
            let Some(queue) = self.0.take() else { return };
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            q.draining = false;
            for (_, tx) in q.waiting.drain(..) {
                let _ = tx.send(Err(StoreError::Database(
                    "the generation reader stopped".into(),
                )));
            }
        }
    }
    let mut guard = Abandoned(Some(queue.clone()));
    loop {
        let batch = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.waiting.is_empty() {
                q.draining = false;
                guard.0 = None;
                return;
            }
            std::mem::take(&mut q.waiting)
        };
        let mut ids: Vec<String> = batch.iter().map(|(p, _)| p.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        let read = match store.vm_generations(&ids).await {
            // a pooled connection that died while idle fails once
            Err(StoreError::Database(_)) => store.vm_generations(&ids).await,
            other => other,
        };
        for (project, tx) in batch {
            let _ = tx.send(match &read {
                Ok(map) => Ok(map.get(&project).copied()),
                Err(e) => Err(e.clone()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_served_at_its_generation_or_an_earlier_read() {
        let c = Pages::new(1024);
        c.put("k".into(), 5, Bytes::from_static(b"five"));
        assert_eq!(c.get("k", 5).as_deref(), Some(&b"five"[..]));
        assert_eq!(c.get("k", 4).as_deref(), Some(&b"five"[..]));
        assert_eq!(c.get("k", 6), None);
        assert_eq!(c.get("other", 5), None);
        // a slow render stamped 4 cannot replace the newer page
        c.put("k".into(), 4, Bytes::from_static(b"four"));
        assert_eq!(c.get("k", 5).as_deref(), Some(&b"five"[..]));
        c.put("k".into(), 6, Bytes::from_static(b"six!!"));
        assert_eq!(c.get("k", 6).as_deref(), Some(&b"six!!"[..]));
        assert_eq!(c.bytes(), 1 + 5 + ENTRY_OVERHEAD);
    }

    #[test]
    fn the_budget_is_kept_keys_included() {
        let budget = 2 * (1 + 6 + ENTRY_OVERHEAD) + 5;
        let c = Pages::new(budget);
        c.put("a".into(), 1, Bytes::from_static(b"123456"));
        c.put("b".into(), 1, Bytes::from_static(b"123456"));
        assert!(c.bytes() <= budget);
        assert_eq!(c.get("b", 1).as_deref(), Some(&b"123456"[..]));
        c.put("big".into(), 1, Bytes::from(vec![0u8; budget]));
        assert_eq!(c.get("big", 1), None);
        // a long key costs its length even with a tiny page
        let c = Pages::new(1000);
        for i in 0..100 {
            c.put(format!("{i:0>500}"), 1, Bytes::from_static(b"x"));
            assert!(c.bytes() <= 1000);
        }
    }

    fn store_with(
        generations: Vec<Result<i64, StoreError>>,
    ) -> (Arc<dyn VmStore>, Arc<Mutex<usize>>) {
        use synnefo_core::ports::MockVmStore;
        let calls = Arc::new(Mutex::new(0usize));
        let mut m = MockVmStore::new();
        let seen = calls.clone();
        let answers = Mutex::new(generations.into_iter());
        m.expect_vm_generations().returning(move |ids| {
            *seen.lock().unwrap() += 1;
            let g = answers
                .lock()
                .unwrap()
                .next()
                .expect("an answer per read")?;
            Ok(ids
                .iter()
                .filter(|p| p.as_str() != "gone")
                .map(|p| (p.clone(), g))
                .collect())
        });
        (Arc::new(m), calls)
    }

    #[tokio::test]
    async fn every_read_starts_after_it_was_asked_and_reads_are_shared() {
        let (store, calls) = store_with((1..=1000).map(Ok).collect());
        let reads = Arc::new(GenerationReads::new(store));
        // sequential reads each see a newer generation
        let a = reads.read("p").await.unwrap();
        let b = reads.read("p").await.unwrap();
        assert!(b > a);
        // concurrent readers share reads
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let reads = reads.clone();
            tasks.spawn(async move { reads.read(if i % 2 == 0 { "p" } else { "q" }).await });
        }
        while let Some(r) = tasks.join_next().await {
            assert!(r.unwrap().unwrap() > b);
        }
        let n = *calls.lock().unwrap();
        assert!(n < 2 + 64, "{n} store reads for 66 requests");
        assert!(matches!(
            reads.read("gone").await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_never_gets_a_read_that_began_before_it_asked() {
        use std::sync::mpsc;
        use synnefo_core::ports::MockVmStore;
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let gates = Mutex::new((started_tx, release_rx, 0i64));
        let mut m = MockVmStore::new();
        m.expect_vm_generations().returning(move |ids| {
            let mut g = gates.lock().unwrap();
            g.0.send(()).unwrap();
            g.1.recv().unwrap();
            g.2 += 1;
            Ok(ids.iter().map(|p| (p.clone(), g.2)).collect())
        });
        let reads = Arc::new(GenerationReads::new(Arc::new(m)));
        let started = Arc::new(Mutex::new(started_rx));
        let wait_started = || {
            let started = started.clone();
            tokio::task::spawn_blocking(move || started.lock().unwrap().recv().unwrap())
        };
        let first = tokio::spawn({
            let reads = reads.clone();
            async move { reads.read("p").await }
        });
        wait_started().await.unwrap();
        // asked while the first read is in flight
        let second = tokio::spawn({
            let reads = reads.clone();
            async move { reads.read("p").await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        release_tx.send(()).unwrap();
        // (the mock blocks a worker while a read is in flight: await the
        // readers only once both reads were let through)
        wait_started().await.unwrap();
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(
            second.await.unwrap().unwrap(),
            2,
            "got the read begun before it asked"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_coming_and_going_never_see_a_spurious_error() {
        let (store, _) = store_with((1..=1_000_000).map(Ok).collect());
        let reads = Arc::new(GenerationReads::new(store));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let reads = reads.clone();
            tasks.spawn(async move {
                for i in 0..2_000 {
                    reads.read("p").await?;
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                Ok::<_, StoreError>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn errors_reach_the_waiters_and_the_next_read_recovers() {
        let down = || Err(StoreError::Database("down".into()));
        let (store, calls) = store_with(vec![down(), down(), down(), Ok(7), Ok(8)]);
        let reads = GenerationReads::new(store);
        // one retry, then the error
        assert!(matches!(
            reads.read("p").await,
            Err(StoreError::Database(_))
        ));
        assert_eq!(*calls.lock().unwrap(), 2);
        // a connection that fails once is retried
        assert_eq!(reads.read("p").await.unwrap(), 7);
        assert_eq!(reads.read("p").await.unwrap(), 8);
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_page_render_once() {
        let (store, _) = store_with(vec![Ok(1); 64]);
        let listings = Arc::new(Listings::new(store, 1 << 20));
        let renders = Arc::new(Mutex::new(0usize));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (listings, renders) = (listings.clone(), renders.clone());
            tasks.spawn(async move {
                listings
                    .page("p", "k".into(), || async {
                        *renders.lock().unwrap() += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Ok::<_, StoreError>(Bytes::from_static(b"page"))
                    })
                    .await
            });
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap().unwrap(), Bytes::from_static(b"page"));
        }
        assert_eq!(*renders.lock().unwrap(), 1);
        assert!(listings.renders.lock().unwrap().is_empty());
    }
}
