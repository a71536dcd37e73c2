#!/usr/bin/env python3
"""Bounded load test of `nla serve` on loopback: N /generate requests, C at a time; no errors allowed, and the
server's resident memory must stay stable (RSS after the run within 10 % + 64 MB of RSS after the first
quarter, the warm-up). Usage: serve_load.py URL PID [N=200] [C=8]"""
import concurrent.futures as cf
import json
import sys
import time
import urllib.request

url, pid = sys.argv[1].rstrip("/"), int(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
c = int(sys.argv[4]) if len(sys.argv) > 4 else 8
assert url.startswith("http://127.0.0.1:") or url.startswith("http://localhost:"), "loopback only"


def rss_mb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


prompts = ["The capital of France is", "Once upon a time", "The quick brown fox", "In mathematics, a prime number",
           "Water boils at", "The largest planet is", "My favourite colour is", "Swift is a programming language"]


def one(i):
    body = json.dumps({"text": prompts[i % len(prompts)] + f" (request {i})",
                       "sampling_params": {"temperature": 0, "max_new_tokens": 8}}).encode()
    req = urllib.request.Request(url + "/generate", data=body, headers={"Content-Type": "application/json"})
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=300) as r:
        out = json.loads(r.read())
        assert r.status == 200 and isinstance(out.get("output_ids"), list) and out["meta_info"]["completion_tokens"] >= 1, out
        return time.time() - t0, out["meta_info"]["completion_tokens"]


start = time.time()
lat, toks, errors, rss = [], 0, [], {}
rss["start"] = rss_mb()
with cf.ThreadPoolExecutor(max_workers=c) as ex:
    futs = [ex.submit(one, i) for i in range(n)]
    for k, f in enumerate(futs):
        try:
            t, m = f.result()
            lat.append(t); toks += m
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        if k == n // 4:
            rss["warm"] = rss_mb()
rss["end"] = rss_mb()
wall = time.time() - start
lat.sort()
print(f"load: {n} requests, {c} at a time: {len(errors)} errors, {wall:.1f} s, {n / wall:.2f} req/s, {toks / wall:.1f} tok/s; "
      f"latency p50 {lat[len(lat) // 2]:.2f} s p95 {lat[int(len(lat) * 0.95) - 1]:.2f} s; "
      f"RSS start {rss['start']:.0f} MB, after warm-up {rss['warm']:.0f} MB, end {rss['end']:.0f} MB")
if errors:
    print("errors:", errors[:5])
    sys.exit(1)
if rss["end"] > rss["warm"] * 1.10 + 64:
    print("RSS grew after warm-up")
    sys.exit(1)
