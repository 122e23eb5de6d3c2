"""The `openstack` CLI (python-openstackclient + python-zaqarclient's plugin) as a user runs it: OS_*
variables of the local Keystone's demo user, the service found through the catalog (type messaging)."""
import json
import os
import subprocess
import sys
import uuid

OPENSTACK = os.path.join(os.path.dirname(sys.executable), "openstack")


def openstack(demo_env, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(demo_env)
    out = subprocess.run([OPENSTACK, "messaging", *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_queue_post_claim_delete(demo_env, demo):
    queue = "cli-" + uuid.uuid4().hex[:12]
    assert json.loads(openstack(demo_env, "queue", "create", queue, "-f", "json")) == {"Name": queue}
    openstack(demo_env, "message", "post", queue, json.dumps([{"body": {"event": "cli"}, "ttl": 300}]))
    claimed = json.loads(openstack(demo_env, "claim", "create", queue, "--ttl", "60", "--grace", "60", "-f", "json"))
    assert [m["Messages"] for m in claimed] == [{"event": "cli"}]
    # python-zaqarclient's plugin has no `message delete`: delete the claimed message with the same user's
    # token over HTTP, as the claim's holder.
    path = "/v2/queues/%s/messages/%s?claim_id=%s" % (queue, claimed[0]["Message_ID"], claimed[0]["Claim_ID"])
    assert demo.request("DELETE", path).status_code == 204
    stats = demo.request("GET", "/v2/queues/%s/stats" % queue).json()
    assert stats["messages"]["total"] == 0
    # The queue was made in the token's project (the demo project), not in one named by a header.
    listed = demo.request("GET", "/v2/queues").json()
    assert queue in [q["name"] for q in listed["queues"]]
