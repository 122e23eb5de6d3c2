//! Messages: post, list, get, get many, delete, delete many and pop (docs/api.md#messages).

use http::{Method, StatusCode};
use serde_json::{json, Value};
use zaqar::json::{int_field, parse_body};
use zaqar::meta::QueueSettings;
use zaqar::query::page_links;
use zaqar::route::{Group, Resource};
use zaqar::store::messages::{DeleteOutcome, ListOptions, NewMessage};
use zaqar::transport::{self, Context};
use zaqar::types::Limit;
use zaqar::{ApiError, ApiRequest, ApiResponse, App};

pub async fn handle(app: &App, req: ApiRequest) -> ApiResponse {
    transport::serve(app, req, Group::Messages, |ctx, req| async move { dispatch(app, &ctx, &req).await }).await
}

async fn dispatch(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    match (ctx.route.resource, &ctx.method) {
        (Resource::Messages, &Method::POST) => post(app, ctx, req).await,
        (Resource::Messages, &Method::GET) if ctx.query.has("ids") => get_many(app, ctx).await,
        (Resource::Messages, &Method::GET) => list(app, ctx).await,
        (Resource::Messages, &Method::DELETE) => delete_many(app, ctx).await,
        (Resource::Message, &Method::GET) => get_one(app, ctx).await,
        (Resource::Message, &Method::DELETE) => delete_one(app, ctx).await,
        _ => Err(ApiError::no_route()),
    }
}

fn page_limit(app: &App, value: Option<i64>) -> Result<usize, ApiError> {
    let max = app.limits().max_messages_per_page;
    match value {
        Some(v) => {
            Ok(Limit::new(v, max, |m| format!("Limit must be at least 1 and may not be greater than {m}."))?.usize())
        }
        None => Ok(10),
    }
}

async fn post(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let queue = ctx.queue()?;
    let limits = app.limits();
    let stored = app.store.queue_metadata_cached(&ctx.project, queue).await?;
    let settings = stored.as_ref().map(QueueSettings::from_meta).unwrap_or_default();
    let global = limits.max_messages_post_size;
    if let Some(own) = settings.max_post_size {
        let effective = (own.max(0) as usize).min(global);
        if req.body.len() > effective {
            return Err(ApiError::invalid_api(format!(
                "Message collection size is too large. The max size for current queue is {effective}. It is calculated by max size = min(max_messages_post_size_config: {global}, max_messages_post_size_queue: {own})."
            )));
        }
    }
    if req.body.len() > global {
        return Err(ApiError::invalid_api(format!("Message collection size is too large. Max size {global}")));
    }
    let doc = parse_body(&req.body)?.ok_or_else(ApiError::unparsable_body)?;
    let no_messages = || ApiError::invalid_api("No messages were found in the request body.");
    let items = match doc.as_object().ok_or_else(no_messages)?.get("messages").ok_or_else(no_messages)? {
        Value::Array(items) => items,
        _ => return Err(ApiError::document_type()),
    };
    if items.is_empty() {
        return Err(ApiError::invalid_api("No messages to enqueu."));
    }
    let default_ttl = settings.default_ttl.unwrap_or(limits.default_message_ttl);
    let delayed_queue = settings.default_delay != 0;
    let mut messages = Vec::with_capacity(items.len());
    for item in items {
        let obj = item.as_object().ok_or_else(ApiError::document_type)?;
        // Zaqar checks the fields in this order: ttl, body, delay.
        let ttl_s = int_field(obj, "ttl")?.unwrap_or(default_ttl);
        let body = obj.get("body").cloned().ok_or_else(|| ApiError::invalid_body("Missing \"body\" field."))?;
        let delay_s =
            if delayed_queue { Some(int_field(obj, "delay")?.unwrap_or(settings.default_delay)) } else { None };
        messages.push(NewMessage { body, ttl_s, delay_s });
    }
    for m in &messages {
        if !(60..=limits.max_message_ttl).contains(&m.ttl_s) {
            return Err(ApiError::invalid_api(format!(
                "The TTL for a message may not exceed {} seconds, and must be at least 60 seconds long.",
                limits.max_message_ttl
            )));
        }
        if let Some(d) = m.delay_s {
            if !(0..=limits.max_message_delay).contains(&d) {
                return Err(ApiError::invalid_api(format!(
                    "The Delay TTL for a message may not exceed {} seconds,and must be at least 0 seconds long.",
                    limits.max_message_delay
                )));
            }
        }
    }
    if stored.is_none() {
        app.store.create_queue(&ctx.project, queue, &Default::default()).await?;
    }
    let ids = app
        .store
        .post_messages(&ctx.project, queue, Some(&ctx.client_id), &messages, app.config.enable_checksum)
        .await?;
    let base = format!("/v2/queues/{}/messages", queue.as_str());
    let resources: Vec<String> = ids.iter().map(|id| format!("{base}/{id}")).collect();
    Ok(ApiResponse::json(StatusCode::CREATED, &json!({"resources": resources}))
        .with_header("location", format!("{base}?ids={}", ids.join(","))))
}

