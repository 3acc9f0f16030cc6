//! `apply_op_status` throughput: 1M events over 10k VMs, in order, the
//! dispatcher's pure hot path with no I/O.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use synnefo_core::ids::JobId;
use synnefo_core::state::{JobStatus, OpCode, OpStatusEvent, Transition, VmState, apply_op_status};

const EVENTS: usize = 1_000_000;
const VMS: usize = 10_000;

/// Per VM: create, then shutdown/startup/reboot jobs, each op going
/// queued -> running -> success, with a duplicate every 10th event.
fn events() -> Vec<(usize, OpStatusEvent)> {
    let cycle = [
        OpCode::InstanceCreate,
        OpCode::InstanceShutdown,
        OpCode::InstanceStartup,
        OpCode::InstanceReboot,
        OpCode::InstanceSetParams,
    ];
    let statuses = [JobStatus::Queued, JobStatus::Running, JobStatus::Success];
    let mut out = Vec::with_capacity(EVENTS);
    let mut i = 0u64;
    while out.len() < EVENTS {
        let vm = (i as usize) % VMS;
        let step = i as usize / VMS;
        let op = cycle[(step / statuses.len()) % cycle.len()];
        let status = statuses[step % statuses.len()];
        let job = (step / statuses.len()) as u64 + 1;
        let ev = OpStatusEvent {
            job_id: JobId(job * 100_000 + vm as u64),
            op_index: 0,
            opcode: op,
            status,
            log_msg: None,
            error: None,
            time_us: i as i64,
        };
        out.push((vm, ev));
        if out.len() % 10 == 9
            && let Some(prev) = out.last().cloned()
        {
            out.push(prev);
        }
        i += 1;
    }
    out.truncate(EVENTS);
    out
}

fn bench(c: &mut Criterion) {
    let evs = events();
    let mut g = c.benchmark_group("state_machine");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);
    g.bench_function("apply_op_status_1M_events", |b| {
        b.iter(|| {
            let mut vms = vec![VmState::new_build(); VMS];
            let mut applied = 0usize;
            for (vm, ev) in &evs {
                if let Transition::Applied(next) = apply_op_status(&vms[*vm], black_box(ev)) {
                    vms[*vm] = next;
                    applied += 1;
                }
            }
            black_box(applied)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
