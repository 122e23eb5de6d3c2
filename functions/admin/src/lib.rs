//! Admin resource group: pools and flavors (docs/api.md#pools), mounted only with `admin_mode` and `pooling`.
//!
//! Policy (docs/api.md#transport-auth): every pool operation and flavor create/update/delete need the `admin` role;
//! flavor get and list are open. The check runs before the body is read, as Zaqar's `acl.enforce` does.
//!
//! Names are not validated by Zaqar; here a name longer than 255 characters cannot be created (it would
//! not fit DynamoDB's sort key), so it is simply never found.

pub mod schema;

use http::{Method, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use schema::Rule;
use serde_json::{json, Map, Value};
use zaqar::query::page_links;
use zaqar::route::{Group, Resource};
use zaqar::store::admin::{self as admin_store, FlavorWrite, Pool, PoolPatch, CAPABILITIES};
use zaqar::transport::{self, Context};
use zaqar::types::{Limit, ProjectId};
use zaqar::{json as zjson, ApiError, ApiRequest, ApiResponse, App};

/// Longest pool or flavor name accepted on PUT (and the schema's limit for `flavor` and `uri`).
pub const MAX_NAME_LEN: usize = 255;
/// Largest `options` document (as JSON text) a pool may carry; keeps the item well under DynamoDB's 400 KB.
pub const MAX_OPTIONS_BYTES: usize = 64 * 1024;
const MAX_WEIGHT: i64 = (1 << 32) - 1;

/// Schemes accepted in pool URIs.
///
/// Zaqar checks a pool URI by loading the storage driver its scheme names and connecting to it
/// (400 "cannot connect to <uri>" otherwise). This service has a single storage — the DynamoDB table —
/// so a pool URI is an *identifier* of storage, never dialled: it must be `<scheme>://<something>` where
/// the scheme is `dynamodb` (e.g. `dynamodb://zaqar-messages`) or one of Zaqar's message-store drivers
/// (`mongodb`, `redis`, `swift`), so URIs written for upstream deployments keep working. Anything else
/// (unknown scheme, no `://`, nothing after it, whitespace or control characters) "cannot connect".
pub const POOL_URI_SCHEMES: [&str; 4] = ["dynamodb", "mongodb", "redis", "swift"];

pub fn is_storage_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else { return false };
    POOL_URI_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme))
        && !rest.is_empty()
        && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub async fn handle(app: &App, req: ApiRequest) -> ApiResponse {
    transport::serve(app, req, Group::Admin, |ctx, req| async move { dispatch(app, &ctx, &req).await }).await
}

async fn dispatch(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    match (ctx.route.resource, &ctx.method) {
        (Resource::PoolList, &Method::GET) => {
            ctx.require_admin()?;
            list_pools(app, ctx, req).await
        }
        (Resource::Pool, m) => {
            ctx.require_admin()?;
            match *m {
                Method::PUT => put_pool(app, ctx, req).await,
                Method::GET => get_pool(app, ctx).await,
                Method::PATCH => patch_pool(app, ctx, req).await,
                Method::DELETE => delete_pool(app, ctx).await,
                _ => Err(ApiError::method_not_allowed(&Resource::Pool.allow_header())),
            }
        }
        (Resource::FlavorList, &Method::GET) => list_flavors(app, ctx).await,
        (Resource::Flavor, m) => {
            if *m != Method::GET {
                ctx.require_admin()?;
            }
            if !admin_store::storable_project(&ctx.project) {
                return Err(ApiError::invalid_queue());
            }
            match *m {
                Method::PUT => put_flavor(app, ctx, req).await,
                Method::GET => get_flavor(app, ctx).await,
                Method::PATCH => patch_flavor(app, ctx, req).await,
                Method::DELETE => {
                    app.store.delete_flavor(&ctx.project, ctx.id()).await?;
                    Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
                }
                _ => Err(ApiError::method_not_allowed(&Resource::Flavor.allow_header())),
            }
        }
        _ => Err(ApiError::no_route()),
    }
}

/// Characters escaped in a `Location` path segment (falcon URI-encodes `Location`).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn location(collection: &str, name: &str) -> String {
    format!("/v2/{collection}/{}", utf8_percent_encode(name, SEGMENT))
}

fn pool_href(name: &str) -> String {
    format!("/v2/pools/{name}")
}

fn flavor_href(name: &str) -> String {
    format!("/v2/flavors/{name}")
}

/// `wsgi_utils.load`: any unreadable body is "JSON could not be parsed." (also an empty one).
fn load(req: &ApiRequest) -> Result<Value, ApiError> {
    match zjson::parse_body(&req.body) {
        Ok(Some(v)) => Ok(v),
        _ => Err(ApiError::invalid_body("JSON could not be parsed.")),
    }
}

