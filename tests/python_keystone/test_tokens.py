"""What keystonemiddleware does in front of Zaqar: 401 for a missing, bad, expired or revoked token (its
body and WWW-Authenticate header), projects from the token only, and Zaqar's admin API for the admin
role only."""
import datetime
import time
import uuid

import requests

from conftest import CACHE_SECONDS, URL, Caller, caller_for

UNAUTHORIZED = {"error": {"code": 401, "title": "Unauthorized",
                          "message": "The request you have made requires authentication."}}


def assert_unauthorized(r, keystone_url):
    assert r.status_code == 401, r.text
    assert r.json() == UNAUTHORIZED
    assert r.headers["WWW-Authenticate"] == 'Keystone uri="%s"' % keystone_url.rstrip("/")


def test_missing_and_bad_tokens(demo_env):
    for token in (None, "gAAAAABnot-a-token", "x" * 10000):
        r = Caller(token, None).request("GET", "/v2/queues")
        assert_unauthorized(r, demo_env["OS_AUTH_URL"])
    # Before routing, as in Zaqar: an unknown path without a token is 401 too.
    assert_unauthorized(Caller(None, None).request("GET", "/v2/nowhere"), demo_env["OS_AUTH_URL"])
    # Version discovery needs none.
    assert requests.get(URL + "/", timeout=10).status_code == 300


def test_expired_token(demo_env, demo):
    # An application credential that expires in a few seconds yields a token that expires with it.
    user_id = requests.get(demo_env["OS_AUTH_URL"] + "/auth/tokens", timeout=10,
                           headers={"X-Auth-Token": demo.token, "X-Subject-Token": demo.token}).json()["token"]["user"]["id"]
    expires = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(seconds=4)
    body = {"application_credential": {"name": "short-" + uuid.uuid4().hex[:8],
                                       "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S")}}
    r = requests.post("%s/users/%s/application_credentials" % (demo_env["OS_AUTH_URL"], user_id), json=body,
                      headers={"X-Auth-Token": demo.token}, timeout=10)
    assert r.status_code == 201, r.text
    cred = r.json()["application_credential"]
    auth = {"auth": {"identity": {"methods": ["application_credential"],
                                  "application_credential": {"id": cred["id"], "secret": cred["secret"]}}}}
    r = requests.post(demo_env["OS_AUTH_URL"] + "/auth/tokens", json=auth, timeout=10)
    assert r.status_code == 201, r.text
    short = Caller(r.headers["X-Subject-Token"], demo.project_id)
    assert short.request("GET", "/v2/queues").status_code == 200
    # The server remembers this validation for the revocation bound at most, and never past the expiry.
    assert CACHE_SECONDS > 4, "the expiry must come before the revocation bound for this test to mean anything"
    time.sleep(max(0.0, (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) + 0.5)
    assert_unauthorized(short.request("GET", "/v2/queues"), demo_env["OS_AUTH_URL"])


def test_revoked_token_stops_working_within_the_bound(demo_env, demo_env_admin_token):
    victim = caller_for(demo_env)
    assert victim.request("GET", "/v2/queues").status_code == 200
    r = requests.delete(demo_env["OS_AUTH_URL"] + "/auth/tokens", timeout=10,
                        headers={"X-Auth-Token": demo_env_admin_token, "X-Subject-Token": victim.token})
    assert r.status_code == 204
    revoked_at = time.monotonic()
    while True:
        r = victim.request("GET", "/v2/queues")
        if r.status_code == 401:
            break
        assert r.status_code == 200
        assert time.monotonic() - revoked_at < CACHE_SECONDS + 2, "still accepted past the revocation bound"
        time.sleep(0.25)
    assert_unauthorized(r, demo_env["OS_AUTH_URL"])


def test_projects_are_isolated(demo, alt):
    assert demo.project_id != alt.project_id
    name = "iso-" + uuid.uuid4().hex[:12]
    assert demo.request("PUT", "/v2/queues/" + name).status_code == 201
    r = demo.request("POST", "/v2/queues/%s/messages" % name, json={"messages": [{"body": "secret", "ttl": 300}]})
    assert r.status_code == 201
    assert name in [q["name"] for q in demo.request("GET", "/v2/queues").json()["queues"]]
    other = alt.request("GET", "/v2/queues")
    assert name not in [q["name"] for q in (other.json()["queues"] if other.status_code == 200 else [])]
    r = alt.request("GET", "/v2/queues/%s/messages?echo=true" % name)
    assert r.status_code == 200 and r.json().get("messages", []) == []
    assert alt.request("GET", "/v2/queues/%s/stats" % name).json()["messages"]["total"] == 0
    # Naming the other project in a header does not reach it.
    r = alt.request("GET", "/v2/queues/%s/messages?echo=true" % name, {"X-Project-ID": demo.project_id})
    assert r.status_code == 403
    assert r.json()["title"] == "Not authorized"
    # The token's own project in the header is fine (python-zaqarclient may send it).
    assert demo.request("GET", "/v2/queues", {"X-Project-ID": demo.project_id}).status_code == 200


def test_admin_api_needs_the_admin_role(demo, admin_caller):
    # Zaqar's policy: health and pools are admin-only (listing flavors is open to every project).
    for path in ("/v2/health", "/v2/pools"):
        r = demo.request("GET", path, {"X-Roles": "admin"})
        assert r.status_code == 403, (path, r.text)
        assert r.json()["title"] == "Not authorized"
        assert admin_caller.request("GET", path).status_code == 200, path
