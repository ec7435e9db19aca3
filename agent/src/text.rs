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

/// `text` if it fits in `max` bytes, else its longest start that fits with `…` appended, cut
/// on a character boundary.
pub fn cut_marked(text: String, max: usize) -> String {
    const MORE: &str = "…";
    if text.len() <= max {
        return text;
    }
    let mut cut = cut(&text, max.saturating_sub(MORE.len())).to_owned();
    cut.push_str(MORE);
    cut
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

    #[test]
    fn a_marked_cut_fits_and_says_so() {
        assert_eq!(cut_marked("short".into(), 10), "short");
        let cut = cut_marked("日日日日".into(), 8);
        assert_eq!(cut, "日…");
        assert!(cut.len() <= 8);
    }
}
