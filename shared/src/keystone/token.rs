//! What a validated Keystone token says about its bearer, read from Keystone's
//! `GET /v3/auth/tokens` answer, and the string map a Lambda authorizer hands to the functions.

use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// The bearer of a valid token: the fields Zaqar's policy uses (keystonemiddleware's `X-Project-Id`,
/// `X-Roles`, `X-User-Id`), and when the token stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    /// `None` for unscoped and domain-scoped tokens, which name no project.
    pub project_id: Option<String>,
    pub roles: Vec<String>,
    /// Epoch seconds.
    pub expires_at: i64,
}

/// The outcome of checking one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(Identity),
    /// Unknown, malformed, expired or revoked: keystonemiddleware's 401.
    Invalid,
    /// Keystone could not be asked (network, timeout, 5xx, our service credentials refused): 503, never cached.
    Unavailable,
}

#[derive(Deserialize)]
struct Validation {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    expires_at: String,
    user: Named,
    #[serde(default)]
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

/// Reads the body of a successful validation. `None` when it is not Keystone v3's token document.
pub fn parse_validation(body: &[u8]) -> Option<Identity> {
    let v: Validation = serde_json::from_slice(body).ok()?;
    let expires_at = crate::signing::parse_instant(&v.token.expires_at)?;
    if v.token.user.id.is_empty() {
        return None;
    }
    Some(Identity {
        user_id: v.token.user.id,
        project_id: v.token.project.map(|p| p.id).filter(|id| !id.is_empty()),
        roles: v.token.roles.into_iter().map(|r| r.name).filter(|n| !n.is_empty()).collect(),
        expires_at,
    })
}

/// Keys of the authorizer context (API Gateway HTTP API simple responses carry flat string values).
const VERDICT: &str = "keystone";
const PROJECT: &str = "project_id";
const USER: &str = "user_id";
const ROLES: &str = "roles";
const EXPIRES: &str = "expires_at";

impl Verdict {
    /// The verdict as the Lambda authorizer's `context`, which API Gateway passes to the functions in
    /// `requestContext.authorizer.lambda`.
    pub fn to_context(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        match self {
            Verdict::Valid(id) => {
                m.insert(VERDICT.into(), "valid".into());
                m.insert(USER.into(), id.user_id.clone());
                if let Some(p) = &id.project_id {
                    m.insert(PROJECT.into(), p.clone());
                }
                m.insert(ROLES.into(), id.roles.join(","));
                m.insert(EXPIRES.into(), id.expires_at.to_string());
            }
            Verdict::Invalid => {
                m.insert(VERDICT.into(), "invalid".into());
            }
            Verdict::Unavailable => {
                m.insert(VERDICT.into(), "unavailable".into());
            }
        }
        m
    }

    /// Reads an authorizer context; `None` when it holds no Keystone verdict (e.g. `/` or a pre-signed
    /// request, for which the authorizer decides nothing).
    pub fn from_context(fields: &HashMap<String, Value>) -> Option<Verdict> {
        let text = |k: &str| fields.get(k).and_then(|v| v.as_str().map(str::to_string).or_else(|| Some(v.to_string())));
        match text(VERDICT)?.as_str() {
            "valid" => Some(Verdict::Valid(Identity {
                user_id: text(USER).unwrap_or_default(),
                project_id: text(PROJECT).filter(|p| !p.is_empty()),
                roles: text(ROLES)
                    .unwrap_or_default()
                    .split(',')
                    .filter(|r| !r.is_empty())
                    .map(str::to_string)
                    .collect(),
                expires_at: text(EXPIRES).and_then(|e| e.parse().ok()).unwrap_or(0),
            })),
            "invalid" => Some(Verdict::Invalid),
            "unavailable" => Some(Verdict::Unavailable),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shape of keystone 30's answer to `GET /v3/auth/tokens?nocatalog`.
    const PROJECT_TOKEN: &str = r#"{"token": {"methods": ["password"],
        "user": {"domain": {"id": "default", "name": "Default"}, "id": "9d00890c", "name": "admin", "password_expires_at": null},
        "audit_ids": ["8Kj6noI5QTuLsOVO0j299A"], "expires_at": "2026-12-01T21:30:30.000000Z",
        "issued_at": "2026-12-01T20:30:30.000000Z",
        "project": {"domain": {"id": "default", "name": "Default"}, "id": "04b2da70", "name": "admin"},
        "is_domain": false,
        "roles": [{"id": "d1dd", "name": "manager"}, {"id": "7851", "name": "reader"}, {"id": "5df5", "name": "admin"}]}}"#;

    #[test]
    fn reads_project_roles_and_expiry() {
        let id = parse_validation(PROJECT_TOKEN.as_bytes()).unwrap();
        assert_eq!(id.user_id, "9d00890c");
        assert_eq!(id.project_id.as_deref(), Some("04b2da70"));
        assert_eq!(id.roles, ["manager", "reader", "admin"]);
        assert_eq!(id.expires_at, 1_796_160_630);
    }

    #[test]
    fn unscoped_tokens_have_no_project() {
        let body =
            r#"{"token": {"user": {"id": "u1"}, "expires_at": "2030-01-01T00:00:00Z", "methods": ["password"]}}"#;
        let id = parse_validation(body.as_bytes()).unwrap();
        assert_eq!((id.project_id, id.roles.len()), (None, 0));
    }

    #[test]
    fn rejects_what_is_not_a_token_document() {
        for body in [
            "",
            "{}",
            r#"{"error": {"code": 404}}"#,
            r#"{"token": {"user": {"id": "u"}, "expires_at": "soon"}}"#,
            r#"{"token": {"user": {"id": ""}, "expires_at": "2030-01-01T00:00:00Z"}}"#,
        ] {
            assert_eq!(parse_validation(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn context_round_trip() {
        let valid = Verdict::Valid(Identity {
            user_id: "u".into(),
            project_id: Some("p".into()),
            roles: vec!["member".into(), "admin".into()],
            expires_at: 42,
        });
        for v in [valid, Verdict::Invalid, Verdict::Unavailable] {
            let ctx: HashMap<String, Value> = v.to_context().into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            assert_eq!(Verdict::from_context(&ctx), Some(v));
        }
        assert_eq!(Verdict::from_context(&HashMap::new()), None);
        let numbers: HashMap<String, Value> =
            [("keystone".to_string(), Value::from("valid")), ("expires_at".into(), Value::from(7))].into();
        assert!(matches!(Verdict::from_context(&numbers), Some(Verdict::Valid(Identity { expires_at: 7, .. }))));
    }
}
