//! Queues: list, create, metadata, JSON-patch update, delete, stats, purge and share (docs/api.md#queues,
//! #presigned-share).

use http::StatusCode;
use serde_json::{json, Map, Value};
use zaqar::meta::{self, Metadata};
use zaqar::query::page_links;
use zaqar::route::{Group, Resource};
use zaqar::signing::{self, SignedScope};
use zaqar::store::queues::{MetadataUpdate, QueueFilter};
use zaqar::store::StoreError;
use zaqar::transport::{self, Context};
use zaqar::types::{self, Limit, QueueName};
use zaqar::{json as zjson, ApiError, ApiRequest, ApiResponse, App};

pub const PATCH_MEDIA_TYPE: &str = "application/openstack-messaging-v2.0-json-patch";

pub async fn handle(app: &App, req: ApiRequest) -> ApiResponse {
    transport::serve(app, req, Group::Queues, |ctx, req| async move { dispatch(app, &ctx, &req).await }).await
}

async fn dispatch(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    use http::Method;
    match (ctx.route.resource, &ctx.method) {
        (Resource::QueueList, _) => list(app, ctx).await,
        (Resource::Queue, &Method::PUT) => create(app, ctx, req).await,
        (Resource::Queue, &Method::GET) => get(app, ctx).await,
        (Resource::Queue, &Method::PATCH) => patch(app, ctx, req).await,
        (Resource::Queue, &Method::DELETE) => {
            app.store.delete_queue(&ctx.project, ctx.queue()?).await?;
            Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
        }
        (Resource::QueueStats, _) => stats(app, ctx).await,
        (Resource::QueuePurge, _) => purge(app, ctx, req).await,
        (Resource::QueueShare, _) => share(app, ctx, req).await,
        _ => Err(ApiError::no_route()),
    }
}

fn queue_href(name: &str) -> String {
    format!("/v2/queues/{name}")
}

async fn list(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let q = &ctx.query;
    let max = app.limits().max_queues_per_page;
    let limit = match q.int("limit")? {
        Some(v) => Limit::new(v, max, |m| format!("Limit must be at least 1 and no greater than {m}."))?.usize(),
        None => 10,
    };
    let detailed = q.bool("detailed")?.unwrap_or(false);
    let with_count = q.bool("with_count")?.unwrap_or(false);
    // A marker longer than any queue name orders the names as its first 65 bytes do.
    let marker = q.get("marker").map(|m| types::key_marker(m, QueueName::MAX_BYTES));
    const KNOWN: [&str; 5] = ["marker", "limit", "detailed", "name", "with_count"];
    let metadata_filters: Vec<(String, Value)> = q
        .pairs()
        .iter()
        .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(v.clone()))))
        .collect();
    let filter = QueueFilter { name: q.get("name").map(str::to_string), metadata: metadata_filters.clone() };
    // A project id too long for any queue route owns no queue (and would not fit in a key).
    let may_own_queues = ctx.project.check_length().is_ok();
    let page =
        if may_own_queues { app.store.list_queues(&ctx.project, marker, limit, &filter).await? } else { Vec::new() };
    let items: Vec<Value> = page
        .iter()
        .map(|rec| {
            let mut item = Map::new();
            item.insert("name".into(), Value::String(rec.name.clone()));
            if detailed {
                item.insert("metadata".into(), Value::Object(meta::with_defaults(&rec.metadata, app.limits())));
            }
            item.insert("href".into(), Value::String(queue_href(&rec.name)));
            Value::Object(item)
        })
        .collect();
    let extra: Vec<(String, String)> =
        metadata_filters.iter().map(|(k, _)| (k.clone(), q.get(k).unwrap_or_default().to_string())).collect();
    let marker = page.last().map(|last| last.name.clone());
    let links = page_links("/v2/queues", q, &["limit", "detailed", "name", "with_count"], &extra, marker);
    let mut body = json!({"queues": items, "links": links});
    if with_count && may_own_queues {
        let count = app.store.count_queues(&ctx.project).await?;
        if count > 0 {
            body["count"] = json!(count);
        }
    }
    Ok(ApiResponse::json(StatusCode::OK, &body))
}

fn check_metadata_size(app: &App, req: &ApiRequest, title_body: bool) -> Result<(), ApiError> {
    let max = app.limits().max_queue_metadata;
    if req.body.len() > max {
        let msg = format!("Queue metadata is too large. Max size: {max}");
        return Err(if title_body { ApiError::invalid_body(msg) } else { ApiError::invalid_api(msg) });
    }
    Ok(())
}

