"""Reference implementation of the URL feature spec in models/FEATURES.md.

This module is the Python half of one spec implemented twice (the Rust half
is src/worker/features.rs). Both must produce bit-identical float32 vectors;
models/phishing-url/golden.jsonl pins that. Only operations that IEEE 754
rounds exactly (integer arithmetic, +, /, sqrt on float64, one final cast to
float32) are used, so the two implementations cannot drift apart.

Change nothing here without changing FEATURES.md, the Rust port, SPEC_VERSION
and retraining the model.
"""

import math

import numpy as np

SPEC_VERSION = "gantry-url-v1"
MAX_BYTES = 2048
N_LEX = 64
N_BUCKETS = 16384
DIM = N_LEX + N_BUCKETS

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
SEED_HOST_TOKEN = 0x48  # 'H'
SEED_TAIL_TOKEN = 0x50  # 'P'
BOS = 0x02
EOS = 0x03

COUNTED_BYTES = b".-@?&=_~%/:,;$!*+| "  # 19 bytes, features 4..22
EXTENSIONS = (b".php", b".html", b".htm", b".asp", b".aspx", b".exe", b".js")
HINT_WORDS = (
    b"login", b"signin", b"secure", b"account", b"update", b"verify", b"bank",
    b"confirm", b"webscr", b"cmd", b"paypal", b"ebay", b"apple", b"wp",
    b"admin", b"includes", b"content", b"images", b"js", b"css", b"dropbox",
    b"themes", b"plugins", b"index", b"view", b"mail", b"office", b"outlook",
    b"microsoft", b"password", b"support", b"service", b"alert", b"suspend",
    b"wallet", b"free", b"lucky", b"bonus",
)
SHORTENERS = (
    b"bit.ly", b"goo.gl", b"tinyurl.com", b"ow.ly", b"t.co", b"is.gd",
    b"buff.ly", b"adf.ly", b"bitly.com", b"cutt.ly", b"shorturl.at",
    b"rebrand.ly", b"tiny.cc", b"x.co", b"qrco.de",
)


def fnv1a32(seed, data):
    h = FNV_OFFSET
    h = ((h ^ seed) * FNV_PRIME) & 0xFFFFFFFF
    for c in data:
        h = ((h ^ c) * FNV_PRIME) & 0xFFFFFFFF
    return h


def ascii_lower(b):
    return bytes(c + 32 if 65 <= c <= 90 else c for c in b)


def _is_digit(c):
    return 48 <= c <= 57


def _is_alnum(c):
    return 48 <= c <= 57 or 97 <= c <= 122


def _is_hex(c):
    return 48 <= c <= 57 or 97 <= c <= 102


def count_sub(hay, needle):
    """Non-overlapping occurrences, scanning left to right (needle non-empty)."""
    return hay.count(needle)


def scaled(x, cap):
    """sqrt(min(x, cap) / cap) in float64 (x >= 0)."""
    return math.sqrt(min(float(x), float(cap)) / float(cap))


def ratio(num, den):
    return float(num) / float(den) if den > 0 else 0.0


def _first_of(b, chars):
    """Index of the first byte of b that is in chars, else len(b)."""
    for i, c in enumerate(b):
        if c in chars:
            return i
    return len(b)


def split_url(s):
    """Return (has_scheme, scheme, rest, authority, hostport, host, tail, path, after)."""
    p = s.find(b"://")
    scheme = b""
    has_scheme = False
    rest = s
    if p > 0 and 97 <= s[0] <= 122 and all(
        _is_alnum(c) or c in b"+.-" for c in s[:p]
    ):
        has_scheme = True
        scheme = s[:p]
        rest = s[p + 3:]
    e = _first_of(rest, b"/?#")
    authority, tail = rest[:e], rest[e:]
    at = authority.rfind(b"@")
    hostport = authority[at + 1:] if at >= 0 else authority
    c = hostport.find(b":")
    host = hostport[:c] if c >= 0 else hostport
    q = _first_of(tail, b"?#")
    path, after = tail[:q], tail[q:]
    return has_scheme, scheme, rest, authority, hostport, host, tail, path, after


def tokens(b):
    out = []
    start = None
    for i, c in enumerate(b):
        if _is_alnum(c):
            if start is None:
                start = i
        elif start is not None:
            out.append(b[start:i])
            start = None
    if start is not None:
        out.append(b[start:])
    return out


def longest_run(b, pred):
    best = run = 0
    for c in b:
        run = run + 1 if pred(c) else 0
        best = max(best, run)
    return best


def longest_same_run(b):
    best = run = 0
    prev = None
    for c in b:
        run = run + 1 if c == prev else 1
        prev = c
        best = max(best, run)
    return best


def is_ipv4(host):
    parts = host.split(b".")
    return len(parts) == 4 and all(
        1 <= len(p) <= 3 and all(_is_digit(c) for c in p) for p in parts
    )


