//! Distribution per routing policy, through the real proxy binary to real backends.

use std::time::Duration;

use crate::support::backend::{backends_yaml, Backend, Behaviour};
use crate::support::load::load;
use crate::support::{client, Gantry};

fn config(policy: &str, backends: &str) -> String {
    format!(
        "pools:\n  p:\n    policy: {policy}\n    health: {{interval: 200ms}}\n    backends:\n{backends}routes:\n  - {{prefix: /, pool: p}}\n"
    )
}

async fn sequence(g: &Gantry, n: usize) -> String {
    let c = client();
    let mut s = String::new();
    for _ in 0..n {
        let r = c.get(format!("{}/x", g.url)).send().await.unwrap();
        s.push_str(r.headers()["x-backend"].to_str().unwrap());
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_exactly() {
    let (a, b, c) = (
        Backend::start("a", Behaviour::default()).await,
        Backend::start("b", Behaviour::default()).await,
        Backend::start("c", Behaviour::default()).await,
    );
    let g = Gantry::proxy(&config(
        "round_robin",
        &backends_yaml(&[(&a, 1), (&b, 1), (&c, 1)]),
    ))
    .start()
    .await;
    let s = sequence(&g, 30).await;
    assert_eq!(s, s[..3].repeat(10), "not an exact rotation: {s}");
    assert_eq!((a.hits(), b.hits(), c.hits()), (10, 10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_5_1_1_is_smooth_and_exact() {
    let (a, b, c) = (
        Backend::start("a", Behaviour::default()).await,
        Backend::start("b", Behaviour::default()).await,
        Backend::start("c", Behaviour::default()).await,
    );
    let g = Gantry::proxy(&config(
        "weighted",
        &backends_yaml(&[(&a, 5), (&b, 1), (&c, 1)]),
    ))
    .start()
    .await;
    // Interleaved: nginx's smooth sequence, never five a's in a row.
    let s = sequence(&g, 14).await;
    assert_eq!(s, "aabacaaaabacaa");
    let (results, counts) = load(&format!("{}/x", g.url), 7000, 8).await;
    assert!(results.iter().all(|r| r == &Ok(200)));
    for (name, share) in [("a", 5.0 / 7.0), ("b", 1.0 / 7.0), ("c", 1.0 / 7.0)] {
        let got = counts[name] as f64 / 7000.0;
        assert!((got - share).abs() < 0.01, "{name}: {got:.4} vs {share:.4}");
    }
}

/// Sends 40 requests, 10 ms apart, while `slow` takes 300 ms per request.
async fn stagger_with_slow_backend(policy: &str) -> (u64, u64) {
    let slow = Backend::start(
        "slow",
        Behaviour {
            delay: Duration::from_millis(300),
            status: None,
            retry_after: None,
        },
    )
    .await;
    let fast = Backend::start("fast", Behaviour::default()).await;
    let g = Gantry::proxy(&config(policy, &backends_yaml(&[(&slow, 1), (&fast, 1)])))
        .start()
        .await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (c, url) = (c.clone(), format!("{}/x", g.url));
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.unwrap().status().as_u16()
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    (slow.hits(), fast.hits())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_new_work_to_the_idle_backend() {
    let (slow, fast) = stagger_with_slow_backend("least_connections").await;
    // Round robin would give the slow backend 20 of 40.
    assert!(slow <= 8, "slow backend got {slow}, fast {fast}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_avoids_the_slow_backend() {
    let (slow, fast) = stagger_with_slow_backend("p2c").await;
    assert!(slow <= 8, "slow backend got {slow}, fast {fast}");
}
