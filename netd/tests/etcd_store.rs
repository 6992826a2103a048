//! The etcd store against a real etcd (Debian's etcd-server 3.4), started
//! per test on loopback by tests/common/etcd.rs: the embedded store's
//! behaviour, plus what only a shared, distributed store can get wrong.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use furrow_netd::store::embedded::EmbeddedStore;
use furrow_netd::store::etcd::EtcdStore;
use furrow_netd::store::{Compare, Op, Store, StoreError, Txn, Watch, WatchError, WatchEvent};

async fn connect(etcd: &EtcdCluster, prefix: &str) -> EtcdStore {
    EtcdStore::connect(&common::etcd::store_config(etcd, prefix))
        .await
        .expect("connecting to the test etcd")
}

fn put(k: &str, v: &str) -> Txn {
    Txn::new().then(Op::Put(k.into(), v.as_bytes().to_vec()))
}

async fn next(w: &mut Watch) -> Result<WatchEvent, WatchError> {
    tokio::time::timeout(Duration::from_secs(15), w.next())
        .await
        .expect("no watch event within 15 s")
}

fn claim(k: &str, owner: &str) -> Txn {
    Txn::new()
        .when(Compare::Absent(k.into()))
        .then(Op::Put(k.into(), owner.as_bytes().to_vec()))
}

#[tokio::test]
async fn put_get_list_delete_with_revisions() {
    let etcd = EtcdCluster::start(1);
    let s = connect(&etcd, "/t").await;
    assert_eq!(s.backend(), "etcd");
    assert_eq!(s.location(), format!("{} (prefix /t)", etcd.endpoint(0)));
    let base = s.revision().await.unwrap();
    let o = s.txn(put("/a/1", "x")).await.unwrap();
    assert!(o.succeeded);
    assert_eq!(o.revision, base + 1);
    s.txn(put("/a/2", "y")).await.unwrap();
    s.txn(put("/b/1", "z")).await.unwrap();
    let o = s.txn(put("/a/1", "x2")).await.unwrap();
    assert_eq!(o.revision, base + 4);
    let kv = s.get("/a/1").await.unwrap().unwrap();
    assert_eq!(kv.value, b"x2");
    assert_eq!((kv.create_revision, kv.mod_revision), (base + 1, base + 4));
    let keys: Vec<String> = s
        .list("/a/")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(keys, ["/a/1", "/a/2"]);
    let all: Vec<String> = s
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(all, ["/a/1", "/a/2", "/b/1"]);
    s.txn(Txn::new().then(Op::Delete("/a/1".into())))
        .await
        .unwrap();
    assert!(s.get("/a/1").await.unwrap().is_none());
    assert_eq!(s.revision().await.unwrap(), base + 5);
    // The prefix really is in etcd's keys: another client without it
    // sees the same data one level down.
    let raw = connect(&etcd, "").await;
    assert_eq!(raw.get("/t/a/2").await.unwrap().unwrap().value, b"y");
    assert!(matches!(
        s.get("no-slash").await,
        Err(StoreError::InvalidKey(_))
    ));
}

