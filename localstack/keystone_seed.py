"""Seeds a freshly bootstrapped local Keystone through its v3 API (run by localstack/keystone with the
Keystone venv's Python): the demo user and its two projects, the service user the API validates tokens
with, and the `messaging` service whose endpoints point at the local Zaqar API.

Environment: KEYSTONE_URL (…/v3), ADMIN_PASSWORD, DEMO_PASSWORD, SERVICE_PASSWORD, ZAQAR_URL.
"""
import os
import sys

import requests

KEYSTONE = os.environ["KEYSTONE_URL"].rstrip("/")
DEFAULT = {"id": "default"}


def admin_session():
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": DEFAULT, "password": os.environ["ADMIN_PASSWORD"]}}},
        "scope": {"project": {"name": "admin", "domain": DEFAULT}}}}
    r = requests.post(KEYSTONE + "/auth/tokens", json=body, timeout=30)
    r.raise_for_status()
    s = requests.Session()
    s.headers["X-Auth-Token"] = r.headers["X-Subject-Token"]
    return s


def call(s, method, path, **kw):
    r = s.request(method, KEYSTONE + path, timeout=30, **kw)
    if r.status_code >= 400:
        sys.exit("keystone_seed: %s %s -> %d %s" % (method, path, r.status_code, r.text))
    return r.json() if r.content else None


def main():
    s = admin_session()
    roles = {r["name"]: r["id"] for r in call(s, "GET", "/roles")["roles"]}

    def project(name, description):
        body = {"project": {"name": name, "domain_id": "default", "description": description}}
        return call(s, "POST", "/projects", json=body)["project"]["id"]

    def user(name, password, project_id):
        body = {"user": {"name": name, "domain_id": "default", "password": password,
                         "default_project_id": project_id}}
        return call(s, "POST", "/users", json=body)["user"]["id"]

    def grant(project_id, user_id, role):
        call(s, "PUT", "/projects/%s/users/%s/roles/%s" % (project_id, user_id, roles[role]))

    demo = project("demo", "the demo user's first project")
    alt = project("alt_demo", "the demo user's second project")
    service = project("service", "service users")
    demo_user = user("demo", os.environ["DEMO_PASSWORD"], demo)
    grant(demo, demo_user, "member")
    grant(alt, demo_user, "member")
    zaqar = user("zaqar", os.environ["SERVICE_PASSWORD"], service)
    # Keystone's policy lets the `service` role validate other users' tokens.
    grant(service, zaqar, "service")

    svc = call(s, "POST", "/services", json={"service": {
        "type": "messaging", "name": "zaqar", "description": "Zaqar v2 on DynamoDB (local)"}})["service"]["id"]
    for interface in ("public", "internal", "admin"):
        call(s, "POST", "/endpoints", json={"endpoint": {
            "service_id": svc, "interface": interface, "region_id": "RegionOne",
            "url": os.environ["ZAQAR_URL"]}})


if __name__ == "__main__":
    main()