/// `field in data` in Python: a key of an object, or an element of an array.
fn mentions(doc: &Value, field: &str) -> bool {
    match doc {
        Value::Object(m) => m.contains_key(field),
        Value::Array(items) => items.iter().any(|v| v.as_str() == Some(field)),
        _ => false,
    }
}

fn limit(ctx: &Context, max: u32) -> Result<usize, ApiError> {
    Ok(match ctx.query.int("limit")? {
        Some(v) => Limit::new(v, max, |m| format!("Limit must be at least 1 and no greater than {m}."))?.usize(),
        None => 10,
    })
}

fn name_too_long(name: &str) -> bool {
    name.chars().count() > MAX_NAME_LEN
}

// ---------------------------------------------------------------------------------------------------
// Pools

fn pool_json(pool: &Pool, detailed: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(pool.name));
    m.insert("flavor".into(), pool.flavor.as_ref().map_or(Value::Null, |f| json!(f)));
    m.insert("uri".into(), json!(pool.uri));
    m.insert("weight".into(), json!(pool.weight));
    if detailed {
        m.insert("options".into(), Value::Object(pool.options.clone()));
    }
    m.insert("href".into(), json!(pool_href(&pool.name)));
    m
}

fn pool_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Pool {name} does not exist"))
}

fn cannot_connect(uri: &str) -> ApiError {
    ApiError::invalid_body(format!("cannot connect to {uri}"))
}

fn uri_in_use() -> ApiError {
    ApiError::conflict("The database URI is in use by another pool.")
}

fn check_options_size(options: &Map<String, Value>) -> Result<(), ApiError> {
    if Value::Object(options.clone()).to_string().len() > MAX_OPTIONS_BYTES {
        return Err(ApiError::invalid_body(format!("Pool options are too large. Max size: {MAX_OPTIONS_BYTES}")));
    }
    Ok(())
}

const WEIGHT: Rule = Rule::Integer { min: 0, max: MAX_WEIGHT };
const NAME_OR_URI: Rule = Rule::String { max_len: MAX_NAME_LEN };

async fn list_pools(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let q = &ctx.query;
    let marker = q.get("marker");
    let limit = limit(ctx, app.limits().max_pools_per_page)?;
    let detailed = q.bool("detailed")?;
    let pools = app.store.list_pools(marker, limit).await?;
    let links = page_links("/v2/pools", q, &["limit", "detailed"], &[], pools.last().map(|last| last.name.clone()));
    let items: Vec<Value> = pools.iter().map(|p| Value::Object(pool_json(p, detailed.unwrap_or(false)))).collect();
    let body = json!({"links": links, "pools": items});
    Ok(ApiResponse::json(StatusCode::OK, &body).with_header("content-location", relative_uri(req)))
}

