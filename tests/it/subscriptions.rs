//! Subscription endpoints against DynamoDB Local (docs/api.md#subscriptions; the recorded Zaqar 23 answers).

use harness::*;
use serde_json::{json, Value};
use zaqar::config::Config;

const SUBS: &str = "/v2/queues/q1/subscriptions";
const SCHEME_ERROR: &str = "The subscriber type of subscription must be supported in the list ['http', 'https', 'mailto', 'trust+http', 'trust+https'].";

async fn create(c: &Client<'_>, subscriber: &str) -> String {
    let r = c.post(SUBS, &json!({"subscriber": subscriber, "ttl": 3600, "options": {"k": "v"}}).to_string()).await;
    assert_eq!(r.status, 201, "{:?}", r.json_body());
    r.json_body()["subscription_id"].as_str().unwrap().to_string()
}

async fn confirm(c: &Client<'_>, sid: &str, body: &str) -> zaqar::ApiResponse {
    c.put(&format!("{SUBS}/{sid}/confirm"), Some(body)).await
}

#[tokio::test]
async fn lifecycle_matches_transcripts() {
    let app = app().await;
    let c = Client::new(&app);
    let r = c.post(SUBS, r#"{"subscriber": "http://127.0.0.1:18001/hook", "ttl": 3600, "options": {"k": "v"}}"#).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header_value("location"), Some(SUBS));
    let sid = r.json_body()["subscription_id"].as_str().unwrap().to_string();
    // Re-posting an unconfirmed subscriber: 201 with the same id.
    let again = c.post(SUBS, r#"{"subscriber": "http://127.0.0.1:18001/hook", "ttl": 3600, "options": {}}"#).await;
    assert_eq!(sj(&again), (201, json!({"subscription_id": sid})));
    let (s, body) = sj(&c.get(SUBS).await);
    assert_eq!(s, 200);
    let item = json!({"id": sid, "source": "q1", "subscriber": "http://127.0.0.1:18001/hook", "ttl": 3600, "age": 0, "options": {"k": "v"}, "confirmed": false});
    assert_eq!(
        body,
        json!({"subscriptions": [item], "links": [{"rel": "next", "href": format!("{SUBS}?marker={sid}")}]})
    );
    // Key order as Zaqar writes it.
    let raw = String::from_utf8(c.get(&format!("{SUBS}/{sid}")).await.body).unwrap();
    assert!(raw.starts_with(&format!(r#"{{"id": "{sid}", "source": "q1", "subscriber": "#)), "{raw}");
    assert!(raw.ends_with(r#""options": {"k": "v"}, "confirmed": false}"#), "{raw}");
    let r = c.patch(&format!("{SUBS}/{sid}"), "application/json", r#"{"ttl": 7200, "options": {"k": "v2"}}"#).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header_value("location"), Some(format!("{SUBS}/{sid}").as_str()));
    let (_, got) = sj(&c.get(&format!("{SUBS}/{sid}")).await);
    assert_eq!((got["ttl"].clone(), got["options"].clone()), (json!(7200), json!({"k": "v2"})));
    assert_eq!(c.delete(&format!("{SUBS}/{sid}")).await.status, 204);
    assert_eq!(c.delete(&format!("{SUBS}/{sid}")).await.status, 204);
    let r = c.get(&format!("{SUBS}/{sid}")).await;
    assert_eq!(err(&r), (404, "Not found".into(), format!("Subscription {sid} does not exist")));
    assert_eq!(
        err(&c.get(&format!("{SUBS}/5c6939a8d3f3d1bc5a25f0a1")).await).2,
        "Subscription 5c6939a8d3f3d1bc5a25f0a1 does not exist"
    );
}

#[tokio::test]
async fn create_validation_errors() {
    let app = app().await;
    let c = Client::new(&app);
    let api = |d: &str| (400, "Invalid API request".to_string(), d.to_string());
    let cases: Vec<(&str, (u16, String, String))> = vec![
        (r#"{"subscriber": "ftp://127.0.0.1/x", "ttl": 3600, "options": {}}"#, api(SCHEME_ERROR)),
        (
            r#"{"subscriber": "http://127.0.0.1:18002/x", "ttl": -1, "options": {}}"#,
            api("The TTL for a subscription must be at least 60 seconds long."),
        ),
        (
            r#"{"subscriber": "http://127.0.0.1:18002/x", "ttl": 59}"#,
            api("The TTL for a subscription must be at least 60 seconds long."),
        ),
        (
            r#"{"subscriber": "http://127.0.0.1:18002/x", "ttl": true}"#,
            api("The TTL for a subscription must be at least 60 seconds long."),
        ),
        (r#"{"subscriber": "http://127.0.0.1:18002/x", "ttl": "120"}"#, api("TTL must be an integer.")),
        (r#"{"subscriber": "http://127.0.0.1:18002/x", "ttl": 120.5}"#, api("TTL must be an integer.")),
        (
            r#"{"subscriber": "http://127.0.0.1:18002/x", "ttl": 9223372036854775807}"#,
            api("The TTL seconds for a subscription plus current time must be less than 9999-12-31 23:59:59.999999."),
        ),
        (r#"{"subscriber": "http://127.0.0.1:18002/x", "ttl": 3600, "options": "x"}"#, api("Options must be a dict.")),
        (
            r#"{"subscriber": "http://127.0.0.1:18002/x", "options": {"_retry_policy": 5}}"#,
            api("retry_policy must be a dict."),
        ),
        (
            r#"{"subscriber": "http://127.0.0.1:18002/x", "options": {"_retry_policy": {"retry_backoff_function": "cubic"}}}"#,
            api("invalid retry_backoff_function."),
        ),
        (
            r#"{"subscriber": "http://127.0.0.1:18002/x", "options": {"_retry_policy": {"minimum_delay": 5, "maximum_delay": 10}}}"#,
            api("invalid minimum_delay and maximum_delay."),
        ),
        (r#"{"subscriber": 5}"#, api(SCHEME_ERROR)),
        (r#"{"subscriber": ""}"#, api(SCHEME_ERROR)),
        (r#"{"subscriber": "no scheme"}"#, api(SCHEME_ERROR)),
        (r#"{"ttl": 3600}"#, api("Missing parameter subscriber in body.")),
        ("{}", api("Missing parameter subscriber in body.")),
        ("[]", api("No subscription to create.")),
        (r#"[{"subscriber": "http://x"}]"#, api("Subscriptions must be a dict.")),
        ("{\"subscriber\": ", (400, "Invalid request body".into(), "Request body could not be parsed.".into())),
    ];
    for (body, expected) in cases {
        assert_eq!(err(&c.post(SUBS, body).await), expected, "{body}");
    }
    // No body at all counts as {}.
    let r = c.send(c.request(http::Method::POST, SUBS)).await;
    assert_eq!(err(&r), api("Missing parameter subscriber in body."));
    // The queue was created although every request failed validation (docs/api.md#subscriptions-create).
    let (_, queues) = sj(&c.get("/v2/queues").await);
    assert_eq!(queues["queues"][0]["name"], json!("q1"));
    assert_eq!(sj(&c.get(SUBS).await).1, json!({"subscriptions": [], "links": []}));
}

#[tokio::test]
async fn internal_webhook_addresses_are_refused() {
    let mut config = Config::for_tests("zaqar-tests");
    config.webhook_allow = vec![];
    let app = app_with(config).await;
    let c = Client::new(&app);
    for uri in [
        "http://127.0.0.1:9000/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://017700000001/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:10.0.0.1]/",
        "https://100.64.0.1/",
        "trust+http://192.168.0.1/",
        "http://0.0.0.0:80/",
    ] {
        let (status, title, description) = err(&c.post(SUBS, &json!({"subscriber": uri}).to_string()).await);
        assert_eq!((status, title.as_str()), (400, "Invalid API request"), "{uri}");
        assert!(description.contains("is not allowed"), "{uri}: {description}");
    }
    // Names are checked after DNS, at delivery; public literals pass.
    assert_eq!(c.post(SUBS, r#"{"subscriber": "http://hooks.example.com/x"}"#).await.status, 201);
    assert_eq!(c.post(SUBS, r#"{"subscriber": "https://93.184.216.34/x"}"#).await.status, 201);
    let sid = create(&c, "http://hooks2.example.com/x").await;
    let r = c.patch(&format!("{SUBS}/{sid}"), "application/json", r#"{"subscriber": "http://0x7f000001/"}"#).await;
    assert_eq!(err(&r).1, "Invalid API request");
}

#[tokio::test]
async fn other_schemes_are_accepted() {
    let app = app().await;
    let c = Client::new(&app);
    // trust+ without trust_id: accepted, delivered as a plain webhook (no Keystone here).
    create(&c, "trust+http://127.0.0.1:18003/x").await;
    create(&c, "trust+https://hooks.example.com/x").await;
    create(&c, "mailto:ops@example.com?subject=Hi").await;
    let (_, body) = sj(&c.get(SUBS).await);
    let subscribers: Vec<&str> =
        body["subscriptions"].as_array().unwrap().iter().map(|s| s["subscriber"].as_str().unwrap()).collect();
    assert_eq!(
        subscribers,
        vec![
            "trust+http://127.0.0.1:18003/x",
            "trust+https://hooks.example.com/x",
            "mailto:ops@example.com?subject=Hi"
        ]
    );
}

#[tokio::test]
async fn confirmed_duplicate_conflicts() {
    let app = app().await;
    let c = Client::new(&app);
    let sid = create(&c, "http://127.0.0.1:18004/hook").await;
    assert_eq!(confirm(&c, &sid, r#"{"confirmed": true}"#).await.status, 204);
    let r = c.post(SUBS, r#"{"subscriber": "http://127.0.0.1:18004/hook"}"#).await;
    assert_eq!(
        err(&r),
        (
            409,
            "Resource conflict".into(),
            "Such subscription already exists.Subscriptions are unique by project + queue + subscriber URI.".into()
        )
    );
    assert_eq!(r.header_value("location"), Some(SUBS));
    // Unconfirmed again: re-posting gives the same id.
    assert_eq!(confirm(&c, &sid, r#"{"confirmed": false}"#).await.status, 204);
    assert_eq!(
        sj(&c.post(SUBS, r#"{"subscriber": "http://127.0.0.1:18004/hook"}"#).await),
        (201, json!({"subscription_id": sid}))
    );
}

#[tokio::test]
async fn listing_pages_in_creation_order() {
    let app = app().await;
    let c = Client::new(&app);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(create(&c, &format!("http://127.0.0.1:18010/{i}")).await);
    }
    let (s, page) = sj(&c.get(&format!("{SUBS}?limit=2")).await);
    assert_eq!(s, 200);
    let got: Vec<&str> = page["subscriptions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(got, vec![ids[0].as_str(), ids[1].as_str()]);
    let next = page["links"][0]["href"].as_str().unwrap().to_string();
    assert_eq!(next, format!("{SUBS}?limit=2&marker={}", ids[1]));
    let (_, page) = sj(&c.get(&next).await);
    assert_eq!(page["subscriptions"][0]["id"], json!(ids[2]));
    assert_eq!(page["subscriptions"].as_array().unwrap().len(), 1);
    let next = page["links"][0]["href"].as_str().unwrap().to_string();
    assert_eq!(sj(&c.get(&next).await).1, json!({"subscriptions": [], "links": []}));
    let limit_error = "Limit must be at least 1 and may not be greater than 20.";
    assert_eq!(err(&c.get(&format!("{SUBS}?limit=0")).await), (400, "Invalid API request".into(), limit_error.into()));
    assert_eq!(err(&c.get(&format!("{SUBS}?limit=21")).await).2, limit_error);
    assert_eq!(err(&c.get(&format!("{SUBS}?limit=x")).await).1, "Invalid parameter");
    assert_eq!(sj(&c.get("/v2/queues/never/subscriptions").await), (200, json!({"subscriptions": [], "links": []})));
    // Another project sees nothing.
    let other = Client::new(&app);
    assert_eq!(sj(&other.get(SUBS).await).1["subscriptions"], json!([]));
    assert_eq!(other.get(&format!("{SUBS}/{}", ids[0])).await.status, 404);
}

#[tokio::test]
async fn patch_rules() {
    let app = app().await;
    let c = Client::new(&app);
    let sid = create(&c, "http://127.0.0.1:18020/a").await;
    create(&c, "http://127.0.0.1:18020/b").await;
    let path = format!("{SUBS}/{sid}");
    let api = |d: &str| (400, "Invalid API request".to_string(), d.to_string());
    assert_eq!(err(&c.patch(&path, "application/json", "{}").await), api("No subscription to create."));
    let r = c.send(c.request(http::Method::PATCH, &path)).await;
    assert_eq!(err(&r), api("No subscription to create."));
    assert_eq!(
        err(&c.patch(&path, "application/json", r#"{"color": "red"}"#).await),
        (400, "Unable to update subscription".into(), format!("Subscription {sid} could not be updated."))
    );
    assert_eq!(err(&c.patch(&path, "application/json", r#"{"subscriber": "ftp://x"}"#).await), api(SCHEME_ERROR));
    assert_eq!(
        err(&c.patch(&path, "application/json", r#"{"ttl": 10}"#).await),
        api("The TTL for a subscription must be at least 60 seconds long.")
    );
    assert_eq!(err(&c.patch(&path, "application/json", r#"{"options": [1]}"#).await), api("Options must be a dict."));
    let r = c.patch(&format!("{SUBS}/nope"), "application/json", r#"{"ttl": 100}"#).await;
    assert_eq!(err(&r), (404, "Not found".into(), "Subscription nope does not exist".into()));
    let r = c.patch(&path, "application/json", r#"{"subscriber": "http://127.0.0.1:18020/b"}"#).await;
    assert_eq!(
        err(&r),
        (
            409,
            "Resource conflict".into(),
            "Such subscription already exists. Subscriptions are unique by project + queue + subscriber URI.".into()
        )
    );
    assert_eq!(c.patch(&path, "application/json", r#"{"subscriber": "http://127.0.0.1:18020/c"}"#).await.status, 204);
    assert_eq!(sj(&c.get(&path).await).1["subscriber"], json!("http://127.0.0.1:18020/c"));
}

#[tokio::test]
async fn ttl_expires_and_patch_restarts_it() {
    let app = app().await;
    let c = Client::new(&app);
    let short = create(&c, "http://127.0.0.1:18030/short").await;
    let renewed = create(&c, "http://127.0.0.1:18030/renewed").await;
    advance(&app, 3000);
    assert_eq!(sj(&c.get(&format!("{SUBS}/{short}")).await).1["age"], json!(3000));
    let r = c.patch(&format!("{SUBS}/{renewed}"), "application/json", r#"{"ttl": 3600}"#).await;
    assert_eq!(r.status, 204);
    advance(&app, 601);
    assert_eq!(c.get(&format!("{SUBS}/{short}")).await.status, 404);
    assert_eq!(confirm(&c, &short, r#"{"confirmed": true}"#).await.status, 404);
    assert_eq!(c.patch(&format!("{SUBS}/{short}"), "application/json", r#"{"ttl": 3600}"#).await.status, 404);
    let (_, page) = sj(&c.get(SUBS).await);
    let ids: Vec<Value> = page["subscriptions"].as_array().unwrap().iter().map(|s| s["id"].clone()).collect();
    assert_eq!(ids, vec![json!(renewed)]);
    // The expired subscriber can subscribe again, with a new id.
    let again = create(&c, "http://127.0.0.1:18030/short").await;
    assert_ne!(again, short);
}

#[tokio::test]
async fn confirm_rules() {
    let app = app().await;
    let c = Client::new(&app);
    let sid = create(&c, "http://127.0.0.1:18040/hook").await;
    let boolean = (400, "Invalid API request".to_string(), "The 'confirmed' should be boolean.".to_string());
    assert_eq!(err(&confirm(&c, &sid, "{}").await), boolean);
    assert_eq!(err(&confirm(&c, &sid, r#"{"confirmed": "yes"}"#).await), boolean);
    assert_eq!(err(&confirm(&c, &sid, r#"{"confirmed": 1}"#).await), boolean);
    assert_eq!(err(&c.put(&format!("{SUBS}/{sid}/confirm"), None).await), boolean);
    assert_eq!(
        err(&confirm(&c, &sid, "{\"confirmed\"").await),
        (400, "Invalid request body".into(), "Request body could not be parsed.".into())
    );
    assert_eq!(
        err(&confirm(&c, "nope", r#"{"confirmed": true}"#).await),
        (404, "Not found".into(), "Subscription nope does not exist".into())
    );
    let r = confirm(&c, &sid, r#"{"confirmed": true}"#).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header_value("location"), Some(format!("{SUBS}/{sid}/confirm").as_str()));
    assert_eq!(sj(&c.get(&format!("{SUBS}/{sid}")).await).1["confirmed"], json!(true));
    let r = c.post(&format!("{SUBS}/{sid}/confirm"), r#"{"confirmed": true}"#).await;
    assert_eq!((r.status.as_u16(), r.header_value("allow")), (405, Some("PUT, OPTIONS")));
}

#[tokio::test]
async fn concurrent_creates_of_one_subscriber_make_one_subscription() {
    let app = app().await;
    let c = Client::new(&app);
    let creates = (0..8).map(|_| {
        let c = Client { app: &app, project: c.project.clone(), client_id: c.client_id.clone() };
        async move { create(&c, "http://127.0.0.1:18009/race").await }
    });
    let ids: Vec<String> = futures::future::join_all(creates).await;
    assert!(ids.iter().all(|id| *id == ids[0]), "every create answers with the one subscription: {ids:?}");
    let (_, body) = sj(&c.get(&format!("{SUBS}?limit=20")).await);
    assert_eq!(body["subscriptions"].as_array().unwrap().len(), 1, "{body}");
}

#[tokio::test]
async fn deleting_or_repointing_a_subscription_frees_its_subscriber() {
    let app = app().await;
    let c = Client::new(&app);
    let first = create(&c, "http://127.0.0.1:18010/a").await;
    assert_eq!(c.delete(&format!("{SUBS}/{first}")).await.status, 204);
    let second = create(&c, "http://127.0.0.1:18010/a").await;
    assert_ne!(first, second, "a deleted subscription's subscriber can be subscribed again");
    let other = create(&c, "http://127.0.0.1:18010/b").await;
    let patch = |to: &str| json!({"subscriber": to}).to_string();
    let conflict = c.patch(&format!("{SUBS}/{other}"), "application/json", &patch("http://127.0.0.1:18010/a")).await;
    assert_eq!(conflict.status, 409);
    let moved = c.patch(&format!("{SUBS}/{other}"), "application/json", &patch("http://127.0.0.1:18010/c")).await;
    assert_eq!(moved.status, 204);
    // /b is free again: a new create gets a new subscription, /c is taken by `other`.
    let b_again = create(&c, "http://127.0.0.1:18010/b").await;
    assert_ne!(b_again, other);
    assert_eq!(create(&c, "http://127.0.0.1:18010/c").await, other);
}

#[tokio::test]
async fn an_expired_subscription_does_not_hold_its_subscriber() {
    let app = app().await;
    let c = Client::new(&app);
    let r = c.post(SUBS, &json!({"subscriber": "http://127.0.0.1:18011/x", "ttl": 60}).to_string()).await;
    let old = r.json_body()["subscription_id"].as_str().unwrap().to_string();
    advance(&app, 61);
    let new = create(&c, "http://127.0.0.1:18011/x").await;
    assert_ne!(old, new);
}
