//! `[network]` settings: Synnefo's link and MAC prefix pools per flavor,
//! the per-project port bound and the Neutron page size, loaded from the
//! shipped defaults and validated with the offending key named.

use synnefo_core::settings::Settings;

/// The shipped pools, bounds, and each refusal naming its key.
#[test]
fn network_pools_and_bounds_are_validated() {
    let s = Settings::defaults_with("").unwrap();
    let vlan = s.network.flavors["PHYSICAL_VLAN"].pools().unwrap();
    assert_eq!(vlan.len(), 1);
    assert_eq!(vlan[0].describe(), "prv0..prv99");
    let filtered = s.network.flavors["MAC_FILTERED"].pools().unwrap();
    assert_eq!(filtered[0].describe(), "ae:10:00..ae:1f:ff");
    assert_eq!(s.network.max_ports_per_project, 500);
    assert_eq!(s.network.pagination_max_limit, 1000);
    for (text, key) in [
        (
            "[network.flavors.PHYSICAL_VLAN]\nlink_pool_prefix = \"prv1\"",
            "network.flavors.PHYSICAL_VLAN",
        ),
        (
            "[network.flavors.PHYSICAL_VLAN]\nlink_pool_size = 100000",
            "network.flavors.PHYSICAL_VLAN",
        ),
        (
            "[network.flavors.MAC_FILTERED]\nmac_prefix_pool = \"ae:ff:00\"\nmac_prefix_pool_size = 512",
            "network.flavors.MAC_FILTERED",
        ),
        (
            "[network.flavors.MAC_FILTERED]\nmac_prefix_pool = \"ae:00:00\"",
            "network.flavors.MAC_FILTERED.mac_prefix_pool",
        ),
        (
            "[network.flavors.PHYSICAL_VLAN]\nlink_pool_size = 0\nlink = \"\"",
            "network.flavors",
        ),
        (
            "[network]\npagination_max_limit = 0",
            "network.pagination_max_limit",
        ),
    ] {
        let err = Settings::defaults_with(text).unwrap_err().to_string();
        assert!(err.contains(&format!("setting {key}:")), "{text}: {err}");
    }
    // a fixed link instead of the pool
    let s = Settings::defaults_with(
        "[network.flavors.PHYSICAL_VLAN]\nlink_pool_size = 0\nlink = \"br9\"",
    )
    .unwrap();
    assert!(
        s.network.flavors["PHYSICAL_VLAN"]
            .pools()
            .unwrap()
            .is_empty()
    );
}
