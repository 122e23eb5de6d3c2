//! Subscriptions: create, list, get, update, delete and confirm (docs/api.md#subscriptions).
//!
//! Deviations from Zaqar, on purpose:
//! - `trust+http(s)` subscribers are accepted without `options.trust_id` and delivered as plain
//!   webhooks without `X-Auth-Token`: this service holds no Keystone trusts (Zaqar would need Keystone
//!   and answers 503 in noauth mode).
//! - Webhook URLs whose host is an internal IP literal are refused with 400 (SSRF guard, see
//!   `zaqar::webhook`); host names are checked after DNS resolution, at delivery.
//! - Input Zaqar answers with a 503 (a non-string subscriber, an array body on create) is a 400 here.
//! - A falsy `ttl` (0, false, null) means "the default" on create and "unchanged" on PATCH instead of a
//!   subscription that expires at once.
//! - Options above 64 KiB of JSON, subscriber URIs above 8 KiB and retry-policy numbers outside
//!   0..=1209600 are refused (400): they could not be stored or delivered.
//! - Ids longer than any this service issues are "not found" without a storage call.

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};
use zaqar::json::parse_body;
use zaqar::meta::{is_falsy, validate_retry_policy};
use zaqar::query::page_links;
use zaqar::route::{Group, Resource};
use zaqar::store::subscriptions::{Created, Notice, SubscriptionPatch, Updated, SUBSCRIBE, UNSUBSCRIBE};
use zaqar::transport::{self, Context};
use zaqar::types::{key_marker, plausible_id, Limit, MAX_ID_BYTES};
use zaqar::webhook::{self, AllowList, Subscriber, SUBSCRIBER_TYPES};
use zaqar::{ApiError, ApiRequest, ApiResponse, App};

/// Python's `datetime.max`, the bound Zaqar puts on now + ttl.
const MAX_EXPIRY_S: i64 = 253_402_300_799;

/// Bounds Zaqar does not have (MongoDB takes 16 MB documents) but a DynamoDB item (400 KB) needs: the
/// options as JSON text, as large as queue metadata may be, and the subscriber URI, as long as common
/// web servers accept.
const MAX_OPTIONS_BYTES: usize = 65536;
const MAX_SUBSCRIBER_BYTES: usize = 8192;

pub async fn handle(app: &App, req: ApiRequest) -> ApiResponse {
    transport::serve(app, req, Group::Subscriptions, |ctx, req| async move { dispatch(app, &ctx, &req).await }).await
}

async fn dispatch(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    match (ctx.route.resource, &ctx.method) {
        (Resource::Subscriptions, &Method::POST) => create(app, ctx, req).await,
        (Resource::Subscriptions, &Method::GET) => list(app, ctx).await,
        (Resource::Subscription, &Method::GET) => get(app, ctx).await,
        (Resource::Subscription, &Method::PATCH) => update(app, ctx, req).await,
        (Resource::Subscription, &Method::DELETE) => {
            // An id longer than any we issue names nothing (and would not fit in a key): 204 as for
            // any unknown id.
            if plausible_id(ctx.id()) {
                app.store.delete_subscription(&ctx.project, ctx.queue()?, ctx.id()).await?;
            }
            Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
        }
        (Resource::SubscriptionConfirm, &Method::PUT) => confirm(app, ctx, req).await,
        _ => Err(ApiError::no_route()),
    }
}

fn collection_path(ctx: &Context) -> Result<String, ApiError> {
    Ok(format!("/v2/queues/{}/subscriptions", ctx.queue()?.as_str()))
}

fn not_found(sid: &str) -> ApiError {
    ApiError::not_found(format!("Subscription {sid} does not exist"))
}

/// A body that is absent counts as `{}` on these endpoints (docs/api.md#transport-json).
fn body_or_empty(req: &ApiRequest) -> Result<Value, ApiError> {
    Ok(parse_body(&req.body)?.unwrap_or_else(|| json!({})))
}

/// What a create or PATCH body asks for, after Zaqar's `subscription_patching` rules.
#[derive(Debug, Default)]
struct Fields {
    subscriber: Option<String>,
    ttl_s: Option<i64>,
    options: Option<Value>,
}

fn scheme_error() -> ApiError {
    let list: Vec<String> = SUBSCRIBER_TYPES.iter().map(|t| format!("'{t}'")).collect();
    ApiError::invalid_api(format!(
        "The subscriber type of subscription must be supported in the list [{}].",
        list.join(", ")
    ))
}

