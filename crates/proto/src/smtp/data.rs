//! The DATA reader (R19): ends only at `CRLF . CRLF`, un-stuffs dots, notes any bare CR or LF
//! and any NUL, and hands the message on in pieces of at most [`PIECE`] octets, so what a
//! session holds in memory does not grow with the message (the driver writes each piece to a
//! spool file). Past `max_size` octets, or once the message is refused, it keeps counting but
//! stops keeping, while still reading to the real end.
//!
//! It works octet by octet, so the input may be split anywhere.

/// The most octets of message the reader holds before the session must hand them on (one
/// more can be held: a CRLF arrives as a pair).
pub const PIECE: usize = 64 * 1024;

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
    /// The rest of the message (lines ending in CRLF, dots un-stuffed, without the final `.`
    /// line) after the pieces already taken with [`DataReader::take_piece`].
    Message(Vec<u8>),
    /// R19: a CR or LF not part of a CRLF pair was seen. Nothing may be delivered.
    BareLineEnding,
    /// R19: a NUL octet was seen. Nothing may be delivered.
    Nul,
    /// More than `max_size` octets.
    TooBig,
}

#[derive(Debug)]
pub struct DataReader {
    at: At,
    /// Message octets not yet taken, at most [`PIECE`] + 1.
    piece: Vec<u8>,
    max_size: u64,
    size: u64,
    bare: bool,
    nul: bool,
    /// The message will not be stored (the spool failed): read to the end, keep nothing.
    discarding: bool,
    done: bool,
}

impl DataReader {
    pub fn new(max_size: u64) -> Self {
        DataReader {
            at: At::LineStart,
            piece: Vec::new(),
            max_size,
            size: 0,
            bare: false,
            nul: false,
            discarding: false,
            done: false,
        }
    }

    /// Reads from `input`; returns how many octets it used. It stops at the end of the data
    /// (the rest belongs to the next command; [`Self::is_done`] is then true) and when a piece
    /// is full ([`Self::piece_full`]; take it and call again).
    pub fn ingest(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while let Some(rest) = input.get(used..).filter(|rest| !rest.is_empty()) {
            if self.done || self.piece_full() {
                break;
            }
            // Inside a line, a run of ordinary octets changes nothing but the piece: take it
            // whole (most of a message is such runs).
            if self.at == At::Inside {
                let room = if self.keeps_nothing() {
                    rest.len()
                } else {
                    PIECE.saturating_sub(self.piece.len()).min(rest.len())
                };
                let window = rest.get(..room).unwrap_or(rest);
                let run = window
                    .iter()
                    .position(|&b| matches!(b, b'\r' | b'\n' | 0))
                    .unwrap_or(window.len());
                if let Some(ordinary) = window.get(..run).filter(|run| !run.is_empty()) {
                    self.emit(ordinary);
                    used += run;
                    continue;
                }
            }
            if let Some(&b) = rest.first() {
                self.r19_step(b);
            }
            used += 1;
        }
        used
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// A piece is ready to be handed on and the reader reads no more until it is taken.
    pub fn piece_full(&self) -> bool {
        self.piece.len() >= PIECE
    }

    /// The message octets held so far, leaving none.
    pub fn take_piece(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.piece)
    }

    /// Reads on to the end of the data keeping nothing: the message cannot be stored.
    pub fn discard(&mut self) {
        self.discarding = true;
        self.piece = Vec::new();
    }

    /// Whether the message is already known to be refused (or discarded), so pieces are no
    /// longer kept.
    fn keeps_nothing(&self) -> bool {
        self.bare || self.nul || self.discarding || self.size > self.max_size
    }

    /// The outcome; call once [`Self::is_done`] is true.
    pub fn finish(self) -> DataOutcome {
        if self.bare {
            DataOutcome::BareLineEnding
        } else if self.nul {
            DataOutcome::Nul
        } else if self.size > self.max_size {
            DataOutcome::TooBig
        } else {
            DataOutcome::Message(self.piece)
        }
    }

