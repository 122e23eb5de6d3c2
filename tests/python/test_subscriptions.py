"""python-zaqarclient (PyPI, noauth backend) against the locally running service: subscriptions,
and one notification delivered through the local stack's stream poller to a webhook on 127.0.0.1."""
import http.server
import json
import os
import threading
import time
import uuid

import pytest
import requests
from zaqarclient.queues.v2 import client as zclient

URL = os.environ.get("ZAQAR_URL", "http://127.0.0.1:8888")


@pytest.fixture
def project():
    return "py-" + uuid.uuid4().hex


@pytest.fixture
def client(project):
    conf = {"auth_opts": {"backend": "noauth", "options": {"os_project_id": project}}}
    return zclient.Client(URL, version=2, conf=conf)


@pytest.fixture
def receiver():
    """A webhook on 127.0.0.1 that keeps every JSON document posted to it."""
    got = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            got.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/hook" % server.server_address[1], got
    server.shutdown()


def test_subscription_lifecycle(client):
    sub = client.subscription("pysubq", subscriber="http://127.0.0.1:18901/a", ttl=3600, options={"k": "v"})
    assert sub.id
    assert sub.subscriber == "http://127.0.0.1:18901/a"
    assert sub.ttl == 3600
    assert sub.options == {"k": "v"}
    assert sub.confirmed is False
    other = client.subscription("pysubq", subscriber="mailto:ops@example.com", ttl=600)

    listed = {s.id: s for s in client.subscriptions("pysubq")}
    assert set(listed) == {sub.id, other.id}
    assert listed[sub.id].subscriber == "http://127.0.0.1:18901/a"
    assert listed[other.id].ttl == 600

    fetched = client.subscription("pysubq", id=sub.id, auto_create=False)
    fetched.ensure_exists()
    assert fetched.options == {"k": "v"}

    sub.update({"ttl": 7200, "options": {"k": "v2"}})
    again = client.subscription("pysubq", id=sub.id)
    assert again.ttl == 7200
    assert again.options == {"k": "v2"}

    sub.delete()
    other.delete()
    assert list(client.subscriptions("pysubq")) == []


def test_invalid_subscriber_is_refused(client):
    from zaqarclient.transport import errors

    with pytest.raises(errors.MalformedRequest):
        client.subscription("pysubq", subscriber="ftp://127.0.0.1/x", ttl=3600)
    with pytest.raises(errors.MalformedRequest):
        client.subscription("pysubq", subscriber="http://169.254.169.254/latest", ttl=3600)


def test_message_reaches_webhook(client, project, receiver):
    url, got = receiver
    sub = client.subscription("pyhookq", subscriber=url, ttl=3600)
    # Confirm directly (works whether or not the server requires confirmation).
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}
    r = requests.put("%s/v2/queues/pyhookq/subscriptions/%s/confirm" % (URL, sub.id),
                     json={"confirmed": True}, headers=headers, timeout=10)
    assert r.status_code == 204
    client.queue("pyhookq").post({"body": {"event": "py"}, "ttl": 300})
    deadline = time.time() + 15
    while time.time() < deadline:
        notes = [d for d in got if d.get("Message_Type") == "Notification"]
        if notes:
            break
        time.sleep(0.2)
    assert notes == [{"ttl": 300, "body": {"event": "py"}, "Message_Type": "Notification", "queue_name": "pyhookq"}]
