#!/usr/bin/env python3
"""Measure an unplanned failover on the local cluster (deploy/local/cluster.sh up).

Samples every node's /health/active every 10 ms, SIGKILLs the active through cluster.sh,
and reports: samples where two nodes answered 200 (must be 0), the time from the last 200 of
the old active to the first 200 of a new one, and the time from the kill to that first 200.
Then restarts the killed node. Usage: deploy/local/failover-probe.py [ROUNDS]
"""
import http.client
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = int(os.environ.get("TANDEM_LOCAL_PORT_BASE", "7000"))
PORTS = {"a": BASE + 101, "b": BASE + 102, "w": BASE + 103}


def active(node, conns):
    try:
        c = conns.get(node) or http.client.HTTPConnection("127.0.0.1", PORTS[node], timeout=0.05)
        conns[node] = c
        c.request("GET", "/health/active")
        r = c.getresponse()
        r.read()
        return r.status == 200
    except Exception:
        conns.pop(node, None)
        return False


def one_round():
    conns = {}
    before = [n for n in PORTS if active(n, conns)]
    if len(before) != 1:
        sys.exit(f"expected one active before the kill, found {before}")
    old = before[0]
    samples = []

    def sample(seconds):
        end = time.time() + seconds
        while time.time() < end:
            t = time.time()
            samples.append((t, {n: active(n, conns) for n in PORTS}))
            time.sleep(max(0.0, 0.01 - (time.time() - t)))

    sampler = threading.Thread(target=sample, args=(8,))
    sampler.start()
    time.sleep(0.5)
    killed_at = time.time()
    subprocess.run([os.path.join(HERE, "cluster.sh"), "kill", old], check=True, capture_output=True)
    sampler.join()
    overlap = sum(1 for _, s in samples if sum(s.values()) > 1)
    last_old = max([t for t, s in samples if s[old]] or [killed_at])
    new = [t for t, s in samples if t > killed_at and any(v for n, v in s.items() if n != old)]
    subprocess.run([os.path.join(HERE, "cluster.sh"), "restart", old], check=True, capture_output=True)
    if not new:
        return old, overlap, None, None
    return old, overlap, (new[0] - last_old) * 1000, (new[0] - killed_at) * 1000


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    results = []
    for _ in range(rounds):
        old, overlap, gap, after_kill = one_round()
        results.append(after_kill)
        shown = "no new active within 8 s" if after_kill is None else f"gap {gap:.0f} ms, new active {after_kill:.0f} ms after the kill"
        print(f"killed {old}: overlap samples {overlap}; {shown}")
        time.sleep(2)
    done = sorted(r for r in results if r is not None)
    if done:
        print(f"{len(done)}/{rounds} rounds: min {done[0]:.0f} ms, median {done[len(done) // 2]:.0f} ms, max {done[-1]:.0f} ms")


if __name__ == "__main__":
    main()
