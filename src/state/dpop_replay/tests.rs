use super::*;

const NOW: i64 = 1_700_000_000;

fn check(
    replay: &DpopReplay,
    jkt: &str,
    jti: &str,
    until: i64,
    now: i64,
) -> Result<(), DpopFailure> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(replay.check(jkt, jti, until, now))
}

#[test]
fn a_proof_is_accepted_once_within_its_window() {
    let replay = DpopReplay::local(1000);
    assert_eq!(check(&replay, "key-a", "jti-1", NOW + 60, NOW), Ok(()));
    assert_eq!(
        check(&replay, "key-a", "jti-1", NOW + 60, NOW + 30),
        Err(DpopFailure::Replayed)
    );
    assert_eq!(
        check(&replay, "key-a", "jti-1", NOW + 60, NOW + 60),
        Err(DpopFailure::Replayed),
        "the last accepted second still counts"
    );
    // Another key may use the same jti; the same key another jti.
    assert_eq!(check(&replay, "key-b", "jti-1", NOW + 60, NOW), Ok(()));
    assert_eq!(check(&replay, "key-a", "jti-2", NOW + 60, NOW), Ok(()));
    // Past its window the entry no longer refuses (iat does).
    assert_eq!(
        check(&replay, "key-a", "jti-1", NOW + 121, NOW + 61),
        Ok(())
    );
    assert_eq!(replay.len(), 3);
}

#[test]
fn when_full_expired_entries_go_first_then_new_proofs_are_refused() {
    // One entry per shard.
    let replay = DpopReplay::local(SHARDS);
    let mut accepted = 0;
    let mut full = 0;
    for i in 0..10 * SHARDS {
        match check(&replay, "key", &format!("jti-{i}"), NOW + 60, NOW) {
            Ok(()) => accepted += 1,
            Err(DpopFailure::ReplayCacheFull) => full += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(accepted, replay.len());
    assert!(
        accepted <= SHARDS,
        "{accepted} entries for a bound of {SHARDS}"
    );
    assert!(full >= 9 * SHARDS, "{full}");
    // Nothing was forgotten: every accepted proof is still refused.
    let refused = (0..10 * SHARDS)
        .filter(|i| {
            check(&replay, "key", &format!("jti-{i}"), NOW + 60, NOW + 1)
                == Err(DpopFailure::Replayed)
        })
        .count();
    assert_eq!(refused, accepted);
    // Once their windows pass, the room is used again.
    let later = (0..10 * SHARDS)
        .filter(|i| check(&replay, "key", &format!("new-{i}"), NOW + 200, NOW + 100).is_ok())
        .count();
    assert_eq!(later, replay.len());
    assert!(later > 0);
}

#[test]
fn bytes_per_entry_as_documented() {
    // One shard's table, as the cache grows it, at each fill level
    // between two doublings.
    let mut shard = Shard::default();
    let (mut least, mut most) = (f64::MAX, 0f64);
    for i in 0u32..100_000 {
        let key = key_of("jkt", &i.to_string());
        shard
            .seen
            .insert_unique(hash_of(&key), Entry { key, until: 0 }, |e| hash_of(&e.key));
        if i >= 1000 {
            let per_entry = shard.seen.allocation_size() as f64 / shard.seen.len() as f64;
            least = least.min(per_entry);
            most = most.max(per_entry);
        }
    }
    assert_eq!(size_of::<Entry>(), 20);
    assert!((23.5..24.5).contains(&least), "{least}");
    assert!((47.0..48.5).contains(&most), "{most}");
}

#[test]
fn keys_never_hold_the_jti() {
    let key = key_of("jkt", "a-jti");
    assert_eq!(key.len(), 16);
    assert_ne!(key_of("jk", "ta-jti"), key_of("jkt", "a-jti"));
    assert!(!hex(&key).contains("a-jti"));
}