#[tokio::test]
async fn compares_guard_the_whole_transaction() {
    let etcd = EtcdCluster::start(1);
    let s = connect(&etcd, "/t").await;
    let claim = |k: &str| {
        Txn::new()
            .when(Compare::Absent(k.into()))
            .then(Op::Put(k.into(), b"mine".to_vec()))
            .then(Op::Put("/side".into(), b"effect".to_vec()))
    };
    assert!(s.txn(claim("/ip/1")).await.unwrap().succeeded);
    s.txn(Txn::new().then(Op::Delete("/side".into())))
        .await
        .unwrap();
    let before = s.revision().await.unwrap();
    let o = s.txn(claim("/ip/1")).await.unwrap();
    assert!(!o.succeeded);
    assert_eq!(
        o.revision, before,
        "a failed txn reports the current revision"
    );
    assert_eq!(
        s.revision().await.unwrap(),
        before,
        "a failed txn must not bump the revision"
    );
    assert!(
        s.get("/side").await.unwrap().is_none(),
        "no operation of a failed txn applies"
    );
    let rev = s.get("/ip/1").await.unwrap().unwrap().mod_revision;
    let stale = Txn::new()
        .when(Compare::ModRevision("/ip/1".into(), rev - 1))
        .then(Op::Delete("/ip/1".into()));
    assert!(!s.txn(stale).await.unwrap().succeeded);
    let fresh = Txn::new()
        .when(Compare::ModRevision("/ip/1".into(), rev))
        .then(Op::Delete("/ip/1".into()));
    assert!(s.txn(fresh).await.unwrap().succeeded);
    assert!(
        !s.txn(Txn::new().when(Compare::Present("/ip/1".into())))
            .await
            .unwrap()
            .succeeded
    );
    // etcd compares a missing key as mod_revision 0; the trait says
    // "exists and was written at", so this must fail.
    let zero = Txn::new()
        .when(Compare::ModRevision("/ip/1".into(), 0))
        .then(Op::Put("/ip/1".into(), b"x".to_vec()));
    assert!(!s.txn(zero).await.unwrap().succeeded);
    // Several compares: all must hold.
    s.txn(put("/p", "1")).await.unwrap();
    let mixed = Txn::new()
        .when(Compare::Present("/p".into()))
        .when(Compare::Absent("/p".into()))
        .then(Op::Put("/q".into(), b"1".to_vec()));
    assert!(!s.txn(mixed).await.unwrap().succeeded);
    assert!(s.get("/q").await.unwrap().is_none());
    // One key twice in a txn (etcd would refuse it): the last op wins,
    // as in the embedded store.
    let twice = Txn::new()
        .then(Op::Put("/d".into(), b"1".to_vec()))
        .then(Op::Put("/d".into(), b"2".to_vec()));
    assert!(s.txn(twice).await.unwrap().succeeded);
    assert_eq!(s.get("/d").await.unwrap().unwrap().value, b"2");
}

#[tokio::test]
async fn watch_sees_only_its_prefix() {
    let etcd = EtcdCluster::start(1);
    let s = connect(&etcd, "/t").await;
    let mut w = s.watch("/a/");
    s.txn(put("/b/1", "1")).await.unwrap();
    s.txn(put("/a/1", "2")).await.unwrap();
    s.txn(Txn::new().then(Op::Delete("/a/1".into())))
        .await
        .unwrap();
    match next(&mut w).await.unwrap() {
        WatchEvent::Put(kv) => {
            assert_eq!(kv.key, "/a/1");
            assert_eq!(kv.value, b"2");
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(matches!(
        next(&mut w).await.unwrap(),
        WatchEvent::Delete { ref key, .. } if key == "/a/1"
    ));
    // The store going away ends its watches (as the embedded one does).
    drop(s);
    assert_eq!(next(&mut w).await.unwrap_err(), WatchError::Closed);
}

#[tokio::test]
async fn list_pages_through_a_large_prefix() {
    let etcd = EtcdCluster::start(1);
    let s = connect(&etcd, "/t").await;
    // More than two pages; etcd takes at most 128 operations per txn.
    let n = 1234;
    let keys: Vec<String> = (0..n).map(|i| format!("/big/{i:05}")).collect();
    for chunk in keys.chunks(100) {
        let mut t = Txn::new();
        for k in chunk {
            t = t.then(Op::Put(k.clone(), vec![b'v'; 300]));
        }
        assert!(s.txn(t).await.unwrap().succeeded);
    }
    s.txn(put("/bigger", "not under /big/")).await.unwrap();
    let got: Vec<String> = s
        .list("/big/")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(got, keys);
}

#[tokio::test]
async fn prefixes_keep_clusters_apart() {
    let etcd = EtcdCluster::start(1);
    let a = connect(&etcd, "/c/a").await;
    let ab = connect(&etcd, "/c/ab").await;
    let mut wa = a.watch("/");
    assert!(ab.txn(claim("/furrow/x", "ab")).await.unwrap().succeeded);
    assert!(
        a.txn(claim("/furrow/x", "a")).await.unwrap().succeeded,
        "the same store key in another prefix is another key"
    );
    assert_eq!(a.get("/furrow/x").await.unwrap().unwrap().value, b"a");
    assert_eq!(ab.get("/furrow/x").await.unwrap().unwrap().value, b"ab");
    assert_eq!(a.list("/").await.unwrap().len(), 1);
    // a's watch got a's write only.
    match next(&mut wa).await.unwrap() {
        WatchEvent::Put(kv) => assert_eq!(kv.value, b"a"),
        e => panic!("unexpected {e:?}"),
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), wa.next())
            .await
            .is_err(),
        "no event from the other prefix"
    );
}

