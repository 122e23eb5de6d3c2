//! `bench/cost`: what every API operation costs in DynamoDB terms, through the real handlers.
//!
//! Per operation (mean over `samples` calls on a warm container): DynamoDB requests, sequential round
//! trips (the longest chain of requests each sent after the previous one answered: what a caller waits
//! for one after another), read and write units, and the process's own CPU per call. Everything comes from
//! the metering interceptor ([`crate::meter`]) on the wire, so it includes the handlers' own reads (queue
//! metadata) besides the store's. Set-up between samples is not metered.
//!
//! CPU is `CLOCK_PROCESS_CPUTIME_ID` around the call minus the interceptor's own time: the handler, the
//! SDK and its HTTP client, in process (no HTTP server, no Lambda runtime; DynamoDB Local is another
//! process and not counted). `bench/cpu-vs-zaqar` measures the whole server against Python Zaqar.

use crate::meter::{cpu_ns, sequential_round_trips, Call, Recorder};
use crate::report::{command, machine, today};
use crate::setup::{self, hrefs, Caller};
use http::Method;
use serde_json::json;
use std::future::Future;
use zaqar::store::messages::NewMessage;
use zaqar::types::{ClientId, ProjectId, QueueName};

pub struct Options {
    pub samples: usize,
    pub record: Option<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options { samples: 20, record: None };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--samples" => o.samples = val()?.parse().map_err(|_| "bad --samples")?,
                "--quick" => o.samples = 5,
                "--record" => o.record = Some(val()?),
                other => return Err(format!("unknown option {other}")),
            }
        }
        if o.samples == 0 {
            return Err("--samples must be positive".into());
        }
        Ok(o)
    }
}

/// Sums over the samples of one operation.
#[derive(Default)]
struct Acc {
    n: usize,
    requests: usize,
    round_trips: usize,
    read: f64,
    write: f64,
    failed: usize,
    cpu_ns: u64,
}

impl Acc {
    fn add(&mut self, calls: &[Call], cpu_ns: u64) {
        self.n += 1;
        self.requests += calls.len();
        self.round_trips += sequential_round_trips(calls);
        self.read += calls.iter().map(|c| c.read_units).sum::<f64>();
        self.write += calls.iter().map(|c| c.write_units).sum::<f64>();
        self.failed += calls.iter().filter(|c| c.failed_condition).count();
        self.cpu_ns += cpu_ns;
    }

    /// A table row: sums divided by `per` (calls or messages); `round_trips` as the caller words it.
    fn row(&self, name: &str, per: f64, round_trips: String) -> String {
        format!(
            "| {name} | {:.2} | {round_trips} | {:.2} | {:.2} | {:.0} |",
            self.requests as f64 / per,
            self.read / per,
            self.write / per,
            self.cpu_ns as f64 / per / 1000.0
        )
    }
}

/// Runs `fut` with the recorder on; returns its output, the calls it made and its CPU (ns, metering excluded).
async fn metered<T>(rec: &Recorder, fut: impl Future<Output = T>) -> (T, Vec<Call>, u64) {
    rec.clear();
    rec.pause(false);
    let (cpu0, own0) = (cpu_ns(false), rec.own_cpu_ns());
    let out = fut.await;
    let cpu = cpu_ns(false).saturating_sub(cpu0).saturating_sub(rec.own_cpu_ns() - own0);
    rec.pause(true);
    (out, rec.take(), cpu)
}

struct Bench {
    rec: Recorder,
    caller: Caller,
    samples: usize,
    lines: Vec<String>,
}

impl Bench {
    /// Measures one API call `samples` times; `ok` are the statuses it may answer.
    async fn op<F, Fut>(&mut self, name: &str, ok: &[u16], mut call: F) -> Vec<zaqar::ApiResponse>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = zaqar::ApiResponse>,
    {
        let mut acc = Acc::default();
        let mut out = vec![];
        for i in 0..self.samples {
            let (resp, calls, cpu) = metered(&self.rec, call(i)).await;
            let status = resp.status.as_u16();
            assert!(ok.contains(&status), "{name}: status {status}: {}", String::from_utf8_lossy(&resp.body));
            acc.add(&calls, cpu);
            out.push(resp);
        }
        let rt = format!("{:.2}", acc.round_trips as f64 / acc.n.max(1) as f64);
        self.lines.push(acc.row(name, acc.n.max(1) as f64, rt));
        out
    }

