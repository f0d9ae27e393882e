//! What the controllers and the exchange share about Kubernetes Events.

/// Longest Event note written (the API server's limit is 1 KiB).
pub const MAX_NOTE_BYTES: usize = 1000;

/// At most `max` bytes of `s` (cut at a character boundary), with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_at_character_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("aé", 2), "a…", "é is two bytes: cut before it");
    }
}
