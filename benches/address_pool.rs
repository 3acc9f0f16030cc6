//! Address allocation from a /16 pool (issue 15): one allocation with 10
//! addresses held and with 60,000 held, reported as the ratio 60,000/10
//! (goal: about 1, the allocator's cost does not grow with the pool's
//! fill). On a SQLite file and, when `SYNNEFO_TEST_DATABASE_URL` answers,
//! on PostgreSQL (otherwise a SKIPPED line).
//!
//! # What is measured
//!
//! A `create_port` on the network of a `10.200.0.0/16` subnet (65,533
//! addresses in its pool) takes the lowest released index (`ip_free`),
//! else the high-water mark `subnets.pool_next` (see
//! `synnefo_core::network`). Both paths are timed on their own, each
//! iteration starting from the same pool state:
//!
//! * `fresh_index`: the free list is empty, the mark is at `held`; the
//!   timed create advances the mark. Untimed afterwards: the port is
//!   deleted (its index goes to the free list) and the pool is put back
//!   as it was by two statements (`DELETE FROM ip_free` of the subnet,
//!   `pool_next = held`): the state before the create, exactly.
//! * `free_list`: the free list holds one index (`held`), the mark is at
//!   `held + 1`; the timed create takes that index. Untimed afterwards:
//!   the port is deleted, which puts the index back.
//! * `create_delete`: as `free_list`, timing the create and its delete
//!   together (the pool's state is the same after each pair).
//!
//! Each create is checked (outside the timing) to have got the address
//! of index `held`, so a wrong state cannot go unnoticed.
//!
//! # The fill
//!
//! `held` ports are created through `create_port`, one transaction each,
//! exactly as the API would: no shortcut writes a row. On PostgreSQL the
//! fill runs on a connection of its own with `synchronous_commit = off`
//! (commits are not waited for on disk; what is written is the same), and
//! the measured store keeps the server's default. Each level has a
//! database of its own (fresh, migrated), so "10 held" is a database
//! with 10 ports.
//!
//! # Ratios
//!
//! Criterion prints each measurement; each path is measured at both
//! levels one right after the other (both databases are filled first).
//! At the end a summary prints, per path, the median over criterion's
//! calls (warm-up included) of the time per create at both levels and
//! their ratio; then the same from an interleaved pass (200 rounds, one
//! create per level per round, alternating), the ratio least disturbed by
//! other work on a shared machine.
//!
//! # Synnefo, in principle
//!
//! Synnefo's pool (`snf-cyclades-app/synnefo/db/pools/__init__.py`,
//! `PoolManager`) keeps two bitmaps per pool row, base64 in text columns.
//! Each allocation decodes both, ANDs them, scans for the first free bit,
//! and re-encodes and writes both back: for a /16 that is 2 x 8 KiB of
//! bitmap, ~22 KB of base64 read and rewritten per allocation, O(pool
//! size) whatever the fill, where this store reads and writes a few rows
//! by index, whatever the pool's size.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use synnefo_core::network::{
    IpRequest, NetworkFlavor, NewNetwork, NewPort, NewSubnet, PoolRanges, SubnetRequest,
    plan_subnet,
};
use synnefo_core::ports::NetworkStore;
use synnefo_core::store::SeaStore;
use synnefo_test_support::db::TestDb;
use tokio::runtime::Runtime;

/// The fill levels.
const LEVELS: [u64; 2] = [10, 60_000];
const CIDR: &str = "10.200.0.0/16";
const PROJECT: &str = "bench-project";

/// Per (backend, path, level): the time per create of each criterion
/// call, in nanoseconds.
static RESULTS: Mutex<Results> = Mutex::new(BTreeMap::new());

/// The same, per create, from the interleaved pass.
static PAIRED: Mutex<Results> = Mutex::new(BTreeMap::new());

fn record(backend: &str, path: &'static str, held: u64, per_iter: Duration) {
    if let Ok(mut r) = RESULTS.lock() {
        r.entry((backend.to_string(), path, held))
            .or_default()
            .push(per_iter.as_nanos() as f64);
    }
}

