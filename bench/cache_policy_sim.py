#!/usr/bin/env python3
"""Why TinyLFU-class L1 policies stop short of a perfect frequency cache on `make bench-cache`'s load.

Replays the same shape of trace (1M draws, Zipf(1.0) over 100k keys, 10k-entry
cache) through an LRU cache with TinyLFU admission whose 4-bit counts are
halved every S accesses (the sketch's "sample size"), and through an LFU with
exact, never-aged counts. Pure Python, about a minute; no dependencies.
"""
import random, bisect, itertools, sys
N, C, R = 100_000, 10_000, 1_000_000
random.seed(42)
w = [1.0/(i+1) for i in range(N)]
cdf = list(itertools.accumulate(w)); tot = cdf[-1]
draws = [bisect.bisect_left(cdf, random.random()*tot) for _ in range(R)]
from collections import OrderedDict
for S in [25_000, 100_000, 1_000_000]:
    cnt = {}; lru = OrderedDict(); hits = 0; ops = 0
    for k in draws:
        cnt[k] = min(cnt.get(k,0)+1, 15); ops += 1
        if ops >= S:
            ops = 0; cnt = {a: b//2 for a,b in cnt.items() if b//2}
        if k in lru:
            hits += 1; lru.move_to_end(k); continue
        if len(lru) < C:
            lru[k] = 1; continue
        victim = next(iter(lru))
        if cnt.get(k,0) > cnt.get(victim,0):
            lru.popitem(last=False); lru[k] = 1
    print(f"TinyLFU-like (LRU main, 4-bit counts, halve every {S}): {hits/R:.3f}", flush=True)

# Exact counts, no aging, admission by count against the least-counted entry.
import heapq
cnt = [0] * N; incache = bytearray(N); size = 0; heap = []; hits = 0
for k in draws:
    cnt[k] += 1
    if incache[k]:
        hits += 1; heapq.heappush(heap, (cnt[k], k)); continue
    if size < C:
        incache[k] = 1; size += 1; heapq.heappush(heap, (cnt[k], k)); continue
    while True:
        c, m = heap[0]
        if not incache[m] or c != cnt[m]:
            heapq.heappop(heap); continue
        break
    if cnt[k] > c:
        heapq.heappop(heap); incache[m] = 0; incache[k] = 1; heapq.heappush(heap, (cnt[k], k))
print(f"LFU with exact counts (no aging): {hits/R:.3f}")
