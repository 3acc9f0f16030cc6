//! Unit tests of the network service's pure helpers.

use chrono::Utc;

use super::*;
use crate::network::NetworkStatus;

fn net(id: usize) -> Network {
    Network {
        id: format!("n{id:04}"),
        name: String::new(),
        project_id: None,
        shared: false,
        external: false,
        flavor: NetworkFlavor::MacFiltered,
        mode: "bridged".into(),
        link: "br0".into(),
        mac_prefix: None,
        status: NetworkStatus::Active,
        admin_state_up: true,
        created: Utc::now(),
        updated: Utc::now(),
    }
}

/// Network views read the subnets of the listed networks only, 500
/// networks a read, and nothing for no network.
#[test]
fn subnet_reads_name_the_listed_networks_only() {
    assert!(subnet_queries(&[]).is_empty());
    let three: Vec<Network> = (0..3).map(net).collect();
    assert_eq!(
        subnet_queries(&three),
        vec![NetQuery {
            network_ids: Some(vec!["n0000".into(), "n0001".into(), "n0002".into()]),
            ..NetQuery::default()
        }]
    );
    let many: Vec<Network> = (0..1201).map(net).collect();
    let qs = subnet_queries(&many);
    let sizes: Vec<usize> = qs
        .iter()
        .map(|q| q.network_ids.as_ref().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [500, 500, 201]);
    let named: Vec<&String> = qs
        .iter()
        .flat_map(|q| q.network_ids.iter().flatten())
        .collect();
    assert_eq!(named.len(), 1201);
    assert!(
        qs.iter()
            .all(|q| q.limit.is_none() && q.project_id.is_none())
    );
}