/// A network with a /16 subnet and `held` ports on it.
struct Pool {
    db: TestDb,
    network_id: String,
    subnet_id: String,
    held: u64,
    /// The address of index `held`: what every measured create gets.
    next_addr: IpAddr,
}

fn new_port(network_id: &str, subnet_id: &str) -> NewPort {
    NewPort {
        network_id: network_id.into(),
        project_id: Some(PROJECT.into()),
        user_id: None,
        name: String::new(),
        device_id: String::new(),
        device_owner: String::new(),
        ips: vec![IpRequest {
            subnet_id: subnet_id.into(),
            ip: None,
        }],
        admin_state_up: true,
        mac_prefix: "aa:00:00".into(),
        port_limit: None,
    }
}

async fn scalar(store: &SeaStore, sql: String) -> i64 {
    let row = store
        .connection()
        .query_one(Statement::from_string(store.db_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("query: {e}"))
        .unwrap_or_else(|| panic!("no row"));
    row.try_get_by_index::<i64>(0)
        .unwrap_or_else(|e| panic!("decode: {e}"))
}

impl Pool {
    async fn new(db: TestDb, held: u64) -> Pool {
        let s = &db.store;
        let net = s
            .create_network(
                &NewNetwork {
                    name: "bench".into(),
                    project_id: Some(PROJECT.into()),
                    shared: false,
                    external: false,
                    flavor: NetworkFlavor::MacFiltered,
                    mode: "bridged".into(),
                    link: "br0".into(),
                    admin_state_up: true,
                    pools: vec![],
                },
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("create_network: {e}"));
        let (cidr, gateway, allocation_pools, dns_nameservers) = plan_subnet(&SubnetRequest {
            cidr: CIDR.into(),
            ..SubnetRequest::default()
        })
        .unwrap_or_else(|e| panic!("plan_subnet: {e}"));
        let ranges = PoolRanges::new(cidr, &allocation_pools);
        let sub = s
            .create_subnet(&NewSubnet {
                network_id: net.id.clone(),
                project_id: None,
                name: String::new(),
                cidr,
                gateway,
                enable_dhcp: true,
                allocation_pools,
                dns_nameservers,
            })
            .await
            .unwrap_or_else(|e| panic!("create_subnet: {e}"));
        let next_addr = ranges
            .address(held)
            .unwrap_or_else(|| panic!("index {held} outside {CIDR}"));
        let pool = Pool {
            network_id: net.id,
            subnet_id: sub.id,
            held,
            next_addr,
            db,
        };
        pool.fill().await;
        pool
    }

    /// `held` ports through `create_port`, on a connection of its own.
    async fn fill(&self) {
        let filler = SeaStore::connect(&self.db.url, 1)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        if filler.db_backend() == DbBackend::Postgres {
            filler
                .connection()
                .execute_unprepared("SET synchronous_commit = off")
                .await
                .unwrap_or_else(|e| panic!("SET synchronous_commit: {e}"));
        }
        let t = Instant::now();
        let port = new_port(&self.network_id, &self.subnet_id);
        for _ in 0..self.held {
            filler
                .create_port(&port)
                .await
                .unwrap_or_else(|e| panic!("fill: create_port: {e}"));
        }
        let _ = filler.close().await;
        eprintln!(
            "address_pool {}: {} ports created in {:.1} s",
            self.backend(),
            self.held,
            t.elapsed().as_secs_f64()
        );
    }

    fn backend(&self) -> &'static str {
        match self.db.store.db_backend() {
            DbBackend::Postgres => "postgresql",
            DbBackend::Sqlite => "sqlite_file",
            DbBackend::MySql => "mysql",
        }
    }

    /// `(pool_next, free-list length, addresses held)`.
    async fn state(&self) -> (i64, i64, u64) {
        let s = &self.db.store;
        let next = scalar(
            s,
            format!(
                "SELECT pool_next FROM subnets WHERE id = '{}'",
                self.subnet_id
            ),
        )
        .await;
        let free = scalar(
            s,
            format!(
                "SELECT COUNT(*) FROM ip_free WHERE subnet_id = '{}'",
                self.subnet_id
            ),
        )
        .await;
        let used = s
            .pool_usage(&self.subnet_id)
            .await
            .unwrap_or_else(|e| panic!("pool_usage: {e}"))
            .used;
        (next, free, used)
    }

    async fn expect_state(&self, free: bool, when: &str) {
        let h = self.held as i64;
        let want = if free {
            (h + 1, 1, self.held)
        } else {
            (h, 0, self.held)
        };
        let got = self.state().await;
        assert_eq!(
            got,
            want,
            "{} held {} {when}: (pool_next, free, used)",
            self.backend(),
            self.held
        );
    }

    /// One timed create (checked afterwards); returns its time and port.
    async fn timed_create(&self, port: &NewPort) -> (Duration, String) {
        let t = Instant::now();
        let p = self
            .db
            .store
            .create_port(port)
            .await
            .unwrap_or_else(|e| panic!("create_port: {e}"));
        let d = t.elapsed();
        assert_eq!(
            p.fixed_ips[0].ip, self.next_addr,
            "the pool's state drifted"
        );
        (d, p.id)
    }

    async fn delete(&self, id: &str) {
        self.db
            .store
            .delete_port(id)
            .await
            .unwrap_or_else(|e| panic!("delete_port: {e}"));
    }

    /// Puts the pool back to "mark at `held`, free list empty" after a
    /// fresh-index create and its delete.
    async fn rewind_mark(&self) {
        let c = self.db.store.connection();
        c.execute_unprepared(&format!(
            "DELETE FROM ip_free WHERE subnet_id = '{}'",
            self.subnet_id
        ))
        .await
        .unwrap_or_else(|e| panic!("rewind: {e}"));
        c.execute_unprepared(&format!(
            "UPDATE subnets SET pool_next = {} WHERE id = '{}'",
            self.held, self.subnet_id
        ))
        .await
        .unwrap_or_else(|e| panic!("rewind: {e}"));
    }

    /// Criterion's timing of `path` (`fresh_index`, `free_list`).
    async fn timed(&self, path: &'static str, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            total += once(self, path).await;
        }
        record(self.backend(), path, self.held, total / iters as u32);
        total
    }

    async fn create_delete(&self, iters: u64) -> Duration {
        let port = new_port(&self.network_id, &self.subnet_id);
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let t = Instant::now();
            let (_, id) = self.timed_create(&port).await;
            self.delete(&id).await;
            total += t.elapsed();
        }
        record(
            self.backend(),
            "create_delete",
            self.held,
            total / iters as u32,
        );
        total
    }
}

