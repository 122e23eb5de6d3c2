//! Version discovery (`GET /`), the home document (`GET /v2/`), ping and the admin health report.

use http::{Method, StatusCode};
use serde::Serialize;
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

/// One relation of the home document: `href-template` with its variables (name → `param/...`),
/// allowed methods, and whether it takes a body (`accept-post`).
struct Rel {
    name: &'static str,
    template: &'static str,
    vars: &'static [(&'static str, &'static str)],
    allow: &'static [&'static str],
    accepts_body: bool,
}

const Q: (&str, &str) = ("queue_name", "queue_name");
const MARKER: (&str, &str) = ("marker", "marker");
const GET: &[&str] = &["GET"];

/// Zaqar 23's public relations, in its order (`zaqar/transport/wsgi/v2_0/homedoc.py`).
const PUBLIC: &[Rel] = &[
    Rel {
        name: "queues",
        template: "/v2/queues{?marker,limit,detailed}",
        vars: &[MARKER, ("limit", "queue_limit"), ("detailed", "detailed")],
        allow: GET,
        accepts_body: false,
    },
    Rel {
        name: "queue",
        template: "/v2/queues/{queue_name}",
        vars: &[Q],
        allow: &["GET", "PUT", "DELETE", "PATCH"],
        accepts_body: false,
    },
    Rel { name: "queue_stats", template: "/v2/queues/{queue_name}/stats", vars: &[Q], allow: GET, accepts_body: false },
    Rel {
        name: "queue_share",
        template: "/v2/queues/{queue_name}/share",
        vars: &[Q],
        allow: &["POST"],
        accepts_body: true,
    },
    Rel {
        name: "queue_purge",
        template: "/v2/queues/{queue_name}/purge",
        vars: &[Q],
        allow: &["POST"],
        accepts_body: true,
    },
    Rel {
        name: "messages",
        template: "/v2/queues/{queue_name}/messages{?marker,limit,echo,include_claimed}",
        vars: &[Q, MARKER, ("limit", "messages_limit"), ("echo", "echo"), ("include_claimed", "include_claimed")],
        allow: GET,
        accepts_body: false,
    },
    Rel {
        name: "post_messages",
        template: "/v2/queues/{queue_name}/messages",
        vars: &[Q],
        allow: &["POST"],
        accepts_body: true,
    },
    Rel {
        name: "messages_delete",
        template: "/v2/queues/{queue_name}/messages{?ids,pop}",
        vars: &[Q, ("ids", "ids"), ("pop", "pop")],
        allow: &["DELETE"],
        accepts_body: false,
    },
    Rel {
        name: "message_delete",
        template: "/v2/queues/{queue_name}/messages/{message_id}{?claim}",
        vars: &[Q, ("message_id", "message_id"), ("claim", "claim_id")],
        allow: &["DELETE"],
        accepts_body: false,
    },
    Rel {
        name: "message_get",
        template: "/v2/queues/{queue_name}/messages/{message_id}",
        vars: &[Q, ("message_id", "message_id")],
        allow: GET,
        accepts_body: false,
    },
    Rel {
        name: "claim",
        template: "/v2/queues/{queue_name}/claims/{claim_id}",
        vars: &[Q, ("claim_id", "claim_id")],
        allow: GET,
        accepts_body: false,
    },
    Rel {
        name: "post_claim",
        template: "/v2/queues/{queue_name}/claims{?limit}",
        vars: &[Q, ("limit", "claim_limit")],
        allow: &["POST"],
        accepts_body: true,
    },
    Rel {
        name: "patch_claim",
        template: "/v2/queues/{queue_name}/claims/{claim_id}",
        vars: &[Q, ("claim_id", "claim_id")],
        allow: &["PATCH"],
        accepts_body: true,
    },
    Rel {
        name: "delete_claim",
        template: "/v2/queues/{queue_name}/claims/{claim_id}",
        vars: &[Q, ("claim_id", "claim_id")],
        allow: &["DELETE"],
        accepts_body: false,
    },
    Rel {
        name: "subscriptions_get",
        template: "/v2/queues/{queue_name}/subscriptions{?marker,limit}",
        vars: &[Q, MARKER, ("limit", "subscription_limit")],
        allow: GET,
        accepts_body: false,
    },
    Rel {
        name: "subscriptions_post",
        template: "/v2/queues/{queue_name}/subscriptions",
        vars: &[Q, ("limit", "subscription_limit")],
        allow: &["POST"],
        accepts_body: true,
    },
    Rel {
        name: "subscription",
        template: "/v2/queues/{queue_name}/subscriptions/{subscriptions_id}",
        vars: &[Q, ("subscriptions_id", "subscriptions_id")],
        allow: &["GET", "DELETE"],
        accepts_body: false,
    },
    Rel {
        name: "subscription_patch",
        template: "/v2/queues/{queue_name}/subscriptions/{subscriptions_id}",
        vars: &[Q, ("subscriptions_id", "subscriptions_id")],
        allow: &["PATCH"],
        accepts_body: true,
    },
    Rel { name: "ping", template: "/v2/ping", vars: &[], allow: GET, accepts_body: false },
];