/// falcon's `request.relative_uri`: the path plus the query string, as received.
fn relative_uri(req: &ApiRequest) -> String {
    let raw = if req.query.is_empty() { req.path.clone() } else { format!("{}?{}", req.path, req.query) };
    // A header value must be visible ASCII; anything else is percent-encoded.
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if (0x21..=0x7e).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn get_pool(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let detailed = ctx.query.bool("detailed")?.unwrap_or(false);
    let name = ctx.id();
    let pool = app.store.get_pool(name).await?.ok_or_else(|| pool_not_found(name))?;
    Ok(ApiResponse::json(StatusCode::OK, &Value::Object(pool_json(&pool, detailed))))
}

async fn put_pool(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let name = ctx.id();
    let doc = load(req)?;
    let m = schema::object(&doc)?;
    schema::property(m, "weight", WEIGHT)?;
    schema::property(m, "flavor", NAME_OR_URI)?;
    schema::property(m, "uri", NAME_OR_URI)?;
    schema::property(m, "options", Rule::Object)?;
    schema::required(m, &["uri", "weight"])?;
    schema::no_other_keys(m, &["weight", "flavor", "uri", "options"])?;
    if name_too_long(name) {
        return Err(ApiError::invalid_api(format!("Pool names may be at most {MAX_NAME_LEN} characters long.")));
    }
    let uri = m["uri"].as_str().unwrap_or_default().to_string();
    if !is_storage_uri(&uri) {
        return Err(cannot_connect(&uri));
    }
    let options = m.get("options").and_then(Value::as_object).cloned().unwrap_or_default();
    check_options_size(&options)?;
    let flavor = m.get("flavor").and_then(Value::as_str).filter(|f| !f.is_empty()).map(str::to_string);
    if app.store.pool_uri_taken(&uri, name).await? {
        return Err(uri_in_use());
    }
    let pool = Pool {
        name: name.to_string(),
        uri,
        weight: m["weight"].as_i64().unwrap_or(0),
        flavor_project: flavor.as_ref().map(|_| ctx.project.as_str().to_string()),
        flavor,
        options,
    };
    app.store.put_pool(&pool).await?;
    Ok(ApiResponse::empty(StatusCode::CREATED).with_header("location", location("pools", name)))
}

async fn patch_pool(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let name = ctx.id();
    let doc = load(req)?;
    const EXPECT: [&str; 4] = ["weight", "uri", "flavor", "options"];
    if !EXPECT.iter().any(|f| mentions(&doc, f)) {
        return Err(ApiError::invalid_body("One of `uri`, `weight`, `flavor`, or `options` needs to be specified"));
    }
    // Each field has its own schema, checked in this order; other keys are tolerated upstream.
    let m = schema::object(&doc)?;
    schema::property(m, "weight", WEIGHT)?;
    schema::property(m, "uri", NAME_OR_URI)?;
    schema::property(m, "flavor", NAME_OR_URI)?;
    schema::property(m, "options", Rule::Object)?;
    let uri = m.get("uri").and_then(Value::as_str).map(str::to_string);
    if let Some(u) = &uri {
        if !is_storage_uri(u) {
            return Err(cannot_connect(u));
        }
    }
    let options = m.get("options").and_then(Value::as_object).cloned();
    if let Some(o) = &options {
        check_options_size(o)?;
    }
    let patch = PoolPatch {
        uri,
        weight: m.get("weight").and_then(Value::as_i64),
        flavor: m.get("flavor").and_then(Value::as_str).map(|f| {
            if f.is_empty() {
                None
            } else {
                Some((f.to_string(), ctx.project.as_str().to_string()))
            }
        }),
        options,
    };
    if let Some(u) = &patch.uri {
        if app.store.pool_uri_taken(u, name).await? {
            // An unknown pool is a 404 before it is a conflict.
            return Err(if app.store.get_pool(name).await?.is_some() { uri_in_use() } else { pool_not_found(name) });
        }
    }
    let pool = app.store.update_pool(name, &patch).await?.ok_or_else(|| pool_not_found(name))?;
    Ok(ApiResponse::json(StatusCode::OK, &Value::Object(pool_json(&pool, false))))
}

async fn delete_pool(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let name = ctx.id();
    if let Some(pool) = app.store.get_pool(name).await? {
        if let (Some(flavor), Some(project)) = (&pool.flavor, &pool.flavor_project) {
            if let Ok(project) = ProjectId::parse(project) {
                let siblings = app.store.pools_of_flavor(&project, flavor).await?;
                let last = siblings.iter().all(|p| p.name == pool.name);
                if last && app.store.flavor_exists(&project, flavor).await? {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "Unable to delete",
                        format!("This pool is used by flavors {flavor}; It cannot be deleted."),
                    ));
                }
            }
        }
        app.store.delete_pool(name).await?;
    }
    Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
}

// ---------------------------------------------------------------------------------------------------
// Flavors

fn capabilities(has_pools: bool) -> Value {
    if has_pools {
        json!(CAPABILITIES)
    } else {
        json!([])
    }
}

fn flavor_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Flavor {name} does not exist"))
}

/// The pool names of a `pool_list` (non-string entries can never name a pool).
fn pool_names(list: &[Value]) -> Result<Vec<String>, String> {
    list.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| schema::python_str(v))).collect()
}

/// The first pool of the list that does not exist, as Zaqar names it.
async fn first_missing_pool(app: &App, list: &[Value]) -> Result<Option<String>, ApiError> {
    let mut seen: Vec<&str> = Vec::new();
    for v in list {
        let Some(name) = v.as_str() else { return Ok(Some(schema::python_str(v))) };
        if seen.contains(&name) {
            continue;
        }
        if app.store.get_pool(name).await?.is_none() {
            return Ok(Some(name.to_string()));
        }
        seen.push(name);
    }
    Ok(None)
}

async fn list_flavors(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let q = &ctx.query;
    let marker = q.get("marker");
    let limit = limit(ctx, app.limits().max_flavors_per_page)?;
    let detailed = q.bool("detailed")?;
    let names = app.store.list_flavors(&ctx.project, marker, limit).await?;
    let pools = if names.is_empty() { vec![] } else { app.store.pools_of_project(&ctx.project).await? };
    let items: Vec<Value> = names
        .iter()
        .map(|name| {
            let mine: Vec<&str> =
                pools.iter().filter(|p| p.flavor.as_deref() == Some(name.as_str())).map(|p| p.name.as_str()).collect();
            let mut m = Map::new();
            m.insert("name".into(), json!(name));
            m.insert("href".into(), json!(flavor_href(name)));
            if !mine.is_empty() {
                m.insert("pool_list".into(), json!(mine));
            }
            if detailed == Some(true) {
                m.insert("capabilities".into(), capabilities(!mine.is_empty()));
            }
            Value::Object(m)
        })
        .collect();
    let links = page_links("/v2/flavors", q, &["limit", "detailed"], &[], names.last().cloned());
    Ok(ApiResponse::json(StatusCode::OK, &json!({"links": links, "flavors": items})))
}

