//! Reading one field out of a message's header section, for the log: the Message-ID that lets
//! an administrator follow a message (`grep '<id@host>'`) through every line about it.

/// Octets of a message's beginning read for its header fields; a header section longer than
/// this is not searched to its end (the Message-ID is then `-` in the log).
pub const HEAD_SCAN: usize = 64 * 1024;

/// Characters of a Message-ID kept for the log (RFC 5322 allows a line of 998).
const MAX_ID: usize = 256;

/// The `Message-ID` field's value in `head` (a message's first octets: its header section,
/// perhaps cut), unfolded and trimmed, with control characters replaced; `None` when the
/// header section has none (or an empty one).
pub fn message_id(head: &[u8]) -> Option<String> {
    let head = head.get(..HEAD_SCAN).unwrap_or(head);
    let mut lines = head.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        // A continuation of an earlier field, whatever it looks like.
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default();
        if !name.trim_ascii().eq_ignore_ascii_case(b"message-id") {
            continue;
        }
        let mut value = line.get(colon + 1..).unwrap_or_default().to_vec();
        // Folded onto the lines after it (RFC 5322 §2.2.3).
        while let Some(next) = lines.peek()
            && next.first().is_some_and(|&b| b == b' ' || b == b'\t')
        {
            let next = next.strip_suffix(b"\r").unwrap_or(next);
            value.push(b' ');
            value.extend_from_slice(next.trim_ascii());
            lines.next();
        }
        let value: String = String::from_utf8_lossy(value.trim_ascii())
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(MAX_ID)
            .collect();
        return (!value.is_empty()).then_some(value);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_field_in_any_case_and_folded() {
        let head = b"Received: from x\r\n\tby y\r\n Message-ID: <no@x>\r\nmessage-id:\r\n <abc@example.jp>\r\nSubject: s\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(message_id(head).as_deref(), Some("<abc@example.jp>"));
        assert_eq!(
            message_id(b"Message-ID: <a@b>\n\n").as_deref(),
            Some("<a@b>")
        );
    }

    #[test]
    fn none_in_the_body_or_when_empty() {
        assert_eq!(
            message_id(b"Subject: s\r\n\r\nMessage-ID: <body@x>\r\n"),
            None
        );
        assert_eq!(message_id(b"Message-ID:   \r\n\r\n"), None);
        assert_eq!(message_id(b""), None);
    }

    #[test]
    fn control_characters_and_length_are_bounded() {
        let mut head = b"Message-ID: <a\x1bb@c>".to_vec();
        head.extend(std::iter::repeat_n(b'x', 5000));
        let id = message_id(&head).unwrap_or_default();
        assert!(id.starts_with("<a?b@c>") && id.chars().count() == MAX_ID);
    }
}