fn validate(app: &App, doc: &Value) -> Result<Fields, ApiError> {
    if is_falsy(doc) {
        return Err(ApiError::invalid_api("No subscription to create."));
    }
    let obj = doc.as_object().ok_or_else(|| ApiError::invalid_api("Subscriptions must be a dict."))?;
    let mut fields = Fields::default();
    match obj.get("subscriber") {
        None | Some(Value::Null) => {}
        Some(Value::String(uri)) if !uri.is_empty() => {
            if uri.len() > MAX_SUBSCRIBER_BYTES {
                return Err(ApiError::invalid_api(format!(
                    "The subscriber URI is too long. Max size: {MAX_SUBSCRIBER_BYTES}"
                )));
            }
            check_subscriber(app, uri)?;
            fields.subscriber = Some(uri.clone());
        }
        Some(_) => return Err(scheme_error()),
    }
    match obj.get("options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            let size = Value::Object(o.clone()).to_string().len();
            if size > MAX_OPTIONS_BYTES {
                return Err(ApiError::invalid_api(format!(
                    "Subscription options are too large. Max size: {MAX_OPTIONS_BYTES}"
                )));
            }
            validate_retry_policy(o.get("_retry_policy"))?;
            fields.options = Some(Value::Object(o.clone()));
        }
        Some(v) if is_falsy(v) => fields.options = Some(Value::Object(Map::new())),
        Some(_) => return Err(ApiError::invalid_api("Options must be a dict.")),
    }
    match obj.get("ttl") {
        None => {}
        Some(v) if is_falsy(v) => {}
        Some(Value::Bool(_)) => return Err(ttl_too_small()), // Python's True is the int 1
        Some(Value::Number(n)) if n.as_i64().is_some() => {
            let ttl = n.as_i64().unwrap_or_default();
            if ttl < 60 {
                return Err(ttl_too_small());
            }
            if ttl > MAX_EXPIRY_S - app.store.now_ms() / 1000 {
                return Err(ApiError::invalid_api(
                    "The TTL seconds for a subscription plus current time must be less than 9999-12-31 23:59:59.999999.",
                ));
            }
            fields.ttl_s = Some(ttl);
        }
        Some(_) => return Err(ApiError::invalid_api("TTL must be an integer.")),
    }
    Ok(fields)
}

fn ttl_too_small() -> ApiError {
    ApiError::invalid_api("The TTL for a subscription must be at least 60 seconds long.")
}

/// Scheme in Zaqar's list, a usable URI, and no internal IP-literal webhook host.
fn check_subscriber(app: &App, uri: &str) -> Result<(), ApiError> {
    let scheme = webhook::scheme(uri).unwrap_or_default();
    if !SUBSCRIBER_TYPES.contains(&scheme.as_str()) {
        return Err(scheme_error());
    }
    match webhook::parse_subscriber(uri).map_err(ApiError::invalid_api)? {
        Subscriber::Webhook { url, .. } => {
            let allow = AllowList::parse(&app.config.webhook_allow);
            webhook::check_url_literal(&url, &allow).map_err(ApiError::invalid_api)
        }
        Subscriber::Mailto { .. } => Ok(()),
    }
}

/// A confirmation notification is due only when confirmation is on and URLs can be signed
/// (docs/api.md#subscriptions-delivery).
fn notice(app: &App, kind: &'static str, ttl_s: i64) -> Option<Notice> {
    let enabled = app.config.require_confirmation && app.config.secret_key.is_some();
    enabled.then(|| Notice { kind, expires_s: (app.store.now_ms() / 1000).saturating_add(ttl_s) })
}

