//! Bounding text from the outside world on character boundaries: log lines, kernel lines,
//! paths are cut to a size without splitting a UTF-8 character.

/// The largest character boundary at or before `at`.
pub fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The smallest character boundary at or after `at`.
pub fn ceil_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// At most `max` bytes of `text`, cut on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    &text[..floor_boundary(text, max)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_never_split_a_character() {
        let s = "aé日x";
        assert_eq!(cut(s, 2), "a");
        assert_eq!(cut(s, 3), "aé");
        assert_eq!(cut(s, 100), s);
        assert_eq!(floor_boundary(s, 4), 3);
        assert_eq!(ceil_boundary(s, 4), 6);
        assert_eq!(ceil_boundary(s, 100), s.len());
    }
}
