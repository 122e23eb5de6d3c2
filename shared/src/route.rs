//! Routing on method and raw path, so the same code serves API Gateway (REST and HTTP APIs, any stage),
//! Function URLs, `cargo lambda watch` and the local server.

use http::Method;
use percent_encoding::percent_decode_str;

/// The API resource groups; each is one Lambda function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    Health,
    Queues,
    Messages,
    Claims,
    Subscriptions,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Versions,
    Home,
    Ping,
    Health,
    QueueList,
    Queue,
    QueueStats,
    QueuePurge,
    QueueShare,
    Messages,
    Message,
    Claims,
    Claim,
    Subscriptions,
    Subscription,
    SubscriptionConfirm,
    PoolList,
    Pool,
    FlavorList,
    Flavor,
}

impl Group {
    pub const ALL: [Group; 6] =
        [Group::Health, Group::Queues, Group::Messages, Group::Claims, Group::Subscriptions, Group::Admin];

    /// The function's name: `zaqar-<name>` binary, `<Name>Function` in `infra/template.yaml`.
    pub fn name(self) -> &'static str {
        match self {
            Group::Health => "health",
            Group::Queues => "queues",
            Group::Messages => "messages",
            Group::Claims => "claims",
            Group::Subscriptions => "subscriptions",
            Group::Admin => "admin",
        }
    }
}

impl Resource {
    pub const ALL: [Resource; 20] = {
        use Resource::*;
        [
            Versions,
            Home,
            Ping,
            Health,
            QueueList,
            Queue,
            QueueStats,
            QueuePurge,
            QueueShare,
            Messages,
            Message,
            Claims,
            Claim,
            Subscriptions,
            Subscription,
            SubscriptionConfirm,
            PoolList,
            Pool,
            FlavorList,
            Flavor,
        ]
    };

    /// The path with its variables in braces, as the API's route table (and the logs) name it.
    pub fn template(self) -> &'static str {
        use Resource::*;
        match self {
            Versions => "/",
            Home => "/v2/",
            Ping => "/v2/ping",
            Health => "/v2/health",
            QueueList => "/v2/queues",
            Queue => "/v2/queues/{queue_name}",
            QueueStats => "/v2/queues/{queue_name}/stats",
            QueuePurge => "/v2/queues/{queue_name}/purge",
            QueueShare => "/v2/queues/{queue_name}/share",
            Messages => "/v2/queues/{queue_name}/messages",
            Message => "/v2/queues/{queue_name}/messages/{message_id}",
            Claims => "/v2/queues/{queue_name}/claims",
            Claim => "/v2/queues/{queue_name}/claims/{claim_id}",
            Subscriptions => "/v2/queues/{queue_name}/subscriptions",
            Subscription => "/v2/queues/{queue_name}/subscriptions/{subscription_id}",
            SubscriptionConfirm => "/v2/queues/{queue_name}/subscriptions/{subscription_id}/confirm",
            PoolList => "/v2/pools",
            Pool => "/v2/pools/{pool}",
            FlavorList => "/v2/flavors",
            Flavor => "/v2/flavors/{flavor}",
        }
    }

    pub fn group(self) -> Group {
        use Resource::*;
        match self {
            Versions | Home | Ping | Health => Group::Health,
            QueueList | Queue | QueueStats | QueuePurge | QueueShare => Group::Queues,
            Messages | Message => Group::Messages,
            Claims | Claim => Group::Claims,
            Subscriptions | Subscription | SubscriptionConfirm => Group::Subscriptions,
            PoolList | Pool | FlavorList | Flavor => Group::Admin,
        }
    }

    /// Methods the resource implements, in falcon's `Allow` order (sorted, OPTIONS last).
    pub fn allowed(self) -> &'static [&'static str] {
        use Resource::*;
        match self {
            Versions | Home | Health | QueueList | QueueStats | PoolList | FlavorList => &["GET"],
            Ping => &["GET", "HEAD"],
            Queue | Pool | Flavor => &["DELETE", "GET", "PATCH", "PUT"],
            QueuePurge | QueueShare | Claims => &["POST"],
            Messages => &["DELETE", "GET", "POST"],
            Message => &["DELETE", "GET"],
            Claim | Subscription => &["DELETE", "GET", "PATCH"],
            Subscriptions => &["GET", "POST"],
            SubscriptionConfirm => &["PUT"],
        }
    }

    pub fn allow_header(self) -> String {
        let mut s = self.allowed().join(", ");
        s.push_str(", OPTIONS");
        s
    }

    pub fn allows(self, method: &Method) -> bool {
        self.allowed().contains(&method.as_str())
    }

    /// Whether the route carries a `{queue_name}` that the transport validates before the handler.
    pub fn has_queue(self) -> bool {
        !matches!(self.group(), Group::Health | Group::Admin) && self != Resource::QueueList
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub resource: Resource,
    /// Decoded `{queue_name}` (unvalidated) where the path has one.
    pub queue: Option<String>,
    /// Decoded message, claim, subscription, pool or flavor id.
    pub id: Option<String>,
}

