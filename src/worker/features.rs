//! URL feature extraction for the phishing-url model: the Rust port of `models/FEATURES.md` (spec `gantry-url-v1`), bit-identical to `models/url_features.py`.
//!
//! A URL string becomes a `DIM`-long `f32` vector: 64 lexical features
//! (lengths, character counts, scheme/host facts) followed by 16384 hashed
//! character-n-gram and token buckets. Substring search is `memchr`'s
//! `memmem` (SIMD, the hint words' finders built once); no allocation besides
//! the `Vec` returned by [`extract`]; linear in `min(url.len(), MAX_BYTES)`;
//! never panics on any `&str` (empty, huge, non-ASCII).
//!
//! Bit-identity with the Python reference holds because every real value is
//! computed in `f64` with only `min`, `/` and `sqrt` (correctly rounded by
//! IEEE 754) and cast once to `f32`. `tests/model_golden.rs` checks it
//! against `models/phishing-url/golden.jsonl`.

use std::sync::LazyLock;

use memchr::memmem;

/// Feature spec version; `model.json` names the same string in `features`.
pub const SPEC_VERSION: &str = "gantry-url-v1";
/// Bytes of the URL that are looked at (the full length is still feature 0).
pub const MAX_BYTES: usize = 2048;
/// Lexical features, `out[0..N_LEX]`.
pub const N_LEX: usize = 64;
/// Hashed n-gram buckets, `out[N_LEX..DIM]`.
pub const N_BUCKETS: usize = 16384;
/// Length of a feature vector: the model's input dimension.
pub const DIM: usize = N_LEX + N_BUCKETS;

const FNV_OFFSET: u32 = 0x811C_9DC5;
const FNV_PRIME: u32 = 0x0100_0193;
const SEED_HOST_TOKEN: u8 = 0x48; // 'H'
const SEED_TAIL_TOKEN: u8 = 0x50; // 'P'
const BOS: u8 = 0x02;
const EOS: u8 = 0x03;

/// Bytes counted by features 4..=22, in order.
const COUNTED_BYTES: &[u8; 19] = b".-@?&=_~%/:,;$!*+| ";
/// Extensions of the last path segment, features 45..=51, in order.
const EXTENSIONS: [&[u8]; 7] = [
    b".php", b".html", b".htm", b".asp", b".aspx", b".exe", b".js",
];
/// Feature 58.
const HINT_WORDS: [&[u8]; 38] = [
    b"login",
    b"signin",
    b"secure",
    b"account",
    b"update",
    b"verify",
    b"bank",
    b"confirm",
    b"webscr",
    b"cmd",
    b"paypal",
    b"ebay",
    b"apple",
    b"wp",
    b"admin",
    b"includes",
    b"content",
    b"images",
    b"js",
    b"css",
    b"dropbox",
    b"themes",
    b"plugins",
    b"index",
    b"view",
    b"mail",
    b"office",
    b"outlook",
    b"microsoft",
    b"password",
    b"support",
    b"service",
    b"alert",
    b"suspend",
    b"wallet",
    b"free",
    b"lucky",
    b"bonus",
];
/// Feature 59.
const SHORTENERS: [&[u8]; 15] = [
    b"bit.ly",
    b"goo.gl",
    b"tinyurl.com",
    b"ow.ly",
    b"t.co",
    b"is.gd",
    b"buff.ly",
    b"adf.ly",
    b"bitly.com",
    b"cutt.ly",
    b"shorturl.at",
    b"rebrand.ly",
    b"tiny.cc",
    b"x.co",
    b"qrco.de",
];

/// FNV-1a 32-bit over `data`, with `seed` hashed in as a first byte.
pub fn fnv1a32(seed: u8, data: &[u8]) -> u32 {
    let mut h = (FNV_OFFSET ^ u32::from(seed)).wrapping_mul(FNV_PRIME);
    for &c in data {
        h = (h ^ u32::from(c)).wrapping_mul(FNV_PRIME);
    }
    h
}

/// The features of `url`, a new vector of length [`DIM`].
pub fn extract(url: &str) -> Vec<f32> {
    let mut out = vec![0.0; DIM];
    extract_into(url, &mut out);
    out
}

/// Writes the features of `url` into `out`, overwriting all of it.
///
/// # Panics
///
/// If `out.len() != DIM` (a caller bug); never because of `url`.
pub fn extract_into(url: &str, out: &mut [f32]) {
    assert_eq!(out.len(), DIM, "feature buffer must have DIM = {DIM} slots");
    out.fill(0.0);
    let raw_full = url.as_bytes();
    let raw = &raw_full[..raw_full.len().min(MAX_BYTES)];
    let mut buf = [0u8; MAX_BYTES + 2];
    buf[0] = BOS;
    for (dst, &c) in buf[1..].iter_mut().zip(raw) {
        *dst = c.to_ascii_lowercase();
    }
    buf[raw.len() + 1] = EOS;
    let t = &buf[..raw.len() + 2];
    let s = &t[1..t.len() - 1];
    let parts = split_url(s);
    lexical(raw_full.len(), raw, s, &parts, &mut out[..N_LEX]);
    ngrams(t, &parts, &mut out[N_LEX..]);
}

