//! The DATA reader (R19): ends only at `CRLF . CRLF`, un-stuffs dots, notes any bare CR or
//! LF, and keeps at most `max_size` octets while still reading to the real end.
//!
//! It works octet by octet, so the input may be split anywhere.

/// Where the reader is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Just after a real CRLF (or at the start of the data).
    LineStart,
    /// Inside a line.
    Inside,
    /// After a CR whose LF has not been seen yet.
    Cr,
    /// After a `.` at the start of a line.
    Dot,
    /// After `.` CR at the start of a line: one LF from the end.
    DotCr,
}

/// How the data ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataOutcome {
    /// The message, lines ending in CRLF, dots un-stuffed, without the final `.` line.
    Message(Vec<u8>),
    /// R19: a CR or LF not part of a CRLF pair was seen. Nothing may be delivered.
    BareLineEnding,
    /// More than `max_size` octets.
    TooBig,
}

#[derive(Debug)]
pub struct DataReader {
    at: At,
    body: Vec<u8>,
    max_size: u64,
    size: u64,
    bare: bool,
    done: bool,
}

impl DataReader {
    pub fn new(max_size: u64) -> Self {
        DataReader {
            at: At::LineStart,
            body: Vec::new(),
            max_size,
            size: 0,
            bare: false,
            done: false,
        }
    }

    /// Reads from `input`; returns how many octets it used. After the end of the data it
    /// uses no more (the rest belongs to the next command), and [`Self::is_done`] is true.
    pub fn ingest(&mut self, input: &[u8]) -> usize {
        for (i, &b) in input.iter().enumerate() {
            if self.done {
                return i;
            }
            self.r19_step(b);
        }
        input.len()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The outcome; call once [`Self::is_done`] is true.
    pub fn finish(self) -> DataOutcome {
        if self.bare {
            DataOutcome::BareLineEnding
        } else if self.size > self.max_size {
            DataOutcome::TooBig
        } else {
            DataOutcome::Message(self.body)
        }
    }

    /// R19: one octet of DATA. The data ends only at `CRLF . CRLF`; a CR or LF outside a CRLF
    /// pair (here or in [`Self::inside`]) marks the message bare, so [`Self::finish`] refuses it
    /// and nothing is delivered: the SMTP smuggling family.
    fn r19_step(&mut self, b: u8) {
        self.at = match (self.at, b) {
            (At::DotCr, b'\n') => {
                self.done = true;
                At::LineStart
            }
            (At::LineStart, b'.') => At::Dot,
            (At::Dot, b'\r') => At::DotCr,
            // The stuffed dot is dropped; the rest of the line is ordinary.
            (At::Dot, other) => self.inside(other),
            (At::Cr, b'\n') => {
                self.emit(b"\r\n");
                At::LineStart
            }
            // A CR not followed by LF; so is the CR after a leading dot.
            (At::Cr | At::DotCr, other) => {
                self.bare = true;
                self.emit(b"\r");
                self.inside(other)
            }
            (At::LineStart | At::Inside, other) => self.inside(other),
        };
    }

    fn inside(&mut self, b: u8) -> At {
        match b {
            b'\r' => At::Cr,
            b'\n' => {
                // An LF without its CR: the start of the SMTP-smuggling family.
                self.bare = true;
                self.emit(b"\n");
                At::Inside
            }
            other => {
                self.emit(&[other]);
                At::Inside
            }
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.bare || self.size > self.max_size {
            // The message will be refused: keep counting, stop keeping.
            if !self.body.is_empty() {
                self.body = Vec::new();
            }
        } else {
            self.body.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(input: &[u8], max: u64) -> (usize, Option<DataOutcome>) {
        let mut reader = DataReader::new(max);
        let used = reader.ingest(input);
        (used, reader.is_done().then(|| reader.finish()))
    }

    #[test]
    fn ends_at_crlf_dot_crlf_and_unstuffs() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n";
        let (used, outcome) = read(input, 1000);
        assert_eq!(&input[used..], b"QUIT\r\n");
        assert_eq!(
            outcome,
            Some(DataOutcome::Message(
                b"Subject: x\r\n\r\n.leading dot\r\n".to_vec()
            ))
        );
        assert_eq!(
            read(b".\r\n", 10),
            (3, Some(DataOutcome::Message(Vec::new())))
        );
    }

    #[test]
    fn smuggling_ends_do_not_end_the_data() {
        for fake in [
            &b"\n.\n"[..],
            b"\r.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\r.\r\n",
        ] {
            let mut input = b"a".to_vec();
            input.extend_from_slice(fake);
            input.extend_from_slice(b"MAIL FROM:<x@y>\r\n");
            let (used, outcome) = read(&input, 1000);
            assert_eq!(used, input.len(), "{fake:?}");
            assert_eq!(outcome, None, "{fake:?} ended the data");
            let mut reader = DataReader::new(1000);
            reader.ingest(&input);
            reader.ingest(b"\r\n.\r\n");
            assert_eq!(reader.finish(), DataOutcome::BareLineEnding, "{fake:?}");
        }
    }

    #[test]
    fn too_big_reads_to_the_end() {
        let (used, outcome) = read(b"0123456789\r\n.\r\n", 5);
        assert_eq!(used, 15);
        assert_eq!(outcome, Some(DataOutcome::TooBig));
        let (_, outcome) = read(b"0123\r\n.\r\n", 6);
        assert_eq!(outcome, Some(DataOutcome::Message(b"0123\r\n".to_vec())));
    }

    proptest! {
        /// The outcome does not depend on how the input is split, memory stays within the
        /// limit, and a message delivered never holds a bare CR or LF.
        #[test]
        fn split_anywhere(input in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..64),
            split in 0usize..64)
        {
            let whole = {
                let mut r = DataReader::new(32);
                let used = r.ingest(&input);
                (used, r.is_done(), r.body.len())
            };
            let split = split.min(input.len());
            let mut r = DataReader::new(32);
            let (a, b) = input.split_at(split);
            let mut used = r.ingest(a);
            if !r.is_done() {
                used += r.ingest(b);
            }
            prop_assert_eq!((used, r.is_done()), (whole.0, whole.1));
            prop_assert!(r.body.len() <= 32);
            if r.is_done()
                && let DataOutcome::Message(m) = r.finish()
            {
                for (i, &c) in m.iter().enumerate() {
                    if c == b'\r' { prop_assert_eq!(m.get(i + 1), Some(&b'\n')); }
                    if c == b'\n' { prop_assert_eq!(i.checked_sub(1).and_then(|p| m.get(p)), Some(&b'\r')); }
                }
            }
        }
    }
}