async fn create(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let queue = ctx.queue()?;
    let doc = body_or_empty(req)?;
    // Zaqar creates the queue before validating the body (docs/api.md#subscriptions-create), so even a refused request
    // leaves it.
    app.store.create_queue(&ctx.project, queue, &Default::default()).await?;
    if doc.as_object().is_some_and(|o| !o.contains_key("subscriber")) {
        return Err(ApiError::invalid_api("Missing parameter subscriber in body."));
    }
    let fields = validate(app, &doc)?;
    let subscriber = fields.subscriber.ok_or_else(scheme_error)?;
    let ttl_s = fields.ttl_s.unwrap_or(app.limits().default_subscription_ttl);
    let options = fields.options.unwrap_or_else(|| json!({}));
    let location = collection_path(ctx)?;
    let created = app
        .store
        .create_subscription(&ctx.project, queue, &subscriber, ttl_s, &options, notice(app, SUBSCRIBE, ttl_s))
        .await?;
    // This process's posts tag messages for the fan-out from now on (other containers within 1 s).
    app.store.forget_queue(&ctx.project, queue);
    let id = match created {
        Created::New(id) | Created::Existing { id, confirmed: false } => id,
        Created::Existing { confirmed: true, .. } => {
            return Err(ApiError::conflict(
                "Such subscription already exists.Subscriptions are unique by project + queue + subscriber URI.",
            )
            .with_header("location", location));
        }
    };
    Ok(ApiResponse::json(StatusCode::CREATED, &json!({"subscription_id": id})).with_header("location", location))
}

async fn list(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let q = &ctx.query;
    let max = app.limits().max_subscriptions_per_page;
    let limit = match q.int("limit")? {
        Some(v) => {
            Limit::new(v, max, |m| format!("Limit must be at least 1 and may not be greater than {m}."))?.usize()
        }
        None => 10,
    };
    let queue = ctx.queue()?;
    // A marker longer than any id orders the ids as its first bytes do (and fits in a key condition).
    let marker = q.get("marker").map(|m| key_marker(m, MAX_ID_BYTES));
    let page = app.store.list_subscriptions(&ctx.project, queue, marker, limit).await?;
    let now = app.store.now_ms();
    let items: Vec<Value> = page.iter().map(|sub| sub.to_json(now)).collect();
    let links = page_links(&collection_path(ctx)?, q, &["limit"], &[], page.last().map(|sub| sub.id.clone()));
    Ok(ApiResponse::json(StatusCode::OK, &json!({"subscriptions": items, "links": links})))
}

async fn get(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    if !plausible_id(ctx.id()) {
        return Err(not_found(ctx.id()));
    }
    match app.store.get_subscription(&ctx.project, ctx.queue()?, ctx.id()).await? {
        Some(sub) => Ok(ApiResponse::json(StatusCode::OK, &sub.to_json(app.store.now_ms()))),
        None => Err(not_found(ctx.id())),
    }
}

async fn update(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let doc = body_or_empty(req)?;
    let fields = validate(app, &doc)?;
    if fields.subscriber.is_none() && fields.ttl_s.is_none() && fields.options.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Unable to update subscription",
            format!("Subscription {} could not be updated.", ctx.id()),
        ));
    }
    if !plausible_id(ctx.id()) {
        return Err(not_found(ctx.id()));
    }
    let patch = SubscriptionPatch { subscriber: fields.subscriber, ttl_s: fields.ttl_s, options: fields.options };
    match app.store.update_subscription(&ctx.project, ctx.queue()?, ctx.id(), &patch).await? {
        Updated::Done => Ok(ApiResponse::empty(StatusCode::NO_CONTENT)
            .with_header("location", format!("{}/{}", collection_path(ctx)?, ctx.id()))),
        Updated::NotFound => Err(not_found(ctx.id())),
        Updated::Conflict => Err(ApiError::conflict(
            "Such subscription already exists. Subscriptions are unique by project + queue + subscriber URI.",
        )),
    }
}

async fn confirm(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let doc = body_or_empty(req)?;
    let Some(obj) = doc.as_object() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Unable to confirm subscription",
            format!("Subscription {} could not be confirmed.", ctx.id()),
        ));
    };
    let Some(Value::Bool(confirmed)) = obj.get("confirmed") else {
        return Err(ApiError::invalid_api("The 'confirmed' should be boolean."));
    };
    // Unconfirming sends an "unsubscribe" notification whose link lasts the default subscription ttl.
    if !plausible_id(ctx.id()) {
        return Err(not_found(ctx.id()));
    }
    let notice = if *confirmed { None } else { notice(app, UNSUBSCRIBE, app.limits().default_subscription_ttl) };
    if !app.store.confirm_subscription(&ctx.project, ctx.queue()?, ctx.id(), *confirmed, notice).await? {
        return Err(not_found(ctx.id()));
    }
    Ok(ApiResponse::empty(StatusCode::NO_CONTENT)
        .with_header("location", format!("{}/{}/confirm", collection_path(ctx)?, ctx.id())))
}