async fn create(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    check_metadata_size(app, req, false)?;
    let metadata: Metadata = match zjson::parse_body(&req.body)? {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::document_type()),
    };
    meta::validate(&metadata, app.limits())?;
    let queue = ctx.queue()?;
    let created = app.store.create_queue(&ctx.project, queue, &metadata).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::NO_CONTENT };
    Ok(ApiResponse::empty(status).with_header("location", queue_href(queue.as_str())))
}

async fn get(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let stored = app.store.queue_metadata(&ctx.project, ctx.queue()?).await?.unwrap_or_default();
    Ok(ApiResponse::json(StatusCode::OK, &meta::with_defaults(&stored, app.limits())))
}

fn not_found(queue: &QueueName, ctx: &Context) -> ApiError {
    ApiError::not_found(format!("Queue {} does not exist for project {}", queue.as_str(), ctx.project.as_str()))
}

async fn patch(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    check_metadata_size(app, req, true)?;
    if req.header_str("content-type") != Some(PATCH_MEDIA_TYPE) {
        return Err(ApiError::unsupported_media_type(PATCH_MEDIA_TYPE));
    }
    let doc = match zjson::parse_body(&req.body)? {
        None => return Err(ApiError::invalid_body("PATCH body could not be empty for update.")),
        Some(doc) => doc,
    };
    let ops = meta::parse_patch(&doc)?;
    let queue = ctx.queue()?;
    // Read, patch, write on the condition that nobody changed the metadata in between; a concurrent
    // update makes us read and patch again, so neither change is lost.
    for attempt in 0..PATCH_ATTEMPTS {
        if attempt > 0 {
            zaqar::store::contention_pause(attempt).await;
        }
        let current =
            app.store.queue_record_for_update(&ctx.project, queue).await?.ok_or_else(|| not_found(queue, ctx))?;
        let mut metadata = current.metadata.clone();
        meta::apply_patch(&mut metadata, ops.clone())?;
        meta::validate(&metadata, app.limits())
            .map_err(|e| ApiError::invalid_body(e.description.unwrap_or_default()))?;
        // Each PATCH body is bounded, but patches add up: the stored document is bounded the same way, or it
        // would grow until DynamoDB refuses the item.
        let max = app.limits().max_queue_metadata;
        if Value::Object(metadata.clone()).to_string().len() > max {
            return Err(ApiError::invalid_body(format!("Queue metadata is too large. Max size: {max}")));
        }
        match app.store.set_queue_metadata(&ctx.project, queue, &current, &metadata).await? {
            MetadataUpdate::Updated => {
                return Ok(ApiResponse::json(StatusCode::OK, &meta::with_defaults(&metadata, app.limits())))
            }
            MetadataUpdate::Changed => continue,
            MetadataUpdate::Missing => return Err(not_found(queue, ctx)),
            MetadataUpdate::ShardsInUse => return Err(ApiError::invalid_body(
                "_shards can only be lowered while the queue holds no messages; raise it, or purge the queue first.",
            )),
        }
    }
    Err(StoreError::exhausted("Queue update").into())
}

/// Read-patch-write rounds a PATCH tries when other updates keep changing the metadata under it.
const PATCH_ATTEMPTS: u32 = 8;

async fn stats(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let queue = ctx.queue()?;
    let (total, claimed, oldest, newest) = app.store.message_stats(&ctx.project, queue).await?;
    let now = app.store.now_ms();
    let mut messages = json!({"claimed": claimed, "free": total - claimed, "total": total});
    let summary = |m: &zaqar::store::messages::Message| {
        json!({
            "href": format!("/v2/queues/{}/messages/{}", queue.as_str(), m.id),
            "age": m.age_s(now),
            "created": zaqar::clock::iso_z(m.created_ms),
        })
    };
    if let (Some(o), Some(n)) = (&oldest, &newest) {
        messages["oldest"] = summary(o);
        messages["newest"] = summary(n);
    }
    Ok(ApiResponse::json(StatusCode::OK, &json!({"messages": messages})))
}