#[tokio::test]
async fn two_clients_see_each_others_writes_via_watch() {
    let etcd = EtcdCluster::start(1);
    let n1 = connect(&etcd, "/t").await;
    let n2 = connect(&etcd, "/t").await;
    let mut w1 = n1.watch("/furrow/resources/");
    let mut w2 = n2.watch("/furrow/resources/");
    n1.txn(put("/furrow/resources/VlanConfig/a", "from n1"))
        .await
        .unwrap();
    n2.txn(put("/furrow/resources/VlanConfig/b", "from n2"))
        .await
        .unwrap();
    for w in [&mut w1, &mut w2] {
        let mut seen = Vec::new();
        for _ in 0..2 {
            match next(w).await.unwrap() {
                WatchEvent::Put(kv) => seen.push(String::from_utf8(kv.value).unwrap()),
                e => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(seen, ["from n1", "from n2"], "both, in commit order");
    }
    n2.txn(Txn::new().then(Op::Delete("/furrow/resources/VlanConfig/a".into())))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut w1).await.unwrap(),
        WatchEvent::Delete { ref key, .. } if key == "/furrow/resources/VlanConfig/a"
    ));
}

/// The IPAM and subnet-lease guarantee: many nodes racing for the same
/// keys, each key ends up with exactly one owner, and the owner stored is
/// the one that was told it won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_have_exactly_one_winner() {
    let etcd = EtcdCluster::start(1);
    // Two "nodes" (separate connections), four tasks each.
    let nodes = [
        Arc::new(connect(&etcd, "/t").await),
        Arc::new(connect(&etcd, "/t").await),
    ];
    // 100 claims on one key from 8 tasks.
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let s = nodes[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for i in (t..100).step_by(8) {
                let me = format!("claim-{i}");
                if s.txn(claim("/furrow/ipam/net/10.0.0.1", &me))
                    .await
                    .unwrap()
                    .succeeded
                {
                    won.push(me);
                }
            }
            won
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = nodes[0]
        .get("/furrow/ipam/net/10.0.0.1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.value, winners[0].as_bytes());

    // And 8 tasks racing through 100 keys each, in different orders.
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let s = nodes[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for j in 0..100usize {
                let i = (j * 7 + t * 13) % 100;
                let k = format!("/furrow/ipam/race/10.1.0.{i}");
                if s.txn(claim(&k, &format!("task-{t}")))
                    .await
                    .unwrap()
                    .succeeded
                {
                    won.push(k);
                }
            }
            (t, won)
        }));
    }
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        let (t, won) = task.await.unwrap();
        for k in won {
            assert!(owner.insert(k.clone(), t).is_none(), "{k} won twice");
        }
    }
    assert_eq!(owner.len(), 100);
    for kv in nodes[1].list("/furrow/ipam/race/").await.unwrap() {
        assert_eq!(kv.value, format!("task-{}", owner[&kv.key]).as_bytes());
    }
}

