//! Fixtures of the store contract: tenants and VMs (the shared builders),
//! op-status events, NICs and times.

use chrono::{DateTime, TimeZone, Utc};
use synnefo_core::ids::JobId;
use synnefo_core::model::{Flavor, NewVm, Nic, Vm};
use synnefo_core::state::{JobStatus, OpCode, OpStatusEvent, Transition, VmState, apply_op_status};
use synnefo_core::store::SeaStore;
pub(crate) use synnefo_test_support::builders::{Tenant, tenant};

/// A name no other test uses, starting with `prefix`.
pub(crate) fn unique(prefix: &str) -> String {
    synnefo_test_support::unique(&format!("{prefix}-"))
}

/// Creates a flavor of `vcpus` and `ram_mib`.
pub(crate) async fn flavor(s: &SeaStore, vcpus: i32, ram_mib: i32) -> Flavor {
    synnefo_test_support::builders::flavor(s, vcpus, ram_mib).await
}

/// The tenant's VM request named `name`.
pub(crate) fn new_vm(t: &Tenant, name: &str) -> NewVm {
    t.new_vm(name)
}

/// Creates the tenant's VM named `name`.
pub(crate) async fn create(s: &SeaStore, t: &Tenant, name: &str) -> Vm {
    t.create_vm(s, name).await
}

pub(crate) fn ev(job: u64, op: OpCode, status: JobStatus, time_us: i64) -> OpStatusEvent {
    OpStatusEvent {
        job_id: JobId(job),
        op_index: 0,
        opcode: op,
        status,
        log_msg: Some(format!("{op} {status}")),
        error: None,
        time_us,
    }
}

pub(crate) fn applied(state: &VmState, e: &OpStatusEvent) -> VmState {
    match apply_op_status(state, e) {
        Transition::Applied(s) => s,
        Transition::Ignored(why) => panic!("event ignored: {why:?}"),
    }
}

pub(crate) fn nic(index: i32, ip: &str) -> Nic {
    Nic {
        index,
        ip: Some(ip.into()),
        mac: Some(format!("aa:00:00:00:00:{index:02x}")),
        network: Some("public".into()),
        link: Some("br0".into()),
        mode: Some("bridged".into()),
    }
}

pub(crate) fn at(secs: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, micros * 1000)
        .single()
        .expect("valid time")
}

/// A time `us` microseconds after the epoch.
pub(crate) fn at_us(us: i64) -> DateTime<Utc> {
    at(us / 1_000_000, (us % 1_000_000) as u32)
}
