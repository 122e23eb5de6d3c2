//! Claims: create, query, renew and release (docs/api.md#claims), with dead-lettering on create
//! (docs/api.md#claims-dead-letter).

use http::{Method, StatusCode};
use serde_json::{json, Value};
use zaqar::json::{int_field, parse_body};
use zaqar::meta::QueueSettings;
use zaqar::route::{Group, Resource};
use zaqar::store::claims::{ClaimParams, DeadLetter};
use zaqar::transport::{self, Context};
use zaqar::types::{plausible_id, Limit, QueueName};
use zaqar::{ApiError, ApiRequest, ApiResponse, App};

pub async fn handle(app: &App, req: ApiRequest) -> ApiResponse {
    transport::serve(app, req, Group::Claims, |ctx, req| async move { dispatch(app, &ctx, &req).await }).await
}

async fn dispatch(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    match (ctx.route.resource, &ctx.method) {
        (Resource::Claims, _) => create(app, ctx, req).await,
        (Resource::Claim, &Method::GET) => get(app, ctx).await,
        (Resource::Claim, &Method::PATCH) => renew(app, ctx, req).await,
        (Resource::Claim, &Method::DELETE) => {
            // An id longer than any we issue names no claim (and would not fit in a key).
            if plausible_id(ctx.id()) {
                app.store.release_claim(&ctx.project, ctx.queue()?, ctx.id()).await?;
            }
            Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::no_route()),
    }
}

fn ttl_error(max: i64) -> ApiError {
    ApiError::invalid_api(format!(
        "The TTL for a claim may not exceed {max} seconds, and must be at least 60 seconds long."
    ))
}

/// Grace on create: Zaqar's 60..=max_claim_grace.
fn check_grace(app: &App, grace_s: i64) -> Result<(), ApiError> {
    let max = app.limits().max_claim_grace;
    if !(60..=max).contains(&grace_s) {
        return Err(ApiError::invalid_api(format!(
            "The grace for a claim may not exceed {max} seconds, and must be at least 60 seconds long."
        )));
    }
    Ok(())
}

/// Grace on renewal: Zaqar uses it as given (clients renew with less than 60 s), so only what no
/// expiry can use is refused: below 0 or above max_claim_grace (which would also overflow the
/// expiry arithmetic near i64's limits).
fn check_renewal_grace(app: &App, grace_s: i64) -> Result<(), ApiError> {
    let max = app.limits().max_claim_grace;
    if !(0..=max).contains(&grace_s) {
        return Err(ApiError::invalid_api(format!(
            "The grace for a claim may not exceed {max} seconds, and must be at least 0 seconds long."
        )));
    }
    Ok(())
}

/// `{"ttl", "grace"}` with defaults; `None` body allowed only where `body_required` is false.
fn claim_fields(app: &App, body: &[u8], body_required: bool) -> Result<(i64, i64), ApiError> {
    let limits = app.limits();
    let doc = match parse_body(body)? {
        None if body_required => return Err(ApiError::unparsable_body()),
        None => serde_json::Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::document_type()),
    };
    let ttl = int_field(&doc, "ttl")?.unwrap_or(limits.default_claim_ttl);
    let grace = int_field(&doc, "grace")?.unwrap_or(limits.default_claim_grace);
    if !(60..=limits.max_claim_ttl).contains(&ttl) {
        return Err(ttl_error(limits.max_claim_ttl));
    }
    Ok((ttl, grace))
}

fn not_found(ctx: &Context, queue: &QueueName) -> ApiError {
    ApiError::not_found(format!(
        "Claim {} does not exist in queue {} for project {}",
        ctx.id(),
        queue.as_str(),
        ctx.project.as_str()
    ))
}

async fn create(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let limits = app.limits();
    // falcon converts `limit` before the handler reads the body.
    let limit = ctx.query.int("limit")?;
    let (ttl_s, grace_s) = claim_fields(app, &req.body, false)?;
    let max = limits.max_messages_per_claim_or_pop;
    let limit = match limit {
        Some(v) => {
            Limit::new(v, max, |m| format!("Limit must be at least 1 and may not be greater than {m}."))?.usize()
        }
        None => 10,
    };
    check_grace(app, grace_s)?;
    let queue = ctx.queue()?;
    let settings = app
        .store
        .queue_metadata_cached(&ctx.project, queue)
        .await?
        .map(|m| QueueSettings::from_meta(&m))
        .unwrap_or_default();
    let dead_letter = match (&settings.dead_letter_queue, settings.max_claim_count) {
        (Some(dlq), Some(max)) => QueueName::parse(dlq).ok().map(|queue| DeadLetter {
            queue,
            max_claim_count: max,
            ttl_s: settings.dead_letter_ttl,
        }),
        _ => None,
    };
    let params = ClaimParams { ttl_s, grace_s };
    match app.store.create_claim(&ctx.project, queue, limit, params, dead_letter.as_ref()).await? {
        None => Ok(ApiResponse::empty(StatusCode::NO_CONTENT)),
        Some((cid, messages)) => {
            let now = app.store.now_ms();
            let items: Vec<Value> = messages.iter().map(|m| m.to_json(queue, now)).collect();
            Ok(ApiResponse::json(StatusCode::CREATED, &json!({"messages": items}))
                .with_header("location", format!("/v2/queues/{}/claims/{cid}", queue.as_str())))
        }
    }
}

async fn get(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let queue = ctx.queue()?;
    if !plausible_id(ctx.id()) {
        return Err(not_found(ctx, queue));
    }
    let (claim, messages) =
        app.store.get_claim(&ctx.project, queue, ctx.id()).await?.ok_or_else(|| not_found(ctx, queue))?;
    let now = app.store.now_ms();
    let items: Vec<Value> = messages.iter().map(|m| m.to_json(queue, now)).collect();
    let body = json!({
        "age": ((now - claim.updated_ms) / 1000).max(0),
        "ttl": claim.ttl_s,
        "messages": items,
        "href": format!("/v2/queues/{}/claims/{}", queue.as_str(), claim.id),
    });
    Ok(ApiResponse::json(StatusCode::OK, &body))
}

async fn renew(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let (ttl_s, grace_s) = claim_fields(app, &req.body, true)?;
    check_renewal_grace(app, grace_s)?;
    let queue = ctx.queue()?;
    if plausible_id(ctx.id())
        && app.store.renew_claim(&ctx.project, queue, ctx.id(), ClaimParams { ttl_s, grace_s }).await?
    {
        Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
    } else {
        Err(not_found(ctx, queue))
    }
}