    /// Posts `n` messages through the store (not metered).
    async fn fill(&self, queue: &str, n: usize) -> Vec<String> {
        let p = ProjectId::parse(&self.caller.project).expect("project");
        let q = QueueName::parse(queue).expect("queue");
        let client = ClientId::parse(&self.caller.client_id).expect("client id");
        let mut ids = vec![];
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let msgs: Vec<NewMessage> =
                chunk.iter().map(|i| NewMessage { body: setup::body(*i), ttl_s: 3600, delay_s: None }).collect();
            ids.extend(self.caller.app.store.post_messages(&p, &q, Some(&client), &msgs, false).await.expect("fill"));
        }
        ids
    }
}

/// A call that owns its path and body, for closures that build them per sample.
async fn call(c: &Caller, method: Method, path: String, body: Option<serde_json::Value>) -> zaqar::ApiResponse {
    c.send(method, &path, body.as_ref()).await
}

/// One lifecycle round per sample: `posts` posts of `per_post`, one claim of `claim`, a delete of each.
async fn lifecycle(b: &mut Bench, name: &str, queue: &str, posts: usize, per_post: usize, claim: usize) {
    let mut acc = Acc::default();
    let mut messages = 0;
    let c = b.caller.clone();
    for _ in 0..b.samples {
        let ((), calls, cpu) = metered(&b.rec, async {
            for _ in 0..posts {
                let doc = setup::post_doc(per_post, 3600);
                c.expect(Method::POST, &format!("/v2/queues/{queue}/messages"), Some(&doc), &[201]).await;
            }
            let body = json!({"ttl": 300, "grace": 60});
            let resp =
                c.expect(Method::POST, &format!("/v2/queues/{queue}/claims?limit={claim}"), Some(&body), &[201]).await;
            for h in hrefs(&resp) {
                c.expect(Method::DELETE, &h, None, &[204]).await;
            }
        })
        .await;
        acc.add(&calls, cpu);
        messages += posts * per_post;
    }
    // Per message: the sums over all rounds divided by the messages; round trips per round.
    let rt = format!("{:.1} per round", acc.round_trips as f64 / acc.n.max(1) as f64);
    b.lines.push(acc.row(name, messages as f64, rt));
}

/// Calls per row of the SDK floor: single calls are short, so more of them than `samples`.
const FLOOR_CALLS: usize = 300;

/// The floor under every operation: one DynamoDB call through the SDK client alone (no handler, no
/// encoding of ours), the same client and HTTP stack the handlers use.
async fn sdk_floor(b: &mut Bench) {
    use aws_sdk_dynamodb::types::AttributeValue::S;
    use aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total;
    b.lines.push(String::new());
    b.lines.push(format!(
        "One DynamoDB call through the SDK client alone (the floor under every row above; mean of {FLOOR_CALLS} calls):"
    ));
    b.lines.push(String::new());
    b.lines.push("| call | requests | sequential round trips | read units | write units | our CPU µs |".into());
    b.lines.push("|---|---|---|---|---|---|".into());
    let client = setup::client(Some(b.rec.clone())).await;
    let key = |i: usize| [(zaqar::keys::PK, S("floor".into())), (zaqar::keys::SK, S(format!("{i:06}")))];
    let body = S("x".repeat(250));
    for (name, write) in [("PutItem (about 300 bytes)", true), ("GetItem (consistent, that item)", false)] {
        let mut acc = Acc::default();
        for i in 0..FLOOR_CALLS + 10 {
            let [(pk, p), (sk, s)] = key(i);
            let (out, calls, cpu): (bool, Vec<Call>, u64) = metered(&b.rec, async {
                if write {
                    let put = client.put_item().table_name(setup::TABLE).item(pk, p).item(sk, s);
                    put.item("body", body.clone()).return_consumed_capacity(Total).send().await.is_ok()
                } else {
                    let get = client.get_item().table_name(setup::TABLE).key(pk, p).key(sk, s);
                    get.consistent_read(true).return_consumed_capacity(Total).send().await.is_ok()
                }
            })
            .await;
            assert!(out, "{name}: DynamoDB Local must answer");
            if i >= 10 {
                acc.add(&calls, cpu); // the first ten warm the connection and the caches
            }
        }
        let rt = format!("{:.2}", acc.round_trips as f64 / acc.n.max(1) as f64);
        b.lines.push(acc.row(name, acc.n.max(1) as f64, rt));
    }
}

