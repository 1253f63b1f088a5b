//! Splits input into SQL statements at `;`, across lines, ignoring semicolons inside quotes
//! (`'…'`, `"…"`, `$$…$$`) and comments (`-- …`, `/* … */`).

/// Where the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    Single,
    Double,
    Dollar,
    LineComment,
    BlockComment,
}

/// Accumulates text and hands back complete statements.
#[derive(Debug)]
pub(crate) struct Splitter {
    buf: String,
    state: State,
    /// Whether the buffer holds anything but whitespace and comments.
    content: bool,
    /// The last character was a `-` or `/` that may start a comment (content if it does not).
    pending: bool,
    previous: Option<char>,
}

impl Splitter {
    pub(crate) fn new() -> Self {
        Self {
            buf: String::new(),
            state: State::Normal,
            content: false,
            pending: false,
            previous: None,
        }
    }

    /// Whether no statement has been started.
    pub(crate) fn is_blank(&self) -> bool {
        !self.content && !self.pending && self.state == State::Normal
    }

    /// Forgets the unfinished statement.
    pub(crate) fn clear(&mut self) {
        *self = Self::new();
    }

    /// Adds `text` (a line with its newline); returns the statements it completed, without
    /// their `;`.
    pub(crate) fn push(&mut self, text: &str) -> Vec<String> {
        let mut done = Vec::new();
        for c in text.chars() {
            let previous = self.previous.replace(c);
            let pending = std::mem::take(&mut self.pending);
            match self.state {
                State::Normal => {
                    if pending && c == '-' && previous == Some('-') {
                        self.state = State::LineComment;
                    } else if pending && c == '*' && previous == Some('/') {
                        self.state = State::BlockComment;
                        self.previous = None; // `/*/` does not close it
                    } else {
                        self.content |= pending;
                        match c {
                            ';' => {
                                if self.content {
                                    done.push(self.buf.trim().to_string());
                                }
                                self.buf.clear();
                                self.content = false;
                                self.previous = None;
                                continue;
                            }
                            '-' | '/' => self.pending = true,
                            '\'' => self.state = State::Single,
                            '"' => self.state = State::Double,
                            '$' if previous == Some('$') => {
                                self.state = State::Dollar;
                                self.previous = None; // `$$$` does not close it
                            }
                            _ => {}
                        }
                        if !self.pending && !c.is_whitespace() {
                            self.content = true;
                        }
                    }
                }
                State::Single if c == '\'' => self.state = State::Normal,
                State::Double if c == '"' => self.state = State::Normal,
                State::Dollar if c == '$' && previous == Some('$') => {
                    self.state = State::Normal;
                    self.previous = None;
                }
                State::LineComment if c == '\n' => self.state = State::Normal,
                State::BlockComment if c == '/' && previous == Some('*') => {
                    self.state = State::Normal;
                    self.previous = None;
                }
                _ => {}
            }
            self.buf.push(c);
        }
        done
    }

    /// The unfinished statement at the end of the input, if it has any content.
    pub(crate) fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let content = self.content || self.pending;
        self.clear();
        content.then(|| rest.trim().to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn split_all(text: &str) -> (Vec<String>, Option<String>) {
        let mut s = Splitter::new();
        let mut out = Vec::new();
        for line in text.split_inclusive('\n') {
            out.extend(s.push(line));
        }
        (out, s.finish())
    }

    #[test]
    fn statements_across_lines() {
        let (done, rest) = split_all("SELECT 1;\nSELECT\n  2\n;SELECT 3");
        assert_eq!(done, vec!["SELECT 1", "SELECT\n  2"]);
        assert_eq!(rest.as_deref(), Some("SELECT 3"));
    }

    #[test]
    fn semicolons_in_quotes_and_comments() {
        let (done, rest) = split_all(
            "SELECT 'a;b', \"c;d\" -- e;f\n, $$g;h$$ /* i;\n j */ FROM t;\n-- only a comment;\n",
        );
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(done[0].starts_with("SELECT 'a;b'") && done[0].ends_with("FROM t"));
        assert_eq!(rest, None);
    }

    #[test]
    fn blank_and_comment_only_input() {
        let mut s = Splitter::new();
        assert!(s.push("  \n").is_empty());
        assert!(s.is_blank());
        assert!(s.push("-- note\n").is_empty());
        assert!(s.is_blank());
        assert!(s.push(";;\n").is_empty());
        s.push("SELECT\n");
        assert!(!s.is_blank());
        s.clear();
        assert!(s.is_blank());
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn quoted_doubled_quotes() {
        let (done, _) = split_all("SELECT 'it''s; fine';");
        assert_eq!(done, vec!["SELECT 'it''s; fine'"]);
    }
}
