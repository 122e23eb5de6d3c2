//! Version discovery (`GET /`), the home document (`GET /v2/`), ping and the admin health report.

use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Instant;
use zaqar::route::{Group, Resource};
use zaqar::store::claims::ClaimParams;
use zaqar::store::messages::NewMessage;
use zaqar::transport::{self, Context};
use zaqar::types::QueueName;
use zaqar::{ApiError, ApiRequest, ApiResponse, App};

pub async fn handle(app: &App, req: ApiRequest) -> ApiResponse {
    transport::serve(app, req, Group::Health, |ctx, _req| async move { dispatch(app, &ctx).await }).await
}

async fn dispatch(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    match (ctx.route.resource, &ctx.method) {
        (Resource::Home, _) => Ok(home(app)),
        (Resource::Ping, &Method::HEAD) => Ok(ApiResponse::empty(StatusCode::NO_CONTENT)),
        // Zaqar's 503 has no body; `Retry-After` as on every storage fault.
        (Resource::Ping, _) => Ok(if app.store.ping().await {
            ApiResponse::empty(StatusCode::NO_CONTENT)
        } else {
            ApiResponse::empty(StatusCode::SERVICE_UNAVAILABLE)
                .with_header("retry-after", zaqar::error::RETRY_AFTER_SECONDS.to_string())
        }),
        (Resource::Health, _) => {
            ctx.require_admin()?;
            health(app, ctx).await
        }
        _ => Err(ApiError::no_route()),
    }
}

fn resource(template: &str, vars: &[&str], allow: &[&str], post: bool) -> Value {
    let mut href_vars = serde_json::Map::new();
    for v in vars {
        href_vars.insert(v.to_string(), Value::String(format!("param/{v}")));
    }
    let mut hints = json!({"allow": allow, "formats": {"application/json": {}}});
    if post {
        hints["accept-post"] = json!(["application/json"]);
    }
    json!({"href-template": template, "href-vars": href_vars, "hints": hints})
}

/// The JSON-Home document (§4).
fn home(app: &App) -> ApiResponse {
    let q = "/v2/queues/{queue_name}";
    let mut r = serde_json::Map::new();
    let mut add = |rel: &str, v: Value| {
        r.insert(format!("rel/{rel}"), v);
    };
    add("queues", resource("/v2/queues{?marker,limit,detailed}", &["marker", "limit", "detailed"], &["GET"], false));
    add("queue", resource(q, &["queue_name"], &["GET", "PUT", "DELETE", "PATCH"], false));
    add("queue_stats", resource(&format!("{q}/stats"), &["queue_name"], &["GET"], false));
    add("queue_share", resource(&format!("{q}/share"), &["queue_name"], &["POST"], true));
    add("queue_purge", resource(&format!("{q}/purge"), &["queue_name"], &["POST"], true));
    add(
        "messages",
        resource(
            &format!("{q}/messages{{?marker,limit,echo,include_claimed}}"),
            &["queue_name", "marker", "limit", "echo", "include_claimed"],
            &["GET"],
            false,
        ),
    );
    add("post_messages", resource(&format!("{q}/messages"), &["queue_name"], &["POST"], true));
    add(
        "messages_delete",
        resource(&format!("{q}/messages{{?ids,pop}}"), &["queue_name", "ids", "pop"], &["DELETE"], false),
    );
    add(
        "message_delete",
        resource(
            &format!("{q}/messages/{{message_id}}{{?claim}}"),
            &["queue_name", "message_id", "claim"],
            &["DELETE"],
            false,
        ),
    );
    add(
        "message_get",
        resource(&format!("{q}/messages/{{message_id}}"), &["queue_name", "message_id"], &["GET"], false),
    );
    add("claim", resource(&format!("{q}/claims/{{claim_id}}"), &["queue_name", "claim_id"], &["GET"], false));
    add("post_claim", resource(&format!("{q}/claims{{?limit}}"), &["queue_name", "limit"], &["POST"], true));
    add("patch_claim", resource(&format!("{q}/claims/{{claim_id}}"), &["queue_name", "claim_id"], &["PATCH"], true));
    add("delete_claim", resource(&format!("{q}/claims/{{claim_id}}"), &["queue_name", "claim_id"], &["DELETE"], false));
    add(
        "subscriptions_get",
        resource(&format!("{q}/subscriptions{{?marker,limit}}"), &["queue_name", "marker", "limit"], &["GET"], false),
    );
    add("subscriptions_post", resource(&format!("{q}/subscriptions"), &["queue_name"], &["POST"], true));
    add(
        "subscription",
        resource(
            &format!("{q}/subscriptions/{{subscriptions_id}}"),
            &["queue_name", "subscriptions_id"],
            &["GET", "DELETE"],
            false,
        ),
    );
    add(
        "subscription_patch",
        resource(
            &format!("{q}/subscriptions/{{subscriptions_id}}"),
            &["queue_name", "subscriptions_id"],
            &["PATCH"],
            true,
        ),
    );
    add("ping", json!({"href": "/v2/ping", "hints": {"allow": ["GET"], "formats": {"application/json": {}}}}));
    if app.config.admin_mode {
        add("health", json!({"href": "/v2/health", "hints": {"allow": ["GET"], "formats": {"application/json": {}}}}));
        if app.config.pooling {
            add(
                "pools",
                resource("/v2/pools{?detailed,limit,marker}", &["detailed", "limit", "marker"], &["GET"], false),
            );
            add("pool", resource("/v2/pools/{pool_name}", &["pool_name"], &["GET", "PUT", "PATCH", "DELETE"], true));
            add(
                "flavors",
                resource("/v2/flavors{?detailed,limit,marker}", &["detailed", "limit", "marker"], &["GET"], false),
            );
            add(
                "flavor",
                resource("/v2/flavors/{flavor_name}", &["flavor_name"], &["GET", "PUT", "PATCH", "DELETE"], true),
            );
        }
    }
    let mut resp = ApiResponse::json(StatusCode::OK, &json!({"resources": r}));
    resp.headers =
        vec![("content-type".into(), "application/json-home".into()), ("cache-control".into(), "max-age=86400".into())];
    resp
}

