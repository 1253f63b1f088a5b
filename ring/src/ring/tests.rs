use std::collections::BTreeMap;

use super::*;

const KEYS: usize = 10_000;

fn member(node_id: &str) -> Member {
    Member {
        node_id: node_id.into(),
        address: format!("{node_id}.skein:50051"),
        started_ms: 1_700_000_000_000,
        version: "test".into(),
    }
}

fn members(ids: &[&str]) -> Vec<Member> {
    ids.iter().map(|id| member(id)).collect()
}

/// Object keys shaped like the real ones.
fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("tables/{}/node-x-{i:08}.parquet", i % 37))
        .collect()
}

/// The owner of every key.
fn placement(ring: &Ring) -> Vec<String> {
    keys()
        .iter()
        .map(|k| ring.owner(k).expect("owner").node_id.clone())
        .collect()
}

#[test]
fn placement_does_not_depend_on_the_order_members_are_given_in() {
    let a = Ring::new(members(&["n1", "n2", "n3"]));
    let b = Ring::new(members(&["n3", "n1", "n2"]));
    assert_eq!(placement(&a), placement(&b));
    for key in keys().iter().take(100) {
        let sa: Vec<_> = a.successors(key).iter().map(|m| &m.node_id).collect();
        let sb: Vec<_> = b.successors(key).iter().map(|m| &m.node_id).collect();
        assert_eq!(sa, sb, "successors of {key}");
    }
    assert_eq!(
        a.members()
            .iter()
            .map(|m| m.node_id.as_str())
            .collect::<Vec<_>>(),
        ["n1", "n2", "n3"]
    );
}

#[test]
fn three_members_share_keys_evenly() {
    let ring = Ring::new(members(&["n1", "n2", "n3"]));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for owner in placement(&ring) {
        *counts.entry(owner).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "every member owns keys: {counts:?}");
    let even = KEYS as f64 / 3.0;
    for (node, count) in &counts {
        let deviation = (*count as f64 - even).abs() / even;
        assert!(
            deviation <= 0.25,
            "{node} owns {count} of {KEYS} keys ({:.0}% off even): {counts:?}",
            deviation * 100.0
        );
    }
}

#[test]
fn a_new_member_takes_a_fair_share_and_only_for_itself() {
    let before = placement(&Ring::new(members(&["n1", "n2", "n3"])));
    let after = placement(&Ring::new(members(&["n1", "n2", "n3", "n4"])));
    let mut moved = 0;
    for (old, new) in before.iter().zip(&after) {
        if old != new {
            moved += 1;
            assert_eq!(
                new, "n4",
                "a key moved from {old} to {new}, not to the new member"
            );
        }
    }
    let share = moved as f64 / KEYS as f64;
    assert!(
        (0.15..=0.35).contains(&share),
        "{moved} of {KEYS} keys moved ({:.1}%)",
        share * 100.0
    );
}

#[test]
fn removing_a_member_moves_only_its_keys() {
    let before = placement(&Ring::new(members(&["n1", "n2", "n3", "n4"])));
    let after = placement(&Ring::new(members(&["n1", "n2", "n4"])));
    let mut moved = 0;
    for (old, new) in before.iter().zip(&after) {
        if old == "n3" {
            assert_ne!(new, "n3");
            moved += 1;
        } else {
            assert_eq!(old, new, "a key of {old} moved to {new}");
        }
    }
    assert!(moved > 0, "n3 owned keys before it left");
}

#[test]
fn successors_list_every_member_once_owner_first() {
    let ring = Ring::new(members(&["n1", "n2", "n3", "n4", "n5"]));
    let mut firsts = BTreeMap::<String, usize>::new();
    for key in keys().iter().take(1_000) {
        let successors = ring.successors(key);
        let owner = ring.owner(key).expect("owner");
        assert_eq!(
            successors.first().copied(),
            Some(owner),
            "owner first for {key}"
        );
        let mut ids: Vec<_> = successors.iter().map(|m| m.node_id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["n1", "n2", "n3", "n4", "n5"], "for {key}");
        // The second is the owner of the key once the first is gone: a retry goes where the
        // key would live next.
        let without: Vec<_> = ring
            .members()
            .iter()
            .filter(|m| m.node_id != owner.node_id)
            .cloned()
            .collect();
        let next = Ring::new(without);
        assert_eq!(
            successors.get(1).map(|m| &m.node_id),
            next.owner(key).map(|m| &m.node_id),
            "for {key}"
        );
        *firsts.entry(owner.node_id.clone()).or_default() += 1;
    }
    assert_eq!(firsts.len(), 5);
}

#[test]
fn a_single_member_owns_everything_and_an_empty_ring_nothing() {
    let one = Ring::new(members(&["solo"]));
    assert_eq!(one.len(), 1);
    for key in keys().iter().take(500) {
        assert_eq!(one.owner(key).map(|m| m.node_id.as_str()), Some("solo"));
        assert_eq!(one.successors(key).len(), 1);
    }
    let empty = Ring::new(Vec::new());
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
    assert!(empty.owner("tables/1/x.parquet").is_none());
    assert!(empty.successors("tables/1/x.parquet").is_empty());
    assert!(empty.member("solo").is_none());
}

#[test]
fn one_member_per_node_id_the_latest_started() {
    let mut old = member("n1");
    old.started_ms -= 10;
    old.address = "old:1".into();
    let ring = Ring::with_version(vec![old, member("n2"), member("n1")], 7);
    assert_eq!(ring.len(), 2);
    assert_eq!(ring.version(), 7);
    assert_eq!(ring.member("n1"), Some(&member("n1")));
    assert_eq!(ring.member("n2"), Some(&member("n2")));
    assert!(ring.member("n3").is_none());
}

#[test]
fn the_version_string_alone_does_not_change_placement_identity() {
    let a = normalize(members(&["n1", "n2"]));
    let mut b = a.clone();
    b[0].version = "newer".into();
    assert!(same_members(&a, &b));
    b[1].address = "elsewhere:1".into();
    assert!(!same_members(&a, &b));
    assert!(!same_members(&a, &a[..1]));
}