    /// R19: one octet of DATA. The data ends only at `CRLF . CRLF`; a CR or LF outside a CRLF
    /// pair (here or in [`Self::inside`]) marks the message bare, and a NUL marks it too, so
    /// [`Self::finish`] refuses it and nothing is delivered: the SMTP smuggling family, and
    /// octets no other server should be handed.
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
                if other == 0 {
                    self.nul = true;
                }
                self.emit(&[other]);
                At::Inside
            }
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.keeps_nothing() {
            // The message will be refused: keep counting, stop keeping.
            if !self.piece.is_empty() {
                self.piece = Vec::new();
            }
        } else {
            if self.piece.capacity() == 0 {
                // One allocation per piece rather than a run of doublings past it.
                self.piece.reserve_exact(PIECE + 1);
            }
            self.piece.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads all of `input` (taking pieces as they fill); the message whole, or the outcome.
    fn read(input: &[u8], max: u64) -> (usize, Option<DataOutcome>) {
        let mut reader = DataReader::new(max);
        let mut taken = Vec::new();
        let mut used = 0;
        loop {
            used += reader.ingest(&input[used..]);
            if !reader.piece_full() {
                break;
            }
            taken.extend(reader.take_piece());
        }
        let outcome = reader.is_done().then(|| match reader.finish() {
            DataOutcome::Message(tail) => {
                taken.extend(tail);
                DataOutcome::Message(taken)
            }
            refused => refused,
        });
        (used, outcome)
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
    fn nul_is_refused_wherever_it_stands() {
        for body in [
            &b"\0\r\n"[..],
            b"a\0b\r\n",
            b".\0stuffed\r\n",
            b"Subject: x\r\n\r\nend\0\r\n",
        ] {
            let mut input = body.to_vec();
            input.extend_from_slice(b".\r\nNOOP\r\n");
            let (used, outcome) = read(&input, 1000);
            assert_eq!(&input[used..], b"NOOP\r\n", "{body:?}");
            assert_eq!(outcome, Some(DataOutcome::Nul), "{body:?}");
        }
        // A NUL after the first piece was handed on still refuses the whole message.
        let mut input = vec![b'a'; PIECE + 10];
        input.extend_from_slice(b"\0\r\n.\r\n");
        assert_eq!(read(&input, u64::MAX).1, Some(DataOutcome::Nul));
        // A bare line ending is named first when both are there.
        assert_eq!(
            read(b"\0\n\r\n.\r\n", 1000).1,
            Some(DataOutcome::BareLineEnding)
        );
    }

    #[test]
    fn too_big_reads_to_the_end() {
        let (used, outcome) = read(b"0123456789\r\n.\r\n", 5);
        assert_eq!(used, 15);
        assert_eq!(outcome, Some(DataOutcome::TooBig));
        let (_, outcome) = read(b"0123\r\n.\r\n", 6);
        assert_eq!(outcome, Some(DataOutcome::Message(b"0123\r\n".to_vec())));
    }

    #[test]
    fn a_long_message_comes_in_pieces_and_a_refused_one_in_none() {
        let line = [b'x'; 998];
        let mut input = Vec::new();
        while input.len() < 3 * PIECE {
            input.extend_from_slice(&line);
            input.extend_from_slice(b"\r\n");
        }
        let message = input.clone();
        input.extend_from_slice(b".\r\n");
        let mut reader = DataReader::new(u64::MAX);
        let mut used = 0;
        let mut pieces = Vec::new();
        while !reader.is_done() {
            used += reader.ingest(&input[used..]);
            assert!(reader.piece.len() <= PIECE + 1);
            if reader.piece_full() {
                pieces.push(reader.take_piece());
            }
        }
        assert_eq!(pieces.len(), 3);
        let DataOutcome::Message(tail) = reader.finish() else {
            panic!("a good message")
        };
        assert_eq!([pieces.concat(), tail].concat(), message);
        // Discarded (the spool failed): read to the end, no piece ever fills.
        let mut reader = DataReader::new(u64::MAX);
        reader.discard();
        assert_eq!(reader.ingest(&input), input.len());
        assert!(reader.is_done() && reader.piece.is_empty());
        // Too big: no piece fills past the limit.
        let mut reader = DataReader::new(100);
        assert_eq!(reader.ingest(&input), input.len());
        assert_eq!(reader.finish(), DataOutcome::TooBig);
    }

    proptest! {
        /// The outcome does not depend on how the input is split, memory stays within a piece,
        /// and a message delivered never holds a bare CR or LF, nor a NUL.
        #[test]
        fn split_anywhere(input in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), Just(0u8)], 0..64),
            split in 0usize..64)
        {
            let whole = read(&input, 32);
            let split = split.min(input.len());
            let mut r = DataReader::new(32);
            let (a, b) = input.split_at(split);
            let mut used = r.ingest(a);
            if !r.is_done() {
                used += r.ingest(b);
            }
            prop_assert_eq!(used, whole.0);
            prop_assert_eq!(r.is_done(), whole.1.is_some());
            prop_assert!(r.piece.len() <= 32);
            if r.is_done() {
                let outcome = r.finish();
                prop_assert_eq!(Some(&outcome), whole.1.as_ref());
                if let DataOutcome::Message(m) = outcome {
                    prop_assert!(!m.contains(&0));
                    for (i, &c) in m.iter().enumerate() {
                        if c == b'\r' { prop_assert_eq!(m.get(i + 1), Some(&b'\n')); }
                        if c == b'\n' { prop_assert_eq!(i.checked_sub(1).and_then(|p| m.get(p)), Some(&b'\r')); }
                    }
                }
            }
        }

    }

    proptest! {
        // Messages of several pieces are slow to build octet by octet in a debug build.
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Split into pieces, a message is the same octets as read whole.
        #[test]
        fn pieces_join_to_the_message(lines in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'a'), Just(b'\xe3')], 0..40_000), 0..8))
        {
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for line in &lines {
                if line.first() == Some(&b'.') {
                    input.push(b'.');
                }
                input.extend_from_slice(line);
                input.extend_from_slice(b"\r\n");
                expected.extend_from_slice(line);
                expected.extend_from_slice(b"\r\n");
            }
            input.extend_from_slice(b".\r\n");
            prop_assert_eq!(read(&input, u64::MAX), (input.len(), Some(DataOutcome::Message(expected))));
        }
    }
}