/// The timed part of each path, on one pool, once; untimed work after
/// it restores the pool's state.
async fn once(pool: &Pool, path: &'static str) -> Duration {
    let port = new_port(&pool.network_id, &pool.subnet_id);
    match path {
        "fresh_index" => {
            let (d, id) = pool.timed_create(&port).await;
            pool.delete(&id).await;
            pool.rewind_mark().await;
            d
        }
        _ => {
            let (d, id) = pool.timed_create(&port).await;
            pool.delete(&id).await;
            d
        }
    }
}

/// Rounds of the interleaved pass.
const ROUNDS: usize = 200;

/// The path on both pools alternately, one create each per round, so
/// that both levels see the same background load (the development
/// machine is shared): the ratio least disturbed by it.
async fn interleaved(pools: &[Pool], path: &'static str) {
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); pools.len()];
    for _ in 0..ROUNDS {
        for (p, t) in pools.iter().zip(times.iter_mut()) {
            t.push(once(p, path).await.as_nanos() as f64);
        }
    }
    if let Ok(mut r) = PAIRED.lock() {
        for (p, t) in pools.iter().zip(times) {
            r.insert((p.backend().to_string(), path, p.held), t);
        }
    }
}

/// Every path at every level of one backend; each path's levels are
/// measured one right after the other.
fn bench_backend(c: &mut Criterion, rt: &Runtime, pools: &[Pool]) {
    let Some(backend) = pools.first().map(Pool::backend) else {
        return;
    };
    let mut g = c.benchmark_group(format!("address_pool/{backend}"));
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat);

    for p in pools {
        rt.block_on(p.expect_state(false, "after the fill"));
        g.bench_with_input(BenchmarkId::new("fresh_index", p.held), p, |b, p| {
            b.to_async(rt)
                .iter_custom(|iters| p.timed("fresh_index", iters))
        });
    }
    rt.block_on(interleaved(pools, "fresh_index"));

    for p in pools {
        rt.block_on(async {
            p.expect_state(false, "after fresh_index").await;
            // One index on the free list, the mark one above it.
            let (_, id) = p.timed_create(&new_port(&p.network_id, &p.subnet_id)).await;
            p.delete(&id).await;
            p.expect_state(true, "before free_list").await;
        });
    }
    for p in pools {
        g.bench_with_input(BenchmarkId::new("free_list", p.held), p, |b, p| {
            b.to_async(rt)
                .iter_custom(|iters| p.timed("free_list", iters))
        });
    }
    for p in pools {
        g.bench_with_input(BenchmarkId::new("create_delete", p.held), p, |b, p| {
            b.to_async(rt).iter_custom(|iters| p.create_delete(iters))
        });
    }
    rt.block_on(interleaved(pools, "free_list"));
    for p in pools {
        rt.block_on(p.expect_state(true, "at the end"));
    }
    g.finish();
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

