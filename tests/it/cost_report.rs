//! Cost report: DynamoDB requests and capacity units per Zaqar operation, measured with
//! ReturnConsumedCapacity against DynamoDB Local. Run with `bench/cost` (prints a Markdown table).

use harness::{app, project, usage};
use serde_json::json;
use zaqar::store::claims::ClaimParams;
use zaqar::store::messages::{ListOptions, NewMessage};
use zaqar::store::UsageSnapshot;
use zaqar::types::{ClientId, ProjectId, QueueName};
use zaqar::App;

fn row(name: &str, per: f64, d: UsageSnapshot) {
    println!("| {name} | {:.2} | {:.2} | {:.2} |", d.requests as f64 / per, d.read_units / per, d.write_units / per);
}

async fn measure<F, Fut, T>(app: &App, f: F) -> (T, UsageSnapshot)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let before = usage(app);
    let out = f().await;
    (out, usage(app) - before)
}

fn batch(n: usize) -> Vec<NewMessage> {
    (0..n)
        .map(|i| NewMessage {
            body: json!({"event": "bench", "i": i, "pad": "x".repeat(200)}),
            ttl_s: 3600,
            delay_s: None,
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let app = app().await;
    let store = &app.store;
    let p = ProjectId::parse(&project()).unwrap();
    let q = QueueName::parse("cost").unwrap();
    let client = ClientId::parse(harness::CLIENT).unwrap();
    store.create_queue(&p, &q, &Default::default()).await.unwrap();
    let rounds = 20;
    let params = ClaimParams { ttl_s: 300, grace_s: 60 };

    println!("| operation (per call unless noted) | requests | read units | write units |");
    println!("|---|---|---|---|");
    let (_, d) = measure(&app, || async {
        for _ in 0..rounds {
            store.post_messages(&p, &q, Some(&client), &batch(1), false).await.unwrap();
        }
    })
    .await;
    row("post 1 message", rounds as f64, d);
    let (_, d) = measure(&app, || async {
        for _ in 0..rounds {
            store.post_messages(&p, &q, Some(&client), &batch(10), false).await.unwrap();
        }
    })
    .await;
    row("post 10 messages", rounds as f64, d);
    let opts =
        ListOptions { marker: None, limit: 10, echo: true, include_claimed: false, include_delayed: false, client };
    let (_, d) = measure(&app, || async {
        for _ in 0..rounds {
            store.list_messages(&p, &q, &opts).await.unwrap();
        }
    })
    .await;
    row("list 10 messages", rounds as f64, d);

    let mut claims = Vec::new();
    let (_, d) = measure(&app, || async {
        for _ in 0..rounds {
            claims.push(store.create_claim(&p, &q, 10, params, None).await.unwrap().unwrap());
        }
    })
    .await;
    row("claim 10 messages", rounds as f64, d);
    let (_, d) = measure(&app, || async {
        for (cid, msgs) in &claims {
            store.delete_message(&p, &q, &msgs[0].id, Some(cid)).await.unwrap();
        }
    })
    .await;
    row("delete 1 message with its claim", rounds as f64, d);
    let (_, d) = measure(&app, || async {
        for (_, msgs) in &claims {
            let ids: Vec<String> = msgs[1..].iter().map(|m| m.id.clone()).collect();
            store.delete_messages(&p, &q, &ids).await.unwrap();
        }
    })
    .await;
    row("delete 9 messages by ids", rounds as f64, d);

    // Write units per message through post(10) + claim(10) + delete(10 with claim).
    let q2 = QueueName::parse("cost-lifecycle").unwrap();
    store.create_queue(&p, &q2, &Default::default()).await.unwrap();
    let (_, d) = measure(&app, || async {
        for _ in 0..rounds {
            store.post_messages(&p, &q2, Some(&client), &batch(10), false).await.unwrap();
            let (cid, msgs) = store.create_claim(&p, &q2, 10, params, None).await.unwrap().unwrap();
            for m in &msgs {
                store.delete_message(&p, &q2, &m.id, Some(&cid)).await.unwrap();
            }
        }
    })
    .await;
    row("lifecycle per message: post(10) + claim(10) + delete each", (rounds * 10) as f64, d);

    println!();
    println!("Claim cost with N messages already claimed at the head of the queue:");
    println!();
    println!("| already claimed | requests per claim(10) | read units per claim(10) | write units per claim(10) |");
    println!("|---|---|---|---|");
    for n in [0usize, 100, 1000] {
        let qn = QueueName::parse(&format!("cost-floor-{n}")).unwrap();
        store.create_queue(&p, &qn, &Default::default()).await.unwrap();
        for _ in 0..(n + 200) / 20 {
            store.post_messages(&p, &qn, Some(&client), &batch(20), false).await.unwrap();
        }
        for _ in 0..n / 20 {
            store.create_claim(&p, &qn, 20, params, None).await.unwrap();
        }
        let k = 10;
        let (_, d) = measure(&app, || async {
            for _ in 0..k {
                store.create_claim(&p, &qn, 10, params, None).await.unwrap().unwrap();
            }
        })
        .await;
        println!(
            "| {n} | {:.1} | {:.1} | {:.1} |",
            d.requests as f64 / k as f64,
            d.read_units / k as f64,
            d.write_units / k as f64
        );
    }
}