pub async fn run(o: Options) {
    let rec = Recorder::default();
    rec.pause(true);
    let app = setup::app(setup::client(Some(rec.clone())).await).await;
    let project = format!("cost-{:08x}", rand::random::<u32>());
    let caller = Caller::new(&app, &project, "3381af92-2b9e-11e3-b191-71861300734c");
    let mut b = Bench { rec, caller: caller.clone(), samples: o.samples, lines: vec![] };
    let k = o.samples;
    let c = &caller;
    c.expect(Method::PUT, "/v2/queues/cost", None, &[201]).await;
    let ids = b.fill("cost", 100).await;

    b.lines.push("| operation | requests | sequential round trips | read units | write units | our CPU µs |".into());
    b.lines.push("|---|---|---|---|---|---|".into());
    b.op("ping", &[200, 204], |_| c.send(Method::GET, "/v2/ping", None)).await;
    b.op("queue create", &[201], |i| call(c, Method::PUT, format!("/v2/queues/new-{i}"), None)).await;
    b.op("queue get (metadata)", &[200], |_| c.send(Method::GET, "/v2/queues/cost", None)).await;
    b.op("queue update (JSON patch)", &[200], |i| {
        let patch = json!([{"op": "add", "path": "/metadata/bench", "value": i}]);
        async move {
            c.send_typed(
                Method::PATCH,
                "/v2/queues/cost",
                "application/openstack-messaging-v2.0-json-patch",
                Some(&patch),
            )
            .await
        }
    })
    .await;
    b.op("queue list 10", &[200], |_| c.send(Method::GET, "/v2/queues?limit=10", None)).await;
    b.op("stats (100 messages)", &[200], |_| c.send(Method::GET, "/v2/queues/cost/stats", None)).await;
    let one = setup::post_doc(1, 3600);
    let ten = setup::post_doc(10, 3600);
    b.op("post 1", &[201], |_| c.send(Method::POST, "/v2/queues/cost-post/messages", Some(&one))).await;
    b.op("post 10", &[201], |_| c.send(Method::POST, "/v2/queues/cost-post/messages", Some(&ten))).await;
    b.op("list 10", &[200], |_| c.send(Method::GET, "/v2/queues/cost/messages?limit=10&echo=true", None)).await;
    b.op("get 1", &[200], |i| call(c, Method::GET, format!("/v2/queues/cost/messages/{}", ids[i % ids.len()]), None))
        .await;
    b.op("get 10 by ids", &[200], |i| {
        let some: Vec<&str> = (0..10).map(|j| ids[(i * 10 + j) % ids.len()].as_str()).collect();
        call(c, Method::GET, format!("/v2/queues/cost/messages?ids={}", some.join(",")), None)
    })
    .await;

    c.expect(Method::PUT, "/v2/queues/cost-claim", None, &[201]).await;
    b.fill("cost-claim", k * 10 + 10).await;
    let claim_body = json!({"ttl": 300, "grace": 60});
    let claims = b
        .op("claim 10", &[201], |_| c.send(Method::POST, "/v2/queues/cost-claim/claims?limit=10", Some(&claim_body)))
        .await;
    let claim_paths: Vec<String> =
        claims.iter().filter_map(|r| r.header_value("location").map(str::to_string)).collect();
    let claimed: Vec<Vec<String>> = claims.iter().map(hrefs).collect();
    b.op("claim get", &[200], |i| c.send(Method::GET, &claim_paths[i], None)).await;
    b.op("claim renew", &[204], |i| c.send(Method::PATCH, &claim_paths[i], Some(&claim_body))).await;
    b.op("delete 1 with its claim id", &[204], |i| c.send(Method::DELETE, &claimed[i][0], None)).await;
    b.op("claim release (9 messages)", &[204], |i| c.send(Method::DELETE, &claim_paths[i], None)).await;

    c.expect(Method::PUT, "/v2/queues/cost-del", None, &[201]).await;
    let del_ids = b.fill("cost-del", k * 21 + k * 10).await;
    b.op("delete 1 (unclaimed)", &[204], |i| {
        call(c, Method::DELETE, format!("/v2/queues/cost-del/messages/{}", del_ids[i]), None)
    })
    .await;
    b.op("delete 10 by ids", &[204], |i| {
        let some: Vec<&str> = (0..10).map(|j| del_ids[k + i * 10 + j].as_str()).collect();
        call(c, Method::DELETE, format!("/v2/queues/cost-del/messages?ids={}", some.join(",")), None)
    })
    .await;
    b.op("pop 10", &[200], |_| c.send(Method::DELETE, "/v2/queues/cost-del/messages?pop=10", None)).await;
    b.op("subscription create", &[201], |i| {
        let sub = json!({"subscriber": format!("http://127.0.0.1:9/hook-{i}"), "ttl": 3600});
        async move { c.send(Method::POST, "/v2/queues/cost/subscriptions", Some(&sub)).await }
    })
    .await;
    b.op("subscription list", &[200], |_| c.send(Method::GET, "/v2/queues/cost/subscriptions", None)).await;
    let mut subs = Vec::with_capacity(k);
    for i in 0..k {
        let sub = json!({"subscriber": format!("http://127.0.0.1:9/edit-{i}"), "ttl": 3600});
        let r = c.expect(Method::POST, "/v2/queues/cost/subscriptions", Some(&sub), &[201]).await;
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("subscription id");
        subs.push(format!("/v2/queues/cost/subscriptions/{}", body["subscription_id"].as_str().expect("id")));
    }
    b.op("subscription get", &[200], |i| c.send(Method::GET, &subs[i], None)).await;
    let longer = json!({"ttl": 7200});
    b.op("subscription update", &[204], |i| c.send(Method::PATCH, &subs[i], Some(&longer))).await;
    b.op("subscription delete", &[204], |i| c.send(Method::DELETE, &subs[i], None)).await;
    let share = json!({"paths": ["messages"], "methods": ["GET", "POST"]});
    b.op("queue share (pre-signed URL)", &[200], |_| c.send(Method::POST, "/v2/queues/cost/share", Some(&share))).await;
    let admin = c.as_admin();
    let a = &admin;
    b.op("health (admin self-test: queue, post 10, claim 5, list, deletes)", &[200], |_| {
        a.send(Method::GET, "/v2/health", None)
    })
    .await;
    b.op("pool create", &[201], |i| {
        call(
            a,
            Method::PUT,
            format!("/v2/pools/pool-{i}"),
            Some(json!({"uri": format!("dynamodb://p{i}"), "weight": 10})),
        )
    })
    .await;
    b.op("pool get", &[200], |i| call(a, Method::GET, format!("/v2/pools/pool-{i}"), None)).await;
    b.op("pool list", &[200], |_| a.send(Method::GET, "/v2/pools", None)).await;
    b.op("flavor create", &[201], |i| {
        call(a, Method::PUT, format!("/v2/flavors/flavor-{i}"), Some(json!({"pool_list": [format!("pool-{i}")]})))
    })
    .await;
    b.op("flavor get", &[200], |i| call(a, Method::GET, format!("/v2/flavors/flavor-{i}"), None)).await;
    b.op("flavor delete", &[204], |i| call(a, Method::DELETE, format!("/v2/flavors/flavor-{i}"), None)).await;
    b.op("pool delete", &[204], |i| call(a, Method::DELETE, format!("/v2/pools/pool-{i}"), None)).await;
    for i in 0..k {
        c.expect(Method::PUT, &format!("/v2/queues/purge-{i}"), None, &[201]).await;
        b.fill(&format!("purge-{i}"), 10).await;
        c.expect(Method::PUT, &format!("/v2/queues/gone-{i}"), None, &[201]).await;
        b.fill(&format!("gone-{i}"), 10).await;
    }
    b.op("purge (messages + subscriptions)", &[204], |i| {
        call(
            c,
            Method::POST,
            format!("/v2/queues/purge-{i}/purge"),
            Some(json!({"resource_types": ["messages", "subscriptions"]})),
        )
    })
    .await;
    b.op("queue delete", &[204], |i| call(c, Method::DELETE, format!("/v2/queues/gone-{i}"), None)).await;

    b.lines.push(String::new());
    b.lines.push("Message lifecycles (post, claim, delete of each), per message:".into());
    b.lines.push(String::new());
    b.lines.push("| lifecycle | requests | sequential round trips | read units | write units | our CPU µs |".into());
    b.lines.push("|---|---|---|---|---|---|".into());
    for q in ["life-10", "life-1", "life-1x1"] {
        c.expect(Method::PUT, &format!("/v2/queues/{q}"), None, &[201]).await;
    }
    lifecycle(&mut b, "post(10) + claim(10) + delete each", "life-10", 1, 10, 10).await;
    lifecycle(&mut b, "10 x post(1) + claim(10) + delete each", "life-1", 10, 1, 10).await;
    lifecycle(&mut b, "post(1) + claim(1) + delete", "life-1x1", 1, 1, 1).await;

    b.lines.push(String::new());
    b.lines.push("Claim of 10 with N messages already claimed at the head of the queue (claim floor):".into());
    b.lines.push(String::new());
    b.lines
        .push("| already claimed | requests | sequential round trips | read units | write units | our CPU µs |".into());
    b.lines.push("|---|---|---|---|---|---|".into());
    for n in [0usize, 100, 1000] {
        let q = format!("floor-{n}");
        c.expect(Method::PUT, &format!("/v2/queues/{q}"), None, &[201]).await;
        b.fill(&q, n + k * 10 + 10).await;
        for _ in 0..n / 20 {
            c.expect(Method::POST, &format!("/v2/queues/{q}/claims?limit=20"), Some(&claim_body), &[201]).await;
        }
        let path = format!("/v2/queues/{q}/claims?limit=10");
        b.op(&n.to_string(), &[201], |_| c.send(Method::POST, &path, Some(&claim_body))).await;
    }

    sdk_floor(&mut b).await;

    let mut md = vec![
        "# DynamoDB cost per operation".to_string(),
        String::new(),
        format!("Measured {} on {}.", today(), machine()),
        format!("Command: `{}`; {} samples per operation.", command(), o.samples),
        String::new(),
        "Through the real handlers (`zaqar_local::server::dispatch`) against DynamoDB Local; every DynamoDB \
         request on the wire is metered (bench/src/meter.rs): requests, sequential round trips (longest chain \
         of requests each sent after the previous answered), read and write units as DynamoDB Local reports \
         them (ReturnConsumedCapacity; failed conditional writes counted as 1 write unit), and our CPU per \
         call in process (handler + SDK + HTTP client; no HTTP server or Lambda runtime, metering excluded; \
         `bench/cpu-vs-zaqar` measures the whole server). Warm container: the queue record is cached (1 s), \
         except where the handler reads it fresh. Messages of about 250 bytes of body, ttl 3600 s."
            .to_string(),
        String::new(),
    ];
    md.extend(b.lines);
    let text = md.join("\n") + "\n";
    print!("{text}");
    if let Some(path) = &o.record {
        std::fs::write(path, &text).expect("write the record");
        eprintln!("cost: recorded in {path}");
    }
}