/// A live self-test (§11): each storage operation on a throw-away queue, timed.
async fn health(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let store = &app.store;
    let queue = QueueName::parse(&format!("health-{}", uuid::Uuid::new_v4().simple())).expect("valid name");
    let project = &ctx.project;
    let mut status = serde_json::Map::new();
    let mut record = |name: &str, started: Instant, ok: bool| {
        let reference = if ok { Value::Null } else { Value::String(uuid::Uuid::new_v4().to_string()) };
        status.insert(
            name.into(),
            json!({"succeeded": ok, "seconds": started.elapsed().as_secs_f64(), "ref": reference}),
        );
    };
    let t = Instant::now();
    // Unreachable storage is an exception to Zaqar (503), and stops the self-test before it spends one
    // storage deadline per step.
    store.create_queue(project, &queue, &Default::default()).await?;
    record("create_queue", t, true);
    let t = Instant::now();
    let batch: Vec<NewMessage> =
        (0..10).map(|i| NewMessage { body: json!({"health": i}), ttl_s: 60, delay_s: None }).collect();
    let posted = store.post_messages(project, &queue, Some(&ctx.client_id), &batch, false).await;
    record("post_messages", t, posted.is_ok());
    let t = Instant::now();
    let claim = store.create_claim(project, &queue, 5, ClaimParams { ttl_s: 60, grace_s: 60 }, None).await;
    record("claim_messages", t, matches!(claim, Ok(Some(_))));
    let t = Instant::now();
    let opts = zaqar::store::messages::ListOptions {
        marker: None,
        limit: 10,
        echo: true,
        include_claimed: true,
        include_delayed: true,
        client: ctx.client_id,
    };
    let listed = store.list_messages(project, &queue, &opts).await;
    record("list_messages", t, listed.is_ok());
    let (mut free, mut claimed, mut total) = (0, 0, 0);
    if let Ok((t_all, t_claimed, _, _)) = store.message_stats(project, &queue).await {
        (free, claimed, total) = (t_all - t_claimed, t_claimed, t_all);
    }
    if let Ok(Some((cid, msgs))) = &claim {
        let t = Instant::now();
        let first = &msgs[0].id;
        let deleted = store.delete_message(project, &queue, first, Some(cid)).await;
        record("delete_messages", t, deleted.is_ok());
        let t = Instant::now();
        let released = store.release_claim(project, &queue, cid).await;
        record("delete_claim", t, released.is_ok());
    }
    let t = Instant::now();
    let ids = posted.unwrap_or_default();
    let bulk = store.delete_messages(project, &queue, &ids).await;
    record("bulk_delete_messages", t, bulk.is_ok());
    let t = Instant::now();
    let dropped = store.delete_queue(project, &queue).await;
    record("delete_queue", t, dropped.is_ok());
    let body = json!({
        "storage_reachable": true,
        "operation_status": status,
        "message_volume": {"free": free, "claimed": claimed, "total": total},
    });
    Ok(ApiResponse::json(StatusCode::OK, &body))
}