type Results = BTreeMap<(String, &'static str, u64), Vec<f64>>;

fn print_ratios(title: &str, r: &Results, paths: &[&'static str]) {
    let mut backends: Vec<&String> = r.keys().map(|k| &k.0).collect();
    backends.dedup();
    eprintln!("{title}");
    for backend in backends {
        for &path in paths {
            let at = |held: u64| {
                r.get(&(backend.clone(), path, held))
                    .map_or(f64::NAN, |v| median(v))
            };
            let (lo, hi) = (at(LEVELS[0]), at(LEVELS[1]));
            eprintln!(
                "  {backend:<12} {path:<14} {} held: {:>8.1} us   {} held: {:>8.1} us   ratio {}/{}: {:.2}",
                LEVELS[0],
                lo / 1e3,
                LEVELS[1],
                hi / 1e3,
                LEVELS[1],
                LEVELS[0],
                hi / lo
            );
        }
    }
}

fn summary() {
    if let Ok(r) = RESULTS.lock() {
        print_ratios(
            "\naddress_pool summary (criterion): time per create (create_delete: per pair), \
             median over criterion's calls",
            &r,
            &["fresh_index", "free_list", "create_delete"],
        );
    }
    if let Ok(r) = PAIRED.lock() {
        print_ratios(
            &format!(
                "address_pool summary (interleaved, {ROUNDS} rounds alternating the levels): \
                 median time per create"
            ),
            &r,
            &["fresh_index", "free_list"],
        );
    }
    eprintln!(
        "  Synnefo's bitmap pool, in principle (not run): per allocation it decodes, ANDs, scans and \
         re-encodes two bitmaps of the whole pool (a /16: 2 x 8 KiB, ~22 KB of base64 rewritten \
         in the pool's row): O(pool size) per allocation; this store: a few indexed rows, whatever the pool's size."
    );
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let mut sqlite = Vec::new();
    for held in LEVELS {
        sqlite.push(rt.block_on(async { Pool::new(TestDb::sqlite_file().await, held).await }));
    }
    bench_backend(c, &rt, &sqlite);
    rt.block_on(close(sqlite));

    let mut pg = Vec::new();
    for held in LEVELS {
        let Some(db) = rt.block_on(TestDb::postgres("address_pool")) else {
            break;
        };
        pg.push(rt.block_on(Pool::new(db, held)));
    }
    if pg.len() == LEVELS.len() {
        bench_backend(c, &rt, &pg);
    }
    rt.block_on(close(pg));
}

/// Closes the pools' connections, then drops their databases (on the
/// runtime their connections belong to).
async fn close(pools: Vec<Pool>) {
    for p in &pools {
        let _ = p.db.store.close().await;
    }
    drop(pools);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
