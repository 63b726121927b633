//! Splitting a fuzz input into a mode byte and fields.

/// A fuzz input read front to back.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps raw fuzz bytes.
    pub fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    /// The next byte, 0 once the input is exhausted.
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    /// The bytes up to the next NUL (or the end), consumed with the NUL.
    pub fn field(&mut self) -> &'a [u8] {
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.rest.len());
        let (field, rest) = self.rest.split_at(end);
        self.rest = rest.get(1..).unwrap_or(&[]);
        field
    }

    /// The next field as (lossy) UTF-8 text.
    pub fn text_field(&mut self) -> String {
        String::from_utf8_lossy(self.field()).into_owned()
    }

    /// Everything not consumed yet.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}
