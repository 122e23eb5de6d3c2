"""Keystone-mode tests: a real local Keystone (localstack/keystone) and the API server in keystone mode,
both started by tests/keystone, which passes:

- ZAQAR_URL: the API server;
- ZAQAR_OPENRC: the demo user's OS_* variables (member of projects demo and alt_demo);
- ZAQAR_ADMIN_OPENRC: the admin's (role admin on project admin);
- ZAQAR_KEYSTONE_CACHE_SECONDS: the server's revocation bound.
"""
import os
import uuid

import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

URL = os.environ.get("ZAQAR_URL", "http://127.0.0.1:8888")
CACHE_SECONDS = int(os.environ.get("ZAQAR_KEYSTONE_CACHE_SECONDS", "60"))


def read_openrc(path):
    env = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export "):].split("=", 1)
                env[key] = value
    return env


@pytest.fixture(scope="session")
def demo_env():
    return read_openrc(os.environ["ZAQAR_OPENRC"])


@pytest.fixture(scope="session")
def admin_env():
    return read_openrc(os.environ["ZAQAR_ADMIN_OPENRC"])


def keystone_session(env, project=None):
    auth = v3.Password(auth_url=env["OS_AUTH_URL"], username=env["OS_USERNAME"], password=env["OS_PASSWORD"],
                       user_domain_name=env["OS_USER_DOMAIN_NAME"],
                       project_name=project or env["OS_PROJECT_NAME"],
                       project_domain_name=env["OS_PROJECT_DOMAIN_NAME"])
    return ks_session.Session(auth=auth)


@pytest.fixture(scope="session")
def admin(admin_env):
    """An admin Keystone session (to revoke tokens, read ids)."""
    return keystone_session(admin_env)


class Caller:
    """Plain HTTP to the API with one Keystone token."""

    def __init__(self, token, project_id):
        self.token = token
        self.project_id = project_id
        self.client_id = str(uuid.uuid4())

    def headers(self, extra=None):
        h = {"Client-ID": self.client_id}
        if self.token is not None:
            h["X-Auth-Token"] = self.token
        h.update(extra or {})
        return h

    def request(self, method, path, extra_headers=None, **kw):
        return requests.request(method, URL + path, headers=self.headers(extra_headers), timeout=15, **kw)


def caller_for(env, project=None):
    s = keystone_session(env, project)
    return Caller(s.get_token(), s.get_project_id())


@pytest.fixture
def demo(demo_env):
    return caller_for(demo_env)


@pytest.fixture
def alt(demo_env):
    """The same demo user, signed in to its second project."""
    return caller_for(demo_env, "alt_demo")


@pytest.fixture(scope="session")
def demo_env_admin_token(admin):
    return admin.get_token()


@pytest.fixture
def admin_caller(admin_env):
    return caller_for(admin_env)
