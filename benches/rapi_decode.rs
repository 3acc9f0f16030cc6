//! Decoding a 100k-instance `GET /2/instances?bulk=1` answer.
//!
//! The body comes from the simulator (Ganeti 3.0's field set and Python
//! separators, ~1.2 KiB per instance). Besides criterion's timing, a
//! counting allocator reports what one decode allocates in total, its
//! peak live heap, and what the decoded `Vec<Instance>` keeps.
//!
//! ```sh
//! cargo bench -p synnefo-benches --bench rapi_decode
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use synnefo_ganeti::rapi::{decode_instances, endpoints::ListInstances};
use synnefo_ganeti_sim::{SimConfig, SimPopulate, Simulator};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        TOTAL.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let grow = new_size - layout.size();
            let live = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
            PEAK.fetch_max(live, Ordering::Relaxed);
            TOTAL.fetch_add(grow, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const N: u64 = 100_000;

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn body() -> bytes::Bytes {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let sim = Simulator::builder()
            .config(SimConfig {
                populate: Some(SimPopulate {
                    count: N,
                    ..Default::default()
                }),
                ..SimConfig::default()
            })
            .start()
            .await
            .expect("simulator");
        let t = Instant::now();
        let body = sim
            .client()
            .expect("client")
            .call_raw(&ListInstances::default())
            .await
            .expect("listing");
        eprintln!(
            "simulator served {N} instances ({:.1} MiB) in {:?}",
            mib(body.len()),
            t.elapsed()
        );
        body
    })
}

fn bench(c: &mut Criterion) {
    let body = body();
    // One measured decode for the memory figures.
    let base_live = LIVE.load(Ordering::Relaxed);
    PEAK.store(base_live, Ordering::Relaxed);
    let total0 = TOTAL.load(Ordering::Relaxed);
    let t = Instant::now();
    let decoded = decode_instances(&body).expect("decode");
    let took = t.elapsed();
    assert_eq!(decoded.len() as u64, N);
    let kept = LIVE.load(Ordering::Relaxed) - base_live;
    let peak = PEAK.load(Ordering::Relaxed) - base_live;
    let total = TOTAL.load(Ordering::Relaxed) - total0;
    drop(decoded);
    eprintln!(
        "decode of {N} instances: {took:?}; body {:.1} MiB; allocated {:.1} MiB in total, peak live {:.1} MiB, \
         Vec<Instance> keeps {:.1} MiB",
        mib(body.len()),
        mib(total),
        mib(peak),
        mib(kept)
    );

    let mut g = c.benchmark_group("rapi_decode");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("instances_bulk_100k", |b| {
        b.iter(|| decode_instances(&body).expect("decode"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
