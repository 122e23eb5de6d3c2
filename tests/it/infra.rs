//! `infra/template.yaml` held to the code: the fan-out's stream filter is [`zaqar::stream`]'s, and
//! the HTTP API sends every route the router knows to the function of its group (and only such
//! routes), as the local server's dispatch does.

use http::Method;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};
use zaqar::route::{route, Group, Resource};
use zaqar::stream::FANOUT_FILTERS;

fn template() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    let text = std::fs::read_to_string(path).expect("infra/template.yaml");
    YamlLoader::load_from_str(&text).expect("the template is YAML").remove(0)
}

/// `<Name>Function`, the template's resource for a group.
fn function_of(group: Group) -> String {
    let name = group.name();
    format!("{}{}Function", name[..1].to_ascii_uppercase(), &name[1..])
}

/// One route of the API's OpenAPI document: path, method (`None` = any) and the function it calls.
#[derive(Debug)]
struct ApiRoute {
    path: String,
    method: Option<Method>,
    function: String,
}

fn api_routes(template: &Yaml) -> Vec<ApiRoute> {
    let paths = &template["Resources"]["HttpApi"]["Properties"]["DefinitionBody"]["paths"];
    let mut routes = Vec::new();
    for (path, operations) in paths.as_hash().expect("paths") {
        for (method, operation) in operations.as_hash().expect("operations") {
            let uri = operation["x-amazon-apigateway-integration"]["uri"].as_str().expect("integration uri");
            let function = uri.split("${").find_map(|s| s.split_once(".Arn}")).expect("a function ARN").0;
            let method = match method.as_str().unwrap() {
                "x-amazon-apigateway-any-method" => None,
                m => Some(Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap()),
            };
            routes.push(ApiRoute { path: path.as_str().unwrap().to_string(), method, function: function.into() });
        }
    }
    routes
}

/// The route API Gateway picks: a full match (a `{var}` is any one non-empty segment), else the
/// greedy `/{proxy+}`.
fn pick<'a>(routes: &'a [ApiRoute], method: &Method, path: &str) -> &'a ApiRoute {
    let method_ok = |r: &ApiRoute| r.method.as_ref().is_none_or(|m| m == method);
    let segments: Vec<&str> = path.split('/').collect();
    let full = routes.iter().filter(|r| method_ok(r) && r.path != "/{proxy+}").find(|r| {
        let pattern: Vec<&str> = r.path.split('/').collect();
        pattern.len() == segments.len()
            && pattern.iter().zip(&segments).all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
    });
    full.or_else(|| routes.iter().find(|r| r.path == "/{proxy+}" && method_ok(r))).expect("a catch-all route")
}

/// A concrete path for a template (`{var}` → a sample value).
fn sample(template: &str) -> String {
    template.split('/').map(|s| if s.starts_with('{') { "x1" } else { s }).collect::<Vec<_>>().join("/")
}

#[test]
fn stream_filter_is_the_shared_one() {
    let t = template();
    let filters = &t["Resources"]["FanoutFunction"]["Properties"]["Events"]["MessageInserts"]["Properties"]
        ["FilterCriteria"]["Filters"];
    let patterns: Vec<Value> = filters
        .as_vec()
        .expect("FilterCriteria.Filters")
        .iter()
        .map(|f| serde_json::from_str(f["Pattern"].as_str().expect("Pattern")).expect("Pattern is JSON"))
        .collect();
    let expected: Vec<Value> = FANOUT_FILTERS.iter().map(|f| f.pattern()).collect();
    assert_eq!(patterns, expected);
}

#[test]
fn every_route_reaches_its_groups_function() {
    let routes = api_routes(&template());
    for resource in Resource::ALL {
        let path = sample(resource.template());
        for method in resource.allowed().iter().chain(&["OPTIONS"]) {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let picked = pick(&routes, &method, &path);
            assert_eq!(picked.function, function_of(resource.group()), "{method} {path} goes to {picked:?}");
        }
    }
}

#[test]
fn every_template_route_is_one_the_router_sends_there() {
    let routes = api_routes(&template());
    let functions: Vec<String> = Group::ALL.into_iter().map(function_of).collect();
    for r in &routes {
        assert!(functions.contains(&r.function), "{r:?} calls an unknown function");
        if r.path == "/{proxy+}" {
            // Unknown paths: Zaqar's 404 comes from the health function, as in the local server.
            assert_eq!(r.function, function_of(Group::Health));
            continue;
        }
        // A path the router does not know is answered 404 by the health function.
        let known = route(&sample(&r.path)).map(|found| found.resource);
        let group = known.map_or(Group::Health, Resource::group);
        assert_eq!(r.function, function_of(group), "{r:?} is routed to {known:?}");
        if let (Some(resource), Some(method)) = (known, &r.method) {
            assert!(resource.allows(method), "{r:?}: {resource:?} has no {method}");
        }
    }
}