async fn get_flavor(app: &App, ctx: &Context) -> Result<ApiResponse, ApiError> {
    let name = ctx.id();
    if !app.store.flavor_exists(&ctx.project, name).await? {
        return Err(flavor_not_found(name));
    }
    let pools: Vec<String> = app.store.pools_of_flavor(&ctx.project, name).await?.into_iter().map(|p| p.name).collect();
    let body = json!({
        "name": name,
        "capabilities": capabilities(!pools.is_empty()),
        "pool_list": pools,
        "href": flavor_href(name),
    });
    Ok(ApiResponse::json(StatusCode::OK, &body))
}

fn unable_to_create(description: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "Unable to create", description)
}

async fn put_flavor(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let name = ctx.id();
    let doc = load(req)?;
    let m = schema::object(&doc)?;
    schema::property(m, "pool_list", Rule::Array)?;
    schema::property(m, "capabilities", Rule::Object)?;
    schema::one_of_required(m, "pool_list")?;
    schema::no_other_keys(m, &["pool_list", "capabilities"])?;
    let list = m["pool_list"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return Err(unable_to_create("Bad Request"));
    }
    if name_too_long(name) {
        return Err(ApiError::invalid_api(format!("Flavor names may be at most {MAX_NAME_LEN} characters long.")));
    }
    let missing = |pool: String| {
        unable_to_create(format!("Flavor {name} could not be created, error:Pool {pool} does not exist"))
    };
    if let Some(pool) = first_missing_pool(app, &list).await? {
        return Err(missing(pool));
    }
    let pools = pool_names(&list).map_err(missing)?;
    match app.store.create_flavor(&ctx.project, name, &pools).await? {
        FlavorWrite::Done | FlavorWrite::MissingFlavor => {}
        FlavorWrite::MissingPool(pool) => return Err(missing(pool)),
    }
    Ok(ApiResponse::empty(StatusCode::CREATED).with_header("location", location("flavors", name)))
}

async fn patch_flavor(app: &App, ctx: &Context, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let name = ctx.id();
    let doc = load(req)?;
    if !mentions(&doc, "pool_list") {
        return Err(ApiError::invalid_body("`pool_list` needs to be specified"));
    }
    let m = schema::object(&doc)?;
    schema::property(m, "pool_list", Rule::Array)?;
    let list = m["pool_list"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return Err(unable_to_create("Bad Request"));
    }
    if !app.store.flavor_exists(&ctx.project, name).await? {
        return Err(flavor_not_found(name));
    }
    let update_fail = |pool: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "updatefail",
            format!("Flavor {name} cant be updated, error:Pool {pool} does not exist"),
        )
    };
    if let Some(pool) = first_missing_pool(app, &list).await? {
        return Err(update_fail(pool));
    }
    let pools = pool_names(&list).map_err(update_fail)?;
    match app.store.update_flavor(&ctx.project, name, &pools).await? {
        FlavorWrite::Done => {}
        FlavorWrite::MissingPool(pool) => return Err(update_fail(pool)),
        FlavorWrite::MissingFlavor => return Err(flavor_not_found(name)),
    }
    let body = json!({
        "name": name,
        "capabilities": capabilities(true),
        "pool_list": list,
        "href": flavor_href(name),
    });
    Ok(ApiResponse::json(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_uris() {
        assert!(is_storage_uri("dynamodb://zaqar-messages"));
        assert!(is_storage_uri("mongodb://127.0.0.1:27017"));
        assert!(is_storage_uri("REDIS://localhost:6379/0"));
        assert!(is_storage_uri("swift://u:p@host/v1"));
        assert!(!is_storage_uri("http://example.com"));
        assert!(!is_storage_uri("dynamodb://"));
        assert!(!is_storage_uri("dynamodb:table"));
        assert!(!is_storage_uri("dynamodb://a b"));
        assert!(!is_storage_uri("not a uri"));
    }

    #[test]
    fn locations_are_encoded() {
        assert_eq!(location("pools", "p 1#x"), "/v2/pools/p%201%23x");
        assert_eq!(location("flavors", "é"), "/v2/flavors/%C3%A9");
    }
}
