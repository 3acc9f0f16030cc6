//! The human report of `synnefo reconcile --networks`: one line per
//! finding with its state (fixed, found with the flag that fixes it,
//! report only, skipped, failed), then what guards held back.

use std::fmt::Write as _;

use synnefo_core::reconcile::FixClass;
use synnefo_core::reconcile::networks::NetworkDiscrepancy;
use synnefo_core::reconcile::nics::{NicField, NicGuard, NicWiring, WantedNic};
use synnefo_core::service::network::NetworkReport;

fn wiring(w: &NicWiring) -> String {
    match w {
        NicWiring::Network { network } => network.clone(),
        NicWiring::Link { mode, link } => format!("{mode}/{link}"),
    }
}

fn wanted(n: &WantedNic) -> String {
    format!(
        "{} (MAC {}, IP {}, {})",
        n.name,
        n.mac,
        n.ip.as_deref().unwrap_or("-"),
        wiring(&n.wiring)
    )
}

fn field(f: NicField) -> &'static str {
    match f {
        NicField::Name => "name",
        NicField::Mac => "MAC",
        NicField::Ip => "IP",
        NicField::Network => "network",
    }
}

/// One finding in words.
fn describe(d: &NetworkDiscrepancy) -> String {
    match d {
        NetworkDiscrepancy::Missing {
            network_id,
            backend,
        } => format!(
            "cluster {backend}: network {network_id} is recorded there and Ganeti does not list it"
        ),
        NetworkDiscrepancy::Disconnected {
            network_id,
            backend,
            groups,
        } => format!(
            "cluster {backend}: network {network_id} is not connected to node group(s) {}",
            groups.join(", ")
        ),
        NetworkDiscrepancy::Miswired {
            network_id,
            backend,
            group,
            mode,
            link,
            want_mode,
            want_link,
        } => format!(
            "cluster {backend}: network {network_id} is connected to {group} as {mode}/{link}, recorded {want_mode}/{want_link}"
        ),
        NetworkDiscrepancy::Extra {
            name,
            network_id,
            backend,
            instances,
        } => format!(
            "cluster {backend}: {name} is listed and not recorded there ({}; {} instance(s))",
            if network_id.is_some() {
                "known network"
            } else {
                "unknown network"
            },
            instances.len()
        ),
        NetworkDiscrepancy::Pool(c) => format!(
            "subnet {}: {} leaked and {} doubly held pool indexes",
            c.subnet_id,
            c.leaked.len(),
            c.double.len()
        ),
        NetworkDiscrepancy::MissingNic(m) => format!(
            "server {} ({}): no NIC {}",
            m.vm,
            m.instance,
            wanted(&m.nic)
        ),
        NetworkDiscrepancy::ExtraNic(e) => format!(
            "server {} ({}): NIC {} {} (MAC {}, IP {}) is no port's or floating IP's",
            e.vm,
            e.instance,
            e.nic.index,
            e.nic.name.as_deref().unwrap_or("-"),
            e.nic.mac.as_deref().unwrap_or("-"),
            e.nic.ip.as_deref().unwrap_or("-"),
        ),
        NetworkDiscrepancy::NicDiffers(n) => format!(
            "server {} ({}): NIC {} differs in {}: Ganeti has {} (MAC {}, IP {}, {}), the DB {}",
            n.vm,
            n.instance,
            n.ganeti.index,
            n.fields
                .iter()
                .map(|f| field(*f))
                .collect::<Vec<_>>()
                .join(", "),
            n.ganeti.name.as_deref().unwrap_or("(unnamed)"),
            n.ganeti.mac.as_deref().unwrap_or("-"),
            n.ganeti.ip.as_deref().unwrap_or("-"),
            n.ganeti
                .network
                .clone()
                .or_else(|| n.ganeti.link.clone())
                .unwrap_or_else(|| "-".into()),
            wanted(&n.nic)
        ),
    }
}

fn flag(class: FixClass) -> &'static str {
    match class {
        FixClass::Stale => "found (--fix-stale)",
        FixClass::Orphans => "found (--fix-orphans)",
        FixClass::Unsynced => "found (--fix-unsynced)",
        FixClass::Manual => "found (report only)",
    }
}

/// The whole report.
pub(super) fn render(report: &NetworkReport) -> String {
    let mut out = String::new();
    for (i, d) in report.discrepancies.iter().enumerate() {
        let state = if report.fixed.contains(&i) {
            "fixed".to_string()
        } else if let Some((_, why)) = report.failed.iter().find(|(j, _)| *j == i) {
            format!("FIX FAILED: {why}")
        } else if let Some((_, why)) = report.skipped.iter().find(|(j, _)| *j == i) {
            format!("skipped: {why}")
        } else {
            flag(d.fix_class()).to_string()
        };
        let _ = writeln!(out, "{state}: {}", describe(d));
    }
    for h in &report.held {
        let why = match h.guard {
            NicGuard::JobInFlight { job } => format!(
                "job {} in flight",
                job.map_or("(id pending)".into(), |j| j.to_string())
            ),
            NicGuard::RecentlyChanged { at } => {
                format!("its port changed at {}", at.to_rfc3339())
            }
        };
        let _ = writeln!(out, "held: server {} {} {}: {why}", h.vm, h.finding, h.nic);
    }
    for (b, why) in &report.unlisted {
        let _ = writeln!(out, "unlisted: cluster {b}: {why}");
    }
    let _ = writeln!(
        out,
        "networks: {} discrepancies, {} fixed, {} failed, {} held, {} clusters unlisted; {} servers' NICs checked, {} foreign NICs ignored",
        report.discrepancies.len(),
        report.fixed.len(),
        report.failed.len(),
        report.held.len(),
        report.unlisted.len(),
        report.nic_stats.servers,
        report.nic_stats.foreign_ignored,
    );
    out
}
