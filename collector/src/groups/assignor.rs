//! The target assignment: balanced and sticky.
//!
//! A pure function of the members' subscriptions, the partitions that exist and the previous
//! target. Partitions stay with their previous owner while that keeps the group balanced,
//! so a member joining or leaving moves as few partitions as possible.

use std::collections::{BTreeMap, BTreeSet};

/// A topic-partition.
pub type Tp = (String, u32);

/// Computes the target owner of every partition a member subscribes to.
///
/// `members`: member id -> subscribed topics. `partitions`: topic -> partition count (topics
/// that do not exist are absent). `previous`: the previous target.
pub fn assign(
    members: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, u32>,
    previous: &BTreeMap<Tp, String>,
) -> BTreeMap<Tp, String> {
    let mut all: Vec<Tp> = Vec::new();
    for (topic, count) in partitions {
        if members.values().any(|t| t.contains(topic)) {
            all.extend((0..*count).map(|p| (topic.clone(), p)));
        }
    }
    let eligible: Vec<&String> = members
        .iter()
        .filter(|(_, topics)| topics.iter().any(|t| partitions.contains_key(t)))
        .map(|(id, _)| id)
        .collect();
    let mut target: BTreeMap<Tp, String> = BTreeMap::new();
    if eligible.is_empty() {
        return target;
    }
    let floor = all.len() / eligible.len();
    let mut extra = all.len() % eligible.len();
    let mut counts: BTreeMap<&String, usize> = eligible.iter().map(|m| (*m, 0)).collect();

    // 1. Sticky: each member keeps up to its quota of what it had, members that had the most
    //    first (they are the ones entitled to the `extra` slots).
    let mut kept: BTreeMap<&String, Vec<&Tp>> = BTreeMap::new();
    for tp in &all {
        if let Some(owner) = previous.get(tp)
            && let Some((m, _)) = counts.get_key_value(owner)
            && members[*m].contains(&tp.0)
        {
            kept.entry(*m).or_default().push(tp);
        }
    }
    let mut order: Vec<(&String, Vec<&Tp>)> = kept.into_iter().collect();
    order.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    for (m, tps) in order {
        let mut quota = floor;
        if tps.len() > floor && extra > 0 {
            quota += 1;
            extra -= 1;
        }
        for tp in tps.into_iter().take(quota) {
            target.insert(tp.clone(), m.clone());
            if let Some(c) = counts.get_mut(m) {
                *c += 1;
            }
        }
    }
    // 2. The rest go to the least loaded subscriber.
    for tp in &all {
        if target.contains_key(tp) {
            continue;
        }
        let best = counts
            .iter()
            .filter(|(m, _)| members[**m].contains(&tp.0))
            .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
            .map(|(m, _)| *m);
        if let Some(m) = best {
            target.insert(tp.clone(), m.clone());
            if let Some(c) = counts.get_mut(m) {
                *c += 1;
            }
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subs(ids: &[&str], topic: &str) -> BTreeMap<String, BTreeSet<String>> {
        ids.iter()
            .map(|m| ((*m).to_owned(), BTreeSet::from([topic.to_owned()])))
            .collect()
    }

    fn per_member(t: &BTreeMap<Tp, String>) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for m in t.values() {
            *c.entry(m.clone()).or_default() += 1;
        }
        c
    }

    #[test]
    fn three_members_six_partitions_then_a_fourth_moves_one() {
        let parts = BTreeMap::from([("logs".to_owned(), 6)]);
        let t3 = assign(&subs(&["a", "b", "c"], "logs"), &parts, &BTreeMap::new());
        assert_eq!(t3.len(), 6);
        assert!(per_member(&t3).values().all(|n| *n == 2), "{t3:?}");
        let t4 = assign(&subs(&["a", "b", "c", "d"], "logs"), &parts, &t3);
        let counts = per_member(&t4);
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|n| (1..=2).contains(n)), "{t4:?}");
        let moved = t4.iter().filter(|(tp, m)| t3[*tp] != **m).count();
        assert_eq!(moved, 1, "only one partition moves: {t3:?} -> {t4:?}");
    }

    #[test]
    fn unsubscribed_and_missing_topics_get_nothing() {
        let mut m = subs(&["a"], "logs");
        m.insert("b".into(), BTreeSet::from(["other".to_owned()]));
        let parts = BTreeMap::from([("logs".to_owned(), 2)]);
        let t = assign(&m, &parts, &BTreeMap::new());
        assert!(t.values().all(|o| o == "a"));
        assert_eq!(t.len(), 2);
    }

    proptest! {
        #[test]
        fn balanced_and_complete(n_members in 1usize..8, n_parts in 0u32..40, churn in 0usize..8) {
            let ids: Vec<String> = (0..n_members).map(|i| format!("m{i}")).collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let parts = BTreeMap::from([("logs".to_owned(), n_parts)]);
            let first = assign(&subs(&refs, "logs"), &parts, &BTreeMap::new());
            // Churn: drop some members and add others, starting from the previous target.
            let kept: Vec<&str> = refs.iter().copied().skip(churn.min(n_members - 1)).collect();
            let mut next_ids: Vec<String> = kept.iter().map(|s| (*s).to_owned()).collect();
            next_ids.extend((0..churn).map(|i| format!("n{i}")));
            let next_refs: Vec<&str> = next_ids.iter().map(String::as_str).collect();
            let second = assign(&subs(&next_refs, "logs"), &parts, &first);
            for (t, members) in [(&first, &refs), (&second, &next_refs)] {
                prop_assert_eq!(t.len(), n_parts as usize);
                // Every owner is a current member (never one that left).
                for (tp, owner) in t.iter() {
                    prop_assert!(members.contains(&owner.as_str()), "{:?} owned by {} who is gone", tp, owner);
                }
                let c = per_member(t);
                let loads: Vec<usize> = members.iter().map(|m| c.get(*m).copied().unwrap_or(0)).collect();
                let max = loads.iter().max().copied().unwrap_or(0);
                let min = loads.iter().min().copied().unwrap_or(0);
                prop_assert!(max - min <= 1, "unbalanced {:?}", c);
            }
            // Sticky: a partition whose owner stayed moves only if that owner was above quota.
            let floor = n_parts as usize / next_refs.len();
            for (tp, owner) in &first {
                if kept.contains(&owner.as_str()) && second[tp] != *owner {
                    let had = first.values().filter(|o| *o == owner).count();
                    prop_assert!(had > floor, "{:?} moved from {} which had {} <= {}", tp, owner, had, floor);
                }
            }
        }
    }
}