def lexical(url):
    raw_full = url.encode("utf-8")
    raw = raw_full[:MAX_BYTES]
    s = ascii_lower(raw)
    has_scheme, scheme, rest, authority, hostport, host, tail, path, after = split_url(s)
    f = []
    f.append(scaled(len(raw_full), 1024))  # 0
    f.append(scaled(len(host), 128))  # 1
    f.append(scaled(len(path), 512))  # 2
    f.append(scaled(len(after), 1024))  # 3
    for ch in COUNTED_BYTES:  # 4..22
        f.append(scaled(s.count(bytes([ch])), 32))
    f.append(scaled(host.count(b"."), 16))  # 23
    f.append(scaled(host.count(b"-"), 16))  # 24
    n_digits = sum(1 for c in s if _is_digit(c))
    f.append(scaled(n_digits, 256))  # 25
    f.append(ratio(n_digits, len(s)))  # 26
    f.append(ratio(sum(1 for c in host if _is_digit(c)), len(host)))  # 27
    f.append(ratio(sum(1 for c in raw if 65 <= c <= 90), len(raw)))  # 28
    f.append(scaled(sum(1 for c in s if c >= 0x80), 64))  # 29
    f.append(scaled(count_sub(s, b"www"), 4))  # 30
    f.append(scaled(count_sub(s, b".com"), 4))  # 31
    f.append(scaled(count_sub(rest, b"http"), 4))  # 32
    f.append(scaled(count_sub(rest, b"//"), 4))  # 33
    f.append(float(has_scheme and scheme == b"https"))  # 34
    f.append(float(has_scheme and scheme == b"http"))  # 35
    f.append(float(not has_scheme))  # 36
    f.append(float(is_ipv4(host)))  # 37
    f.append(float(b":" in hostport))  # 38
    f.append(float(b"xn--" in host))  # 39
    f.append(float(b"@" in authority))  # 40
    f.append(float(host.startswith(b"www.")))  # 41
    labels = host.split(b".") if host else []
    f.append(scaled(len(labels), 8))  # 42
    f.append(scaled(len(labels[-1]) if labels else 0, 16))  # 43
    f.append(scaled(path.count(b"/"), 16))  # 44
    last_seg = path[path.rfind(b"/") + 1:]
    for ext in EXTENSIONS:  # 45..51
        f.append(float(last_seg.endswith(ext)))
    f.append(float(path == b"" or path == b"/"))  # 52
    host_toks = tokens(host)
    tail_toks = tokens(tail)
    f.append(scaled(max((len(t) for t in host_toks), default=0), 64))  # 53
    f.append(scaled(max((len(t) for t in tail_toks), default=0), 64))  # 54
    f.append(scaled(len(host_toks), 16))  # 55
    f.append(scaled(len(tail_toks), 64))  # 56
    all_toks = host_toks + tail_toks
    f.append(scaled(ratio(sum(len(t) for t in all_toks), len(all_toks)), 32))  # 57
    f.append(scaled(sum(count_sub(s, w) for w in HINT_WORDS), 16))  # 58
    f.append(float(any(host == x or host.endswith(b"." + x) for x in SHORTENERS)))  # 59
    f.append(scaled(longest_run(s, _is_digit), 32))  # 60
    f.append(scaled(longest_run(path, _is_hex), 64))  # 61
    f.append(scaled(longest_same_run(s), 16))  # 62
    letters = sum(1 for c in host if 97 <= c <= 122)
    f.append(ratio(sum(1 for c in host if c in b"aeiou"), letters))  # 63
    assert len(f) == N_LEX
    return f, s, host, tail


def ngram_counts(s, host, tail):
    """Bucket -> count, and the total number of emitted items."""
    counts = {}
    total = 0
    t = bytes([BOS]) + s + bytes([EOS])
    for n in (2, 3, 4, 5):
        for i in range(len(t) - n + 1):
            k = fnv1a32(n, t[i:i + n]) % N_BUCKETS
            counts[k] = counts.get(k, 0) + 1
            total += 1
    for seed, part in ((SEED_HOST_TOKEN, host), (SEED_TAIL_TOKEN, tail)):
        for w in tokens(part):
            k = fnv1a32(seed, w) % N_BUCKETS
            counts[k] = counts.get(k, 0) + 1
            total += 1
    return counts, total


def extract_sparse(url):
    """(indices, float32 values): the whole lexical block (indices 0..63,
    zeros included) followed by the non-zero n-gram buckets in ascending
    order, so callers can build a CSR matrix cheaply."""
    lex, s, host, tail = lexical(url)
    counts, total = ngram_counts(s, host, tail)
    idx = list(range(N_LEX))
    vals = list(lex)
    denom = math.sqrt(float(total))
    for k in sorted(counts):
        idx.append(N_LEX + k)
        vals.append(math.sqrt(float(counts[k])) / denom)
    return idx, np.asarray(vals, dtype=np.float64).astype(np.float32)


def extract(url):
    """The full float32 feature vector of length DIM."""
    idx, vals = extract_sparse(url)
    out = np.zeros(DIM, dtype=np.float32)
    out[idx] = vals
    return out