#[tokio::test]
async fn watch_resumes_after_etcd_restarts() {
    let mut etcd = EtcdCluster::start(1);
    let s = connect(&etcd, "/t").await;
    let mut w = s.watch("/w/");
    s.txn(put("/w/before", "1")).await.unwrap();
    assert!(matches!(next(&mut w).await.unwrap(), WatchEvent::Put(_)));
    etcd.kill(0);
    etcd.restart(0);
    etcd.wait_healthy(Duration::from_secs(20));
    // Written by another client as soon as etcd is back, likely before
    // s's watch has reconnected: it must still arrive (resume from the
    // last seen revision, not from "now").
    let other = connect(&etcd, "/t").await;
    other.txn(put("/w/while-reconnecting", "2")).await.unwrap();
    other.txn(put("/w/after", "3")).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        match next(&mut w).await.unwrap() {
            WatchEvent::Put(kv) => got.push(kv.key),
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(got, ["/w/while-reconnecting", "/w/after"]);
}

#[tokio::test]
async fn compacted_history_makes_watchers_relist() {
    let etcd = EtcdCluster::start(1);
    let s = connect(&etcd, "/t").await;
    let first = s.txn(put("/k/1", "1")).await.unwrap().revision;
    for i in 2..10 {
        s.txn(put(&format!("/k/{i}"), "x")).await.unwrap();
    }
    let now = s.revision().await.unwrap();
    // Compact with a plain etcd client, as an operator or etcd's
    // auto-compaction would.
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    raw.compact(now as i64, None).await.unwrap();
    // A store whose event stream must start where history is gone.
    let late = EtcdStore::connect_from(&common::etcd::store_config(&etcd, "/t"), Some(first))
        .await
        .unwrap();
    let mut w = late.watch("/k/");
    match next(&mut w).await {
        Err(WatchError::Lagged(n)) => assert!(n >= 1),
        other => panic!("expected Lagged, got {other:?}"),
    }
    // After the re-list the stream carries on with new events (after
    // what history is left, which it may replay).
    assert_eq!(late.list("/k/").await.unwrap().len(), 9);
    s.txn(put("/k/new", "n")).await.unwrap();
    loop {
        match next(&mut w).await.unwrap() {
            WatchEvent::Put(kv) if kv.key == "/k/new" => break,
            WatchEvent::Put(kv) => assert!(kv.mod_revision >= now, "{kv:?} was compacted"),
            e => panic!("unexpected {e:?}"),
        }
    }
}

#[tokio::test]
async fn three_members_keep_serving_with_one_killed() {
    let mut etcd = EtcdCluster::start(3);
    let s = connect(&etcd, "/t").await;
    let mut w = s.watch("/m/");
    assert!(s.txn(claim("/m/0", "x")).await.unwrap().succeeded);
    assert!(matches!(next(&mut w).await.unwrap(), WatchEvent::Put(_)));
    // The worst member to lose: the leader.
    let leader = etcd.leader().expect("a leader");
    etcd.kill(leader);
    // The survivors elect a new leader within about a second (etcd's
    // default 1 s election timeout); calls may fail meanwhile, but then
    // every call must succeed although the client still has the dead
    // member among its endpoints.
    let t0 = Instant::now();
    loop {
        match s.txn(claim("/m/probe", "x")).await {
            Ok(_) => break,
            Err(StoreError::Unavailable(m)) => {
                eprintln!("{} ms: {m}", t0.elapsed().as_millis());
                assert!(t0.elapsed() < Duration::from_secs(20), "no recovery: {m}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!(
        "leader {leader} killed: writes back after {} ms",
        t0.elapsed().as_millis()
    );
    for i in 1..=50 {
        let k = format!("/m/{i}");
        let o = s
            .txn(claim(&k, "x"))
            .await
            .unwrap_or_else(|e| panic!("txn {i}: {e}"));
        assert!(o.succeeded);
        s.get(&k).await.unwrap_or_else(|e| panic!("get {i}: {e}"));
    }
    assert_eq!(s.list("/m/").await.unwrap().len(), 52);
    // The watch moved to a live member and missed nothing.
    let mut keys = Vec::new();
    while keys.len() < 51 {
        if let WatchEvent::Put(kv) = next(&mut w).await.unwrap() {
            keys.push(kv.key);
        }
    }
    assert_eq!(keys[0], "/m/probe");
    assert_eq!(keys[50], "/m/50");
}

#[tokio::test]
async fn all_members_down_is_unavailable_fast_then_the_same_client_recovers() {
    let mut etcd = EtcdCluster::start(3);
    let cfg = common::etcd::store_config(&etcd, "/t");
    let timeout = cfg.timeout;
    let s = EtcdStore::connect(&cfg).await.unwrap();
    let mut w = s.watch("/r/");
    assert!(s.txn(claim("/r/0", "x")).await.unwrap().succeeded);
    assert!(matches!(next(&mut w).await.unwrap(), WatchEvent::Put(_)));
    etcd.kill_all();
    let slack = Duration::from_millis(1500);
    let t0 = Instant::now();
    let e = s.txn(claim("/r/1", "x")).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    assert!(
        t0.elapsed() < timeout + slack,
        "txn took {:?}",
        t0.elapsed()
    );
    let t0 = Instant::now();
    assert!(matches!(
        s.get("/r/0").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        s.list("/r/").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        s.revision().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        t0.elapsed() < 3 * (timeout + slack),
        "reads took {:?}",
        t0.elapsed()
    );
    // Connecting afresh to a dead cluster is an error too, not a hang.
    let t0 = Instant::now();
    assert!(EtcdStore::connect(&cfg).await.is_err());
    assert!(t0.elapsed() < timeout + slack);

    etcd.restart_all();
    etcd.wait_healthy(Duration::from_secs(30));
    // The same client, no reconnect by hand.
    let t0 = Instant::now();
    let o = loop {
        match s.txn(claim("/r/1", "x")).await {
            Ok(o) => break o,
            Err(StoreError::Unavailable(m)) => {
                assert!(t0.elapsed() < Duration::from_secs(20), "still down: {m}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(o.succeeded);
    eprintln!(
        "first write after restart took {} ms",
        t0.elapsed().as_millis()
    );
    for i in 2..20 {
        assert!(
            s.txn(claim(&format!("/r/{i}"), "x"))
                .await
                .unwrap()
                .succeeded
        );
    }
    assert_eq!(s.list("/r/").await.unwrap().len(), 20);
    // The watch came back as well.
    match next(&mut w).await.unwrap() {
        WatchEvent::Put(kv) => assert_eq!(kv.key, "/r/1"),
        e => panic!("unexpected {e:?}"),
    }
}

/// p50/p99 of create-if-absent txns, etcd (1 member, loopback) vs the
/// embedded store. A measurement, not a check: run with
/// `cargo nextest run -p furrow-netd --release --run-ignored only txn_latency`.
#[tokio::test]
#[ignore]
async fn txn_latency() {
    const N: usize = 500;
    async fn measure(s: &dyn Store) -> (Duration, Duration, Duration) {
        // Warm the connection / file first.
        s.txn(claim("/lat/warm", "x")).await.unwrap();
        let mut d = Vec::with_capacity(N);
        for i in 0..N {
            let k = format!("/furrow/ipam/lat/10.2.{}.{}", i / 256, i % 256);
            let t = Instant::now();
            assert!(s.txn(claim(&k, "node")).await.unwrap().succeeded);
            d.push(t.elapsed());
        }
        d.sort();
        let mean = d.iter().sum::<Duration>() / N as u32;
        (d[N / 2], d[N * 99 / 100], mean)
    }
    let etcd = EtcdCluster::start(1);
    let e = connect(&etcd, "/t").await;
    let (p50, p99, mean) = measure(&e).await;
    println!("etcd 3.4 (1 member, loopback): p50 {p50:?} p99 {p99:?} mean {mean:?}");
    drop(e);
    let etcd3 = EtcdCluster::start(3);
    let e3 = connect(&etcd3, "/t").await;
    let (p50, p99, mean) = measure(&e3).await;
    println!("etcd 3.4 (3 members, loopback): p50 {p50:?} p99 {p99:?} mean {mean:?}");
    let dir = etcd.dir().join("embedded");
    let emb = EmbeddedStore::open(&dir.join("store.redb")).unwrap();
    let (p50, p99, mean) = measure(&emb).await;
    println!("embedded (redb):               p50 {p50:?} p99 {p99:?} mean {mean:?}");
}

#[tokio::test]
async fn tls_with_client_certificates() {
    let etcd = EtcdCluster::start_tls(1);
    let cfg = common::etcd::store_config(&etcd, "/t");
    assert!(cfg.endpoints[0].starts_with("https://"));
    let s = EtcdStore::connect(&cfg).await.unwrap();
    assert!(s.txn(claim("/tls/1", "x")).await.unwrap().succeeded);
    assert_eq!(s.get("/tls/1").await.unwrap().unwrap().value, b"x");
    let mut w = s.watch("/tls/");
    s.txn(put("/tls/2", "y")).await.unwrap();
    assert!(matches!(next(&mut w).await.unwrap(), WatchEvent::Put(_)));
    // Without a client certificate etcd turns us away: an error, at once.
    let mut anon = cfg.clone();
    anon.tls.cert = None;
    anon.tls.key = None;
    let t0 = Instant::now();
    let e = EtcdStore::connect(&anon).await.err().expect("refused");
    eprintln!("no client certificate: {e} after {:?}", t0.elapsed());
    assert!(t0.elapsed() < cfg.timeout + Duration::from_secs(1));
    // A missing file is named.
    let mut missing = cfg.clone();
    missing.tls.ca = Some(etcd.dir().join("nope.pem"));
    let e = EtcdStore::connect(&missing).await.err().expect("an error");
    assert!(e.to_string().contains("nope.pem"), "{e}");
}
