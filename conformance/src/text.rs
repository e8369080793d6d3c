//! Comparing a command's text output with what a scenario expects.
//!
//! Trailing blanks are not part of what an administrator reads, and TOML multi-line strings
//! make them awkward to state, so both sides drop each line's trailing whitespace and the
//! whole text's trailing blank lines before they are compared. Line endings are ignored too.

/// The text as compared: each line without trailing whitespace, no trailing blank lines.
pub fn normalize(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim_end().to_owned()
}

/// `None` when the texts are the same after [`normalize`]; otherwise where they first differ.
pub fn first_difference(expected: &str, actual: &str) -> Option<String> {
    let expected = normalize(expected);
    let actual = normalize(actual);
    if expected == actual {
        return None;
    }
    let mut want = expected.lines();
    let mut have = actual.lines();
    let mut number = 1;
    loop {
        match (want.next(), have.next()) {
            (Some(w), Some(h)) if w == h => number += 1,
            (Some(w), Some(h)) => {
                return Some(format!(
                    "line {number} differs\n  expected: {w:?}\n  actual:   {h:?}"
                ));
            }
            (Some(w), None) => {
                return Some(format!(
                    "line {number} is missing\n  expected: {w:?}\n  actual:   (end of output)"
                ));
            }
            (None, Some(h)) => {
                return Some(format!(
                    "line {number} is extra\n  expected: (end of output)\n  actual:   {h:?}"
                ));
            }
            // Equal line by line yet different: only possible for an empty side.
            (None, None) => return Some("the outputs differ".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_whitespace_does_not_count() {
        assert_eq!(normalize("a  \r\nb\t\n\n\n"), "a\nb");
        assert_eq!(normalize("\n  indented\n"), "\n  indented");
        assert_eq!(first_difference("local\n", "local"), None);
        assert_eq!(first_difference("a\nb", "a   \r\nb  \n\n"), None);
    }

    #[test]
    fn reports_the_first_differing_line() {
        assert_eq!(
            first_difference("a\nb\nc", "a\nB\nC").unwrap(),
            "line 2 differs\n  expected: \"b\"\n  actual:   \"B\""
        );
        assert!(
            first_difference("a\nb", "a")
                .unwrap()
                .starts_with("line 2 is missing")
        );
        assert!(
            first_difference("a", "a\nb")
                .unwrap()
                .starts_with("line 2 is extra")
        );
        assert!(
            first_difference("", "x")
                .unwrap()
                .starts_with("line 1 is extra")
        );
        assert!(
            first_difference("  a", "a")
                .unwrap()
                .starts_with("line 1 differs")
        );
    }
}