async fn purge(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let (mut messages, mut subscriptions) = (true, true);
    match zjson::parse_body(&req.body)? {
        None => {}
        Some(Value::Object(doc)) => {
            let types = doc
                .get("resource_types")
                .ok_or_else(|| ApiError::invalid_api("Post body must contain key \"resource_types\"."))?;
            let subset_error =
                || ApiError::invalid_api("Resource types must be a sub set of {'messages', 'subscriptions'}.");
            let types = types.as_array().ok_or_else(subset_error)?;
            let mut names = Vec::new();
            for t in types {
                match t.as_str() {
                    Some(n @ ("messages" | "subscriptions")) => names.push(n),
                    _ => return Err(subset_error()),
                }
            }
            messages = names.contains(&"messages");
            subscriptions = names.contains(&"subscriptions");
        }
        Some(_) => return Err(ApiError::document_type()),
    }
    let queue = ctx.queue()?;
    // Independent items (the queue record and heads; the subscriptions partition): both in one round trip.
    let purge_messages = async {
        if messages {
            app.store.purge_messages(&ctx.project, queue).await
        } else {
            Ok(())
        }
    };
    let purge_subscriptions = async {
        if subscriptions {
            app.store.purge_subscriptions(&ctx.project, queue).await
        } else {
            Ok(())
        }
    };
    tokio::try_join!(purge_messages, purge_subscriptions)?;
    Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
}

/// Pre-signed URL data (docs/api.md#presigned-share). Expiry is bounded by configuration, unlike upstream.
async fn share(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let doc = match zjson::parse_body(&req.body)? {
        None => return Err(ApiError::unparsable_body()),
        Some(Value::Object(doc)) => doc,
        Some(_) => return Err(ApiError::document_type()),
    };
    let unknown: Vec<&String> = doc.keys().filter(|k| !["paths", "methods", "expires"].contains(&k.as_str())).collect();
    if !unknown.is_empty() {
        let shown: Vec<String> = unknown.iter().map(|k| format!("'{k}'")).collect();
        return Err(ApiError::invalid_api(format!("Unknown keys: {{{}}}", shown.join(", "))));
    }
    // Upstream uses `paths or default` and `methods or ['GET']`: absent, null and empty mean the default.
    let strings = |name: &str, default: &str| -> Result<Vec<String>, ApiError> {
        match doc.get(name) {
            None | Some(Value::Null) => Ok(vec![default.to_string()]),
            Some(Value::Array(items)) if items.is_empty() => Ok(vec![default.to_string()]),
            Some(Value::Array(items)) => {
                Ok(items.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect())
            }
            Some(_) => Err(ApiError::invalid_api(format!("`{name}` should be a list"))),
        }
    };
    let paths = strings("paths", "messages")?;
    let bad: Vec<&String> =
        paths.iter().filter(|p| !["messages", "subscriptions", "claims"].contains(&p.as_str())).collect();
    if !bad.is_empty() {
        let shown: Vec<String> = bad.iter().map(|p| format!("'{p}'")).collect();
        return Err(ApiError::invalid_api(format!("Invalid paths: {{{}}}", shown.join(", "))));
    }
    // As upstream: the document's own errors first, then the missing key.
    let key = app.config.secret_key.as_deref().ok_or_else(|| ApiError::invalid_api("The `key` can't be None"))?;
    let methods = strings("methods", "GET")?;
    if methods.iter().any(|m| !["GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH"].contains(&m.as_str())) {
        return Err(ApiError::invalid_api("Invalid methods"));
    }
    let now_s = app.store.now_ms() / 1000;
    let expires_at = match doc.get("expires") {
        None | Some(Value::Null) => now_s + 86400,
        Some(Value::String(text)) => {
            if let Ok(n) = text.trim().parse::<i64>() {
                return Err(ApiError::invalid_api(format!(
                    "`expires` should be date format, for example 2016-01-01T00:00:00, not integer value: {n}"
                )));
            }
            let at = signing::parse_instant(text)
                .ok_or_else(|| ApiError::invalid_api(format!("Invalid expires date: {text}")))?;
            if at <= now_s {
                return Err(ApiError::invalid_api("`expires` is lower than the current time"));
            }
            at
        }
        Some(_) => return Err(ApiError::invalid_api("`expires` should be a datetime string")),
    };
    let max = app.config.max_signed_url_seconds;
    if expires_at > now_s.saturating_add(max) {
        return Err(ApiError::invalid_api(format!("`expires` may be at most {max} seconds in the future")));
    }
    let queue = ctx.queue()?;
    let scope = SignedScope {
        paths: paths.iter().map(|p| format!("/v2/queues/{}/{p}", queue.as_str())).collect(),
        methods,
        project: ctx.project.as_str().to_string(),
        expires: signing::format_expires(expires_at),
    }
    .normalised();
    let signature = scope.sign(key);
    let body = json!({
        "paths": scope.paths, "methods": scope.methods, "project": scope.project,
        "expires": scope.expires, "signature": signature,
    });
    Ok(ApiResponse::json(StatusCode::OK, &body))
}
