//! The glob matcher (`access::glob`): `<pattern>\0<value>[\0<pattern>]`. `matches` agrees with a
//! plain dynamic-programming reference and with the RE2 translation the API server mode writes
//! (`authn::glob_regex`, run by the `regex` crate); `overlap` is symmetric, equals `matches` for a
//! literal, and holds whenever one value matches both patterns.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oam_trust::access::{authn, glob};

#[derive(Clone, Copy, PartialEq)]
enum Tok {
    Lit(char),
    One,
    Seg,
    Any,
}

fn toks(p: &str) -> Vec<Tok> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '*' {
            let run = chars[i..].iter().take_while(|c| **c == '*').count();
            out.push(if run > 1 { Tok::Any } else { Tok::Seg });
            i += run;
        } else {
            out.push(if chars[i] == '?' {
                Tok::One
            } else {
                Tok::Lit(chars[i])
            });
            i += 1;
        }
    }
    out
}

/// `m[i][j]`: tokens `i..` match characters `j..`.
fn reference(pattern: &str, value: &str) -> bool {
    let (p, v) = (toks(pattern), value.chars().collect::<Vec<char>>());
    let mut m = vec![vec![false; v.len() + 1]; p.len() + 1];
    m[p.len()][v.len()] = true;
    for i in (0..p.len()).rev() {
        for j in (0..=v.len()).rev() {
            let c = v.get(j).copied();
            m[i][j] = match p[i] {
                Tok::Lit(l) => c == Some(l) && m[i + 1][j + 1],
                Tok::One => c.is_some_and(|c| c != '/') && m[i + 1][j + 1],
                Tok::Seg => m[i + 1][j] || (c.is_some_and(|c| c != '/') && m[i][j + 1]),
                Tok::Any => m[i + 1][j] || (c.is_some() && m[i][j + 1]),
            };
        }
    }
    m[0][0]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let a = parts.next().unwrap_or_default();
    let v = parts.next().unwrap_or_default();
    let b = parts.next();

    let m = glob::matches(a, v);
    assert_eq!(m, reference(a, v), "matches({a:?}, {v:?})");
    if let Ok(re) = regex::RegexBuilder::new(&authn::glob_regex(a))
        .size_limit(1 << 24)
        .build()
    {
        assert_eq!(
            m,
            re.is_match(v),
            "regex {:?} on {v:?}",
            authn::glob_regex(a)
        );
    }
    if glob::is_literal(a) {
        assert_eq!(m, a == v);
    }
    if glob::is_literal(v) {
        assert_eq!(
            glob::overlap(a, v),
            m,
            "overlap with a literal is matching it"
        );
    }
    assert_eq!(
        glob::overlap(a, v),
        glob::overlap(v, a),
        "overlap is symmetric"
    );
    if let Some(b) = b {
        assert_eq!(glob::overlap(a, b), glob::overlap(b, a));
        if m && glob::matches(b, v) {
            assert!(glob::overlap(a, b), "{v:?} matches {a:?} and {b:?}");
        }
    }
});