fn scaled(x: f64, cap: f64) -> f64 {
    (x.min(cap) / cap).sqrt()
}

fn scaled_n(x: usize, cap: u32) -> f64 {
    scaled(x as f64, f64::from(cap))
}

fn ratio(num: usize, den: usize) -> f64 {
    if den > 0 {
        num as f64 / den as f64
    } else {
        0.0
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_digit() || c.is_ascii_lowercase()
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memmem::find(hay, needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// Non-overlapping occurrences of a non-empty `needle`, left to right.
fn count_sub(hay: &[u8], needle: &[u8]) -> usize {
    memmem::find_iter(hay, needle).count()
}

/// Finders of [`HINT_WORDS`], built once: 38 searches per URL.
static HINT_FINDERS: LazyLock<Vec<memmem::Finder<'static>>> =
    LazyLock::new(|| HINT_WORDS.iter().map(memmem::Finder::new).collect());

fn count_byte(hay: &[u8], b: u8) -> usize {
    hay.iter().filter(|&&c| c == b).count()
}

fn count_where(hay: &[u8], pred: impl Fn(u8) -> bool) -> usize {
    hay.iter().filter(|&&c| pred(c)).count()
}

/// Index of the first byte of `b` that is in `set`, else `b.len()`.
fn first_of(b: &[u8], set: &[u8]) -> usize {
    b.iter().position(|c| set.contains(c)).unwrap_or(b.len())
}

fn longest_run(b: &[u8], pred: impl Fn(u8) -> bool) -> usize {
    let (mut best, mut run) = (0, 0);
    for &c in b {
        run = if pred(c) { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

fn longest_same_run(b: &[u8]) -> usize {
    let (mut best, mut run, mut prev) = (0, 0, None);
    for &c in b {
        run = if prev == Some(c) { run + 1 } else { 1 };
        prev = Some(c);
        best = best.max(run);
    }
    best
}

/// Maximal runs of `[a-z0-9]` bytes.
fn tokens(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    b.split(|&c| !is_alnum(c)).filter(|t| !t.is_empty())
}

/// `host` split on `.`, empty pieces kept; nothing at all for an empty host.
fn labels(host: &[u8]) -> impl Iterator<Item = &[u8]> {
    host.split(|&c| c == b'.').filter(move |_| !host.is_empty())
}

struct Parts<'a> {
    has_scheme: bool,
    scheme: &'a [u8],
    rest: &'a [u8],
    authority: &'a [u8],
    hostport: &'a [u8],
    host: &'a [u8],
    tail: &'a [u8],
    path: &'a [u8],
    after: &'a [u8],
}

fn split_url(s: &[u8]) -> Parts<'_> {
    let (has_scheme, scheme, rest) = match find(s, b"://") {
        Some(p)
            if p > 0
                && s[0].is_ascii_lowercase()
                && s[..p].iter().all(|&c| is_alnum(c) || b"+.-".contains(&c)) =>
        {
            (true, &s[..p], &s[p + 3..])
        }
        _ => (false, &s[..0], s),
    };
    let (authority, tail) = rest.split_at(first_of(rest, b"/?#"));
    let hostport = match authority.iter().rposition(|&c| c == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let host = match hostport.iter().position(|&c| c == b':') {
        Some(c) => &hostport[..c],
        None => hostport,
    };
    let (path, after) = tail.split_at(first_of(tail, b"?#"));
    Parts {
        has_scheme,
        scheme,
        rest,
        authority,
        hostport,
        host,
        tail,
        path,
        after,
    }
}

fn is_ipv4(host: &[u8]) -> bool {
    labels(host).count() == 4
        && labels(host).all(|p| (1..=3).contains(&p.len()) && p.iter().all(u8::is_ascii_digit))
}

fn is_shortener(host: &[u8]) -> bool {
    SHORTENERS.iter().any(|x| {
        host == *x
            || (host.len() > x.len() && host.ends_with(x) && host[host.len() - x.len() - 1] == b'.')
    })
}

fn lexical(full_len: usize, raw: &[u8], s: &[u8], p: &Parts<'_>, out: &mut [f32]) {
    let host = p.host;
    let mut f = [0f64; N_LEX];
    f[0] = scaled_n(full_len, 1024);
    f[1] = scaled_n(host.len(), 128);
    f[2] = scaled_n(p.path.len(), 512);
    f[3] = scaled_n(p.after.len(), 1024);
    for (i, &b) in COUNTED_BYTES.iter().enumerate() {
        f[4 + i] = scaled_n(count_byte(s, b), 32);
    }
    f[23] = scaled_n(count_byte(host, b'.'), 16);
    f[24] = scaled_n(count_byte(host, b'-'), 16);
    let digits = count_where(s, |c| c.is_ascii_digit());
    f[25] = scaled_n(digits, 256);
    f[26] = ratio(digits, s.len());
    f[27] = ratio(count_where(host, |c| c.is_ascii_digit()), host.len());
    f[28] = ratio(count_where(raw, |c| c.is_ascii_uppercase()), raw.len());
    f[29] = scaled_n(count_where(s, |c| c >= 0x80), 64);
    f[30] = scaled_n(count_sub(s, b"www"), 4);
    f[31] = scaled_n(count_sub(s, b".com"), 4);
    f[32] = scaled_n(count_sub(p.rest, b"http"), 4);
    f[33] = scaled_n(count_sub(p.rest, b"//"), 4);
    f[34] = flag(p.has_scheme && p.scheme == b"https");
    f[35] = flag(p.has_scheme && p.scheme == b"http");
    f[36] = flag(!p.has_scheme);
    f[37] = flag(is_ipv4(host));
    f[38] = flag(p.hostport.contains(&b':'));
    f[39] = flag(contains(host, b"xn--"));
    f[40] = flag(p.authority.contains(&b'@'));
    f[41] = flag(host.starts_with(b"www."));
    f[42] = scaled_n(labels(host).count(), 8);
    f[43] = scaled_n(labels(host).last().map_or(0, <[u8]>::len), 16);
    f[44] = scaled_n(count_byte(p.path, b'/'), 16);
    let last_seg = match p.path.iter().rposition(|&c| c == b'/') {
        Some(i) => &p.path[i + 1..],
        None => p.path,
    };
    for (i, ext) in EXTENSIONS.iter().enumerate() {
        f[45 + i] = flag(last_seg.ends_with(ext));
    }
    f[52] = flag(p.path.is_empty() || p.path == b"/");
    let longest = |b: &[u8]| tokens(b).map(<[u8]>::len).max().unwrap_or(0);
    f[53] = scaled_n(longest(host), 64);
    f[54] = scaled_n(longest(p.tail), 64);
    let (n_host, n_tail) = (tokens(host).count(), tokens(p.tail).count());
    f[55] = scaled_n(n_host, 16);
    f[56] = scaled_n(n_tail, 64);
    let tok_bytes: usize = tokens(host).chain(tokens(p.tail)).map(<[u8]>::len).sum();
    f[57] = scaled(ratio(tok_bytes, n_host + n_tail), 32.0);
    f[58] = scaled_n(
        HINT_FINDERS.iter().map(|w| w.find_iter(s).count()).sum(),
        16,
    );
    f[59] = flag(is_shortener(host));
    f[60] = scaled_n(longest_run(s, |c| c.is_ascii_digit()), 32);
    f[61] = scaled_n(longest_run(p.path, is_hex), 64);
    f[62] = scaled_n(longest_same_run(s), 16);
    f[63] = ratio(
        count_where(host, |c| b"aeiou".contains(&c)),
        count_where(host, |c| c.is_ascii_lowercase()),
    );
    for (o, v) in out.iter_mut().zip(f) {
        *o = v as f32;
    }
}

/// `t` is `[BOS] + s + [EOS]`; `out` is the bucket block, all zeros on entry.
fn ngrams(t: &[u8], p: &Parts<'_>, out: &mut [f32]) {
    // Counts are kept in `out` itself: they stay below 2^24, so f32 holds
    // them exactly. Touched buckets are remembered so normalising costs
    // O(n-grams), not O(buckets).
    let mut total: u32 = 0;
    let mut touched: Vec<usize> = Vec::with_capacity(4 * t.len() + 16);
    let mut add = |h: u32| {
        let i = h as usize % N_BUCKETS;
        if out[i] == 0.0 {
            touched.push(i);
        }
        out[i] += 1.0;
        total += 1;
    };
    for n in 2..=5u8 {
        for w in t.windows(usize::from(n)) {
            add(fnv1a32(n, w));
        }
    }
    for w in tokens(p.host) {
        add(fnv1a32(SEED_HOST_TOKEN, w));
    }
    for w in tokens(p.tail) {
        add(fnv1a32(SEED_TAIL_TOKEN, w));
    }
    let norm = f64::from(total).sqrt();
    for i in touched {
        out[i] = (f64::from(out[i]).sqrt() / norm) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extracts `url` and compares the listed `(index, expected)` pairs exactly.
    fn check(url: &str, expected: &[(usize, f32)]) {
        let v = extract(url);
        for &(i, want) in expected {
            assert_eq!(
                v[i].to_bits(),
                want.to_bits(),
                "{url:?}: feature {i} is {}, want {want}",
                v[i]
            );
        }
    }

    fn s(x: f64, cap: f64) -> f32 {
        (x.min(cap) / cap).sqrt() as f32
    }

    #[test]
    fn fnv1a32_known_values() {
        // Values from models/url_features.py fnv1a32.
        for (seed, data, want) in [
            (0u8, &b""[..], 0x050C_5D1Fu32),
            (2, b"\x02\x03", 0x1583_54B2),
            (3, b"abc", 0x24D4_2B76),
            (0x48, b"paypal", 0x28E9_5918),
        ] {
            assert_eq!(fnv1a32(seed, data), want, "seed {seed} data {data:?}");
        }
    }

    #[test]
    fn empty_url() {
        let v = extract("");
        let nonzero: Vec<(usize, f32)> = v
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, x)| x != 0.0)
            .collect();
        let bigram = N_LEX + fnv1a32(2, &[BOS, EOS]) as usize % N_BUCKETS;
        assert_eq!(nonzero, vec![(36, 1.0), (52, 1.0), (bigram, 1.0)]);
    }

    #[test]
    fn scheme_detection() {
        // (url, https, http, no scheme)
        for (url, https, http, none) in [
            ("https://a.com", 1.0, 0.0, 0.0),
            ("HTTP://A.COM", 0.0, 1.0, 0.0),
            ("ftp://a.com", 0.0, 0.0, 0.0),
            ("a.com/?u=http://b.com", 0.0, 0.0, 1.0),
            ("://a.com", 0.0, 0.0, 1.0),
            ("1http://a.com", 0.0, 0.0, 1.0),
            ("\u{e9}http://a.com", 0.0, 0.0, 1.0),
        ] {
            check(url, &[(34, https), (35, http), (36, none)]);
        }
    }

    #[test]
    fn host_facts() {
        check(
            "HTTP://User:pw@WWW.Example.COM:8080/a/b.PHP?x=1#f",
            &[
                (1, s(15.0, 128.0)), // www.example.com
                (23, s(2.0, 16.0)),
                (37, 0.0),
                (38, 1.0),
                (40, 1.0),
                (41, 1.0),
                (42, s(3.0, 8.0)),
                (43, s(3.0, 16.0)),
                (45, 1.0), // .php
                (52, 0.0),
            ],
        );
        check(
            "http://192.168.0.1:8080/",
            &[(37, 1.0), (38, 1.0), (52, 1.0)],
        );
        check("http://1.2.3.4.5/", &[(37, 0.0)]);
        check("http://1.2.3.1234/", &[(37, 0.0)]);
        check("http://xn--80ak6aa92e.com", &[(39, 1.0)]);
        check("https://bit.ly/x", &[(59, 1.0)]);
        check("https://go.bit.ly/x", &[(59, 1.0)]);
        check("https://rabbit.ly/x", &[(59, 0.0)]);
        check("http:///path", &[(1, 0.0), (42, 0.0), (43, 0.0), (63, 0.0)]);
    }

    #[test]
    fn counts_and_runs() {
        check(
            "http://a.com/wp-admin/jsjs/0000111",
            &[
                (25, s(7.0, 256.0)),
                (58, s(4.0, 16.0)), // wp, admin, js twice
                (60, s(7.0, 32.0)),
                (62, s(4.0, 16.0)),
            ],
        );
        assert_eq!(count_sub(b"aaaa", b"aa"), 2);
        assert_eq!(count_sub(b"a", b"aa"), 0);
        check("wwwwww", &[(30, s(2.0, 4.0))]);
        check(&"A".repeat(5000), &[(0, 1.0), (28, 1.0), (62, 1.0)]);
    }

    #[test]
    fn never_panics_and_is_bounded() {
        let long_multibyte = format!("https://x.com/?q={}", "\u{e9}".repeat(5000));
        for url in [
            "",
            " ",
            "://",
            "@",
            "a@b@c:d:e",
            "\u{1F600}",
            long_multibyte.as_str(),
            "\0\u{7f}\u{80}",
        ] {
            let v = extract(url);
            assert_eq!(v.len(), DIM);
            assert!(
                v.iter().all(|x| x.is_finite() && (0.0..=1.0).contains(x)),
                "{url:?}"
            );
            let norm: f64 = v[N_LEX..]
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum();
            assert!((norm - 1.0).abs() < 1e-5, "{url:?}: bucket norm^2 {norm}");
        }
    }

    #[test]
    fn extract_into_overwrites() {
        let mut buf = vec![7.0; DIM];
        extract_into("http://a.com", &mut buf);
        assert_eq!(buf, extract("http://a.com"));
    }
}
