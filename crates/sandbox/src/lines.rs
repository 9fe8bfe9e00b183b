//! The agent's stderr as lines of bounded length: the agent's diagnostics can carry text
//! of the user's (an import error's message), so a line without end must never grow the
//! worker's memory. Used by both backends.

/// Longest line kept, bytes; the rest of a longer line is dropped and the line marked.
pub(crate) const MAX_LINE: usize = 4096;

/// Marks a line cut at [`MAX_LINE`].
const CUT_MARK: &[u8] = b" [...]";

/// Splits pieces of a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    line: Vec<u8>,
    cut: bool,
}

impl LineSplitter {
    /// Takes the next piece of the stream; calls `emit` with each line it completes
    /// (without its newline).
    pub(crate) fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let (text, ends) = match piece.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (piece, false),
            };
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&text[..text.len().min(room)]);
            self.cut |= text.len() > room;
            if ends {
                self.emit_line(&mut emit);
            }
        }
    }

    /// Ends the stream: emits what is left of an unfinished line.
    pub(crate) fn finish(mut self, mut emit: impl FnMut(&[u8])) {
        if !self.line.is_empty() || self.cut {
            self.emit_line(&mut emit);
        }
    }

    fn emit_line(&mut self, emit: &mut impl FnMut(&[u8])) {
        if self.cut {
            self.line.extend_from_slice(CUT_MARK);
        }
        emit(&self.line);
        self.line.clear();
        self.cut = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        for piece in pieces {
            splitter.feed(piece, |l| lines.push(l.to_vec()));
        }
        splitter.finish(|l| lines.push(l.to_vec()));
        lines
    }

    #[test]
    fn lines_split_across_pieces() {
        assert_eq!(
            split(&[b"one\ntw", b"o\n", b"three"]),
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    }

    #[test]
    fn an_endless_line_is_cut_and_marked_and_the_next_one_is_whole() {
        let endless = vec![b'x'; 3 * MAX_LINE];
        let lines = split(&[&endless, &endless, b"\nnext\n"]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE + CUT_MARK.len());
        assert!(lines[0].ends_with(CUT_MARK));
        assert_eq!(lines[1], b"next");
    }
}