/// With `admin_mode`, Zaqar adds these whether or not pooling mounts the pools and flavors routes.
const ADMIN: &[Rel] = &[
    Rel {
        name: "pools",
        template: "/v2/pools{?detailed,limit,marker}",
        vars: &[("detailed", "detailed"), ("limit", "pool_limit"), MARKER],
        allow: GET,
        accepts_body: false,
    },
    Rel {
        name: "pool",
        template: "/v2/pools/{pool_name}",
        vars: &[("pool_name", "pool_name")],
        allow: &["GET", "PUT", "PATCH", "DELETE"],
        accepts_body: false,
    },
    Rel {
        name: "flavors",
        template: "/v2/flavors{?detailed,limit,marker}",
        vars: &[("detailed", "detailed"), ("limit", "flavor_limit"), MARKER],
        allow: GET,
        accepts_body: false,
    },
    Rel {
        name: "flavor",
        template: "/v2/flavors/{flavor_name}",
        vars: &[("flavor_name", "flavor_name")],
        allow: &["GET", "PUT", "PATCH", "DELETE"],
        accepts_body: false,
    },
];

impl Rel {
    fn to_json(&self) -> Value {
        let mut hints = json!({"allow": self.allow, "formats": {"application/json": {}}});
        if self.accepts_body {
            hints["accept-post"] = json!(["application/json"]);
        }
        let mut rel = json!({"href-template": self.template});
        // Zaqar's ping entry has no `href-vars` at all (not an empty object).
        if !self.vars.is_empty() {
            let vars: serde_json::Map<String, Value> =
                self.vars.iter().map(|(name, param)| (name.to_string(), json!(format!("param/{param}")))).collect();
            rel["href-vars"] = Value::Object(vars);
        }
        rel["hints"] = hints;
        rel
    }
}

/// The JSON-Home document (docs/api.md#home). Byte for byte what Zaqar 23
/// sends: its relations and `param/...` names, and `json.dumps(indent=4)` layout.
fn home(app: &App) -> ApiResponse {
    let mut resources = serde_json::Map::new();
    let admin = if app.config.admin_mode { ADMIN } else { &[] };
    for rel in PUBLIC.iter().chain(admin) {
        resources.insert(format!("rel/{}", rel.name), rel.to_json());
    }
    if app.config.admin_mode {
        let health = json!({"href": "/v2/health", "hints": {"allow": GET, "formats": {"application/json": {}}}});
        resources.insert("rel/health".into(), health);
    }
    let mut body = Vec::new();
    let mut writer =
        serde_json::Serializer::with_formatter(&mut body, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    json!({"resources": resources}).serialize(&mut writer).expect("a JSON value serialises");
    ApiResponse {
        status: StatusCode::OK,
        headers: vec![
            ("content-type".into(), "application/json-home".into()),
            ("cache-control".into(), "max-age=86400".into()),
        ],
        body,
    }
}

/// A live self-test (docs/api.md#health-report): each storage operation on a throw-away queue, timed.
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
    // Zaqar 23's report is exactly these two keys (its redis driver, as recorded). Its MongoDB driver
    // adds a store-wide `message_volume`, which here would be a scan of the whole table per call.
    let body = json!({"storage_reachable": true, "operation_status": status});
    Ok(ApiResponse::json(StatusCode::OK, &body))
}
