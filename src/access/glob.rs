//! Anchored globs for refs, project/namespace paths and environments.
//!
//! The whole value must match (no implicit prefix or suffix). `?` matches one character other than
//! `/`; `*` matches any run (possibly empty) of characters other than `/`, so it stays inside one path segment
//! (`platform/*` matches `platform/api` but not `platform/team/api`, and `review/*` matches
//! `review/feature-1` but not `review/a/b`); `**` matches any run including `/`, for the rare case that
//! really means "and every subgroup". There is no escaping: GitLab paths, refs used for deploys and
//! environment names do not contain `*` or `?`. No regex: globs are easier to review.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Segment,
    /// `**`
    Any,
}

fn tokens(pattern: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '?' => Token::One,
            '*' if chars.peek() == Some(&'*') => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                Token::Any
            }
            '*' => Token::Segment,
            c => Token::Literal(c),
        });
    }
    out
}

fn literal(value: &str) -> Vec<Token> {
    value.chars().map(Token::Literal).collect()
}

fn repeats(t: Token) -> bool {
    matches!(t, Token::Segment | Token::Any)
}

/// Whether some single character can be consumed by both tokens.
fn share_a_char(a: Token, b: Token) -> bool {
    match (a, b) {
        (Token::Literal(x), Token::Literal(y)) => x == y,
        (Token::Literal(c), Token::One | Token::Segment)
        | (Token::One | Token::Segment, Token::Literal(c)) => c != '/',
        _ => true,
    }
}

/// Whether the two token strings accept at least one common string: a search over the product of
/// the two patterns' automata (at most `(|a|+1)·(|b|+1)` states).
fn intersect(a: &[Token], b: &[Token]) -> bool {
    let width = b.len() + 1;
    let mut seen = vec![false; (a.len() + 1) * width];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        if std::mem::replace(&mut seen[i * width + j], true) {
            continue;
        }
        if i == a.len() && j == b.len() {
            return true;
        }
        if i < a.len() && repeats(a[i]) {
            stack.push((i + 1, j));
        }
        if j < b.len() && repeats(b[j]) {
            stack.push((i, j + 1));
        }
        if i < a.len() && j < b.len() && share_a_char(a[i], b[j]) {
            let ni = if repeats(a[i]) { i } else { i + 1 };
            let nj = if repeats(b[j]) { j } else { j + 1 };
            stack.push((ni, nj));
        }
    }
    false
}

/// Whether `value` matches the anchored glob `pattern`.
pub fn matches(pattern: &str, value: &str) -> bool {
    intersect(&tokens(pattern), &literal(value))
}

/// Whether some string matches both globs; used to refuse, at declaration time, subjects that can
/// never fall inside a trust's `allow`.
pub fn overlap(a: &str, b: &str) -> bool {
    intersect(&tokens(a), &tokens(b))
}

/// Whether the pattern has no wildcard, i.e. matches exactly itself.
pub fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_in_one_segment() {
        assert!(matches("platform/*", "platform/api"));
        assert!(!matches("platform/*", "platform/team/api"));
        assert!(matches("release-*", "release-"), "* may match nothing");
        assert!(matches("platform/**", "platform/team/api"));
        assert!(matches("release-*", "release-1.2"));
        assert!(!matches("release-*", "release-1/evil"));
    }

    #[test]
    fn anchored_both_ends() {
        assert!(!matches("main", "main2"));
        assert!(!matches("main", "xmain"));
        assert!(matches("main", "main"));
        assert!(!matches("platform", "platform-evil"));
        assert!(matches("platform*", "platform-evil"));
    }

    #[test]
    fn question_mark_is_one_non_slash_char() {
        assert!(matches("v?", "v1"));
        assert!(!matches("v?", "v"));
        assert!(!matches("v?", "v12"));
        assert!(!matches("a?b", "a/b"));
    }

    #[test]
    fn overlap_of_patterns() {
        assert!(overlap("platform/*", "*/api"));
        assert!(!overlap("platform/*", "other/*"));
        assert!(!overlap("platform/*", "platform/*/x"));
        assert!(overlap("platform/**", "platform/*/x"));
        assert!(!overlap("a", "b"));
        assert!(overlap("", "*"));
        assert!(!overlap("", "?"));
    }
}