async fn list(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let q = &ctx.query;
    let limit = page_limit(app, q.int("limit")?)?;
    let echo = q.bool("echo")?.unwrap_or(false);
    let include_claimed = q.bool("include_claimed")?.unwrap_or(false);
    let include_delayed = q.bool("include_delayed")?.unwrap_or(false);
    let marker = q.get("marker").map(str::to_string);
    let queue = ctx.queue()?;
    let opts = ListOptions { marker, limit, echo, include_claimed, include_delayed, client: ctx.client_id };
    let page = app.store.list_messages(&ctx.project, queue, &opts).await?;
    let now = app.store.now_ms();
    let items: Vec<Value> = page.messages.iter().map(|m| m.to_json(queue, now)).collect();
    let path = format!("/v2/queues/{}/messages", queue.as_str());
    let links = page_links(&path, q, &["limit", "echo", "include_claimed", "include_delayed"], &[], page.marker);
    Ok(ApiResponse::json(StatusCode::OK, &json!({"messages": items, "links": links})))
}

fn python_list(ids: &[String]) -> String {
    let quoted: Vec<String> =
        ids.iter().map(|i| format!("'{}'", i.replace('\\', "\\\\").replace('\'', "\\'"))).collect();
    format!("[{}]", quoted.join(", "))
}

async fn get_many(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let ids = ctx.query.list("ids").unwrap_or_default();
    page_limit(app, Some(ids.len() as i64))?;
    let queue = ctx.queue()?;
    let found = app.store.get_messages(&ctx.project, queue, &ids).await?;
    if found.is_empty() {
        return Err(ApiError::not_found(format!(
            "No messages with IDs: {} found in the queue {} for project {}.",
            python_list(&ids),
            queue.as_str(),
            ctx.project.as_str()
        )));
    }
    let now = app.store.now_ms();
    let items: Vec<Value> = found.iter().map(|m| m.to_json(queue, now)).collect();
    Ok(ApiResponse::json(StatusCode::OK, &json!({"messages": items})))
}

async fn get_one(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let queue = ctx.queue()?;
    match app.store.get_message(&ctx.project, queue, ctx.id()).await? {
        Some(m) => Ok(ApiResponse::json(StatusCode::OK, &m.to_json(queue, app.store.now_ms()))),
        None => Err(ApiError::not_found(format!(
            "Message {} does not exist in queue {} for project {}",
            ctx.id(),
            queue.as_str(),
            ctx.project.as_str()
        ))),
    }
}

fn unable_to_delete(status: StatusCode, description: &str) -> ApiError {
    ApiError::new(status, "Unable to delete", description)
}

async fn delete_one(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let claim_id = ctx.query.get("claim_id");
    if let Some(cid) = claim_id {
        if !zaqar::keys::is_claim_id(cid) {
            return Err(unable_to_delete(
                StatusCode::BAD_REQUEST,
                "The specified claim does not exist or has expired.",
            ));
        }
    }
    match app.store.delete_message(&ctx.project, ctx.queue()?, ctx.id(), claim_id).await? {
        DeleteOutcome::Deleted | DeleteOutcome::Absent => Ok(ApiResponse::empty(StatusCode::NO_CONTENT)),
        DeleteOutcome::Claimed => Err(unable_to_delete(
            StatusCode::FORBIDDEN,
            "This message is claimed; it cannot be deleted without a valid claim ID.",
        )),
        DeleteOutcome::NotClaimed => Err(unable_to_delete(
            StatusCode::BAD_REQUEST,
            "A claim was specified, but the message is not currently claimed.",
        )),
    }
}

async fn delete_many(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let ids = ctx.query.list("ids");
    let pop = ctx.query.int("pop")?;
    match (&ids, pop) {
        (Some(_), Some(_)) => {
            Err(ApiError::invalid_api("pop and id params cannot be present together in the delete request."))
        }
        (None, None) => Err(ApiError::invalid_api(
            "The request should have either \"ids\" or \"pop\" parameter in the request, to be able to delete.",
        )),
        (None, Some(n)) => {
            let max = app.limits().max_messages_per_claim_or_pop;
            let count =
                Limit::new(n, max, |m| format!("Pop value must be at least 1 and may not be greater than {m}."))?;
            let popped = app.store.pop_messages(&ctx.project, ctx.queue()?, count.usize()).await?;
            let now = app.store.now_ms();
            let items: Vec<Value> = popped
                .iter()
                .map(|m| {
                    let mut v = json!({"id": m.id, "age": m.age_s(now), "ttl": m.ttl_s, "body": m.body_value(), "claim_id": null, "claim_count": m.claim_count});
                    // Pop results carry the checksum (docs/api.md#messages-checksum) like every other message
                    // representation.
                    if let Some(c) = &m.checksum {
                        v["checksum"] = Value::String(c.clone());
                    }
                    v
                })
                .collect();
            Ok(ApiResponse::json(StatusCode::OK, &json!({"messages": items})))
        }
        (Some(ids), None) => {
            let max = app.limits().max_messages_per_page;
            if ids.len() > max as usize {
                return Err(ApiError::invalid_api(format!(
                    "ids parameter should have at least 1 and not greater than {max} values."
                )));
            }
            app.store.delete_messages(&ctx.project, ctx.queue()?, ids).await?;
            Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
        }
    }
}
