//! Queue endpoints against DynamoDB Local (spec §1-§6).

use harness::*;
use serde_json::json;

#[tokio::test]
async fn create_get_list_delete() {
    let app = app().await;
    let c = Client::new(&app);
    let r = c.put("/v2/queues/q1", None).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header_value("location"), Some("/v2/queues/q1"));
    assert_eq!(c.put("/v2/queues/q1", None).await.status, 204);
    let (s, body) = sj(&c.get("/v2/queues/q1").await);
    assert_eq!(s, 200);
    assert_eq!(body["_default_message_ttl"], json!(3600));
    let (s, body) = sj(&c.get("/v2/queues").await);
    assert_eq!(s, 200);
    assert_eq!(body["queues"], json!([{"name": "q1", "href": "/v2/queues/q1"}]));
    assert_eq!(body["links"][0]["href"], json!("/v2/queues?marker=q1"));
    assert_eq!(c.delete("/v2/queues/q1").await.status, 204);
    let (_, body) = sj(&c.get("/v2/queues").await);
    assert_eq!(body, json!({"queues": [], "links": []}));
}