fn decode(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// Finds the route for a raw path. `None` is falcon's 404 (no route).
pub fn route(path: &str) -> Option<Route> {
    // Runs of slashes are tolerated ("//v2/queues"), a trailing slash is significant ("/v2/" vs "/v2").
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    if collapsed.is_empty() || collapsed == "/" {
        return Some(Route { resource: Resource::Versions, queue: None, id: None });
    }
    let segs: Vec<&str> = collapsed.strip_prefix('/')?.split('/').collect();
    let r = |resource, queue: Option<&str>, id: Option<&str>| {
        Some(Route { resource, queue: queue.map(decode), id: id.map(decode) })
    };
    use Resource::*;
    match segs.as_slice() {
        ["v2", ""] => r(Home, None, None),
        ["v2", "ping"] => r(Ping, None, None),
        ["v2", "health"] => r(Health, None, None),
        ["v2", "queues"] => r(QueueList, None, None),
        ["v2", "pools"] => r(PoolList, None, None),
        ["v2", "pools", p] if !p.is_empty() => r(Pool, None, Some(p)),
        ["v2", "flavors"] => r(FlavorList, None, None),
        ["v2", "flavors", f] if !f.is_empty() => r(Flavor, None, Some(f)),
        ["v2", "queues", q, rest @ ..] if !q.is_empty() => match rest {
            [] => r(Queue, Some(q), None),
            ["stats"] => r(QueueStats, Some(q), None),
            ["purge"] => r(QueuePurge, Some(q), None),
            ["share"] => r(QueueShare, Some(q), None),
            ["messages"] => r(Messages, Some(q), None),
            ["messages", m] if !m.is_empty() => r(Message, Some(q), Some(m)),
            ["claims"] => r(Claims, Some(q), None),
            ["claims", c] if !c.is_empty() => r(Claim, Some(q), Some(c)),
            ["subscriptions"] => r(Subscriptions, Some(q), None),
            ["subscriptions", s] if !s.is_empty() => r(Subscription, Some(q), Some(s)),
            ["subscriptions", s, "confirm"] if !s.is_empty() => r(SubscriptionConfirm, Some(q), Some(s)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_zaqar_paths() {
        assert_eq!(route("/").unwrap().resource, Resource::Versions);
        assert_eq!(route("/v2/").unwrap().resource, Resource::Home);
        assert!(route("/v2").is_none());
        assert!(route("/v2/nope").is_none());
        assert!(route("/v2/queues/").is_none());
        let m = route("/v2/queues/q1/messages/abc").unwrap();
        assert_eq!((m.resource, m.queue.as_deref(), m.id.as_deref()), (Resource::Message, Some("q1"), Some("abc")));
        assert_eq!(route("//v2/queues").unwrap().resource, Resource::QueueList);
        assert_eq!(route("/v2/queues/bad%20name").unwrap().queue.as_deref(), Some("bad name"));
        assert_eq!(route("/v2/queues/q/subscriptions/s/confirm").unwrap().resource, Resource::SubscriptionConfirm);
    }

    #[test]
    fn every_template_routes_to_its_resource() {
        for resource in Resource::ALL {
            let path = resource.template().replace("{queue_name}", "q").replace(['{', '}'], "");
            assert_eq!(route(&path).map(|r| r.resource), Some(resource), "{path}");
        }
    }

    #[test]
    fn allow_header_matches_falcon() {
        assert_eq!(Resource::Queue.allow_header(), "DELETE, GET, PATCH, PUT, OPTIONS");
        assert!(Resource::Ping.allows(&Method::HEAD));
        assert!(!Resource::Queue.allows(&Method::HEAD));
    }
}
