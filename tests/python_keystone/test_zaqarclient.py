"""python-zaqarclient with a Keystone session (the endpoint comes from the catalog), and what Zaqar lets
through without a token: pre-signed URLs (zaqarclient's signed-url backend) and subscription
confirmations."""
import http.server
import json
import threading
import time
import uuid

import pytest
import requests
from zaqarclient.queues.v2 import client as zclient

from conftest import URL, keystone_session


@pytest.fixture
def client(demo_env):
    return zclient.Client(version=2, session=keystone_session(demo_env),
                          conf={"auth_opts": {"backend": "keystone", "options": {}}})


def test_post_claim_delete_with_a_keystone_session(client):
    name = "ks-" + uuid.uuid4().hex[:12]
    queue = client.queue(name, force_create=True)
    queue.post([{"body": {"n": 1}, "ttl": 300}, {"body": {"n": 2}, "ttl": 300}])
    claim = queue.claim(ttl=60, grace=60)
    claimed = list(claim)
    assert sorted(m.body["n"] for m in claimed) == [1, 2]
    for m in claimed:
        m.delete()
    assert queue.stats["messages"]["total"] == 0
    queue.delete()


def test_pre_signed_urls_need_no_token(client, demo):
    name = "signed-" + uuid.uuid4().hex[:12]
    client.queue(name, force_create=True)
    signed = client.queue(name, auto_create=False).signed_url(paths=["messages"], methods=["GET", "POST"],
                                                              ttl_seconds=600)
    assert signed["project"] == demo.project_id
    options = {k: signed[k] for k in ("expires", "methods", "paths", "signature")}
    options["os_project_id"] = signed["project"]
    anonymous = zclient.Client(URL, version=2, conf={"auth_opts": {"backend": "signed-url", "options": options}})
    shared = anonymous.queue(name, auto_create=False)
    shared.post({"body": {"via": "signed url"}, "ttl": 300})
    assert [m.body for m in shared.messages(echo=True)] == [{"via": "signed url"}]
    # A forged signature is Zaqar's bare 404, not a 401: the token check never applies to signed requests.
    forged = dict(zip(["URL-Signature", "URL-Methods", "URL-Paths", "URL-Expires", "X-Project-ID"],
                      ["0" * 64, "GET", ",".join(signed["paths"]), signed["expires"], signed["project"]]))
    forged["Client-ID"] = str(uuid.uuid4())
    r = requests.get("%s/v2/queues/%s/messages" % (URL, name), headers=forged, timeout=10)
    assert r.status_code == 404


@pytest.fixture
def receiver():
    """A webhook on 127.0.0.1 that keeps every JSON document posted to it."""
    got = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/hook" % server.server_address[1], got
    server.shutdown()


def test_subscription_confirmation_needs_no_token(client, receiver):
    url, got = receiver
    name = "confirm-" + uuid.uuid4().hex[:12]
    sub = client.subscription(name, subscriber=url, ttl=3600)
    deadline = time.time() + 20
    docs = []
    while time.time() < deadline and not docs:
        docs = [d for d in got if d.get("Message_Type") == "SubscriptionConfirmation"]
        time.sleep(0.2)
    assert docs, "no confirmation request reached the webhook"
    doc = docs[0]
    headers = {k: doc[k] for k in ("URL-Signature", "URL-Methods", "URL-Paths", "URL-Expires", "X-Project-ID")}
    headers["Client-ID"] = str(uuid.uuid4())
    r = requests.put(URL + doc["URL-Paths"], json=doc["SubscribeBody"], headers=headers, timeout=10)
    assert r.status_code == 204, r.text
    confirmed = client.subscription(name, id=sub.id, auto_create=False)
    confirmed.ensure_exists()
    assert confirmed.confirmed is True
