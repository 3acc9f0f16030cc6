//! A tour of the VM state machine: a VM is created, stopped, sees a stale
//! (reordered) notification that is ignored, and is deleted.
//!
//! Run: `cargo run -p synnefo-examples --example state_machine_tour`

use synnefo_core::ids::JobId;
use synnefo_core::state::{
    Action, JobStatus, OpCode, OpStatusEvent, Transition, VmState, apply_op_status, server_status,
    start_action,
};

fn event(job: u64, opcode: OpCode, status: JobStatus, t: i64) -> OpStatusEvent {
    OpStatusEvent {
        job_id: JobId(job),
        op_index: 0,
        opcode,
        status,
        log_msg: None,
        error: None,
        time_us: t,
    }
}

fn apply(vm: VmState, ev: &OpStatusEvent) -> VmState {
    match apply_op_status(&vm, ev) {
        Transition::Applied(next) => {
            println!(
                "{:<22} {:<9} -> {} ({})",
                ev.opcode,
                ev.status,
                next.operstate(),
                server_status(&next).as_str()
            );
            next
        }
        Transition::Ignored(why) => {
            println!("{:<22} {:<9} -> ignored: {why:?}", ev.opcode, ev.status);
            vm
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut vm = VmState::new_build();
    println!(
        "new VM: {} ({})",
        vm.operstate(),
        server_status(&vm).as_str()
    );
    vm = apply(
        vm,
        &event(1, OpCode::InstanceCreate, JobStatus::Running, 10),
    );
    vm = apply(
        vm,
        &event(1, OpCode::InstanceCreate, JobStatus::Success, 20),
    );
    vm = start_action(&vm, Action::Stop)?;
    vm = apply(
        vm,
        &event(2, OpCode::InstanceShutdown, JobStatus::Success, 30),
    );
    // A duplicate delivery and a late, older notification change nothing.
    vm = apply(
        vm,
        &event(2, OpCode::InstanceShutdown, JobStatus::Success, 30),
    );
    vm = apply(
        vm,
        &event(1, OpCode::InstanceCreate, JobStatus::Running, 10),
    );
    vm = start_action(&vm, Action::Destroy)?;
    vm = apply(
        vm,
        &event(3, OpCode::InstanceRemove, JobStatus::Success, 40),
    );
    println!("deleted: {}", vm.deleted());
    Ok(())
}
