//! Reading fuzz bytes as a sequence of choices.
//!
//! A hand-written stand-in for the `arbitrary` crate, small enough to read: every choice takes
//! one or two bytes from the front, and an exhausted input reads as zeros, so any byte string
//! is a valid (if short) program. Choices that come first in a list are the ones a run of
//! zeros picks, so keep the most useful choice first.

/// The fuzz input, consumed from the front.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte was used.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte; 0 once the input is used up.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((first, rest)) => {
                self.data = rest;
                *first
            }
            None => 0,
        }
    }

    /// A number below `n` (0 when `n` is 0 or 1).
    pub fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => 0,
            2..=256 => usize::from(self.byte()) % n,
            _ => (usize::from(self.byte()) << 8 | usize::from(self.byte())) % n,
        }
    }

    /// A coin toss.
    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// One of `items`, which must not be empty.
    pub fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.below(items.len())]
    }

    /// `None` or one of `items`.
    pub fn maybe<'b, T>(&mut self, items: &'b [T]) -> Option<&'b T> {
        let i = self.below(items.len() + 1);
        items.get(i.checked_sub(1)?)
    }

    /// A big-endian `u32` from the next four bytes.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// Up to `max` of the next bytes, the count read first (one byte, or two when `max` is
    /// over 255).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let wanted = self.below(max + 1).min(self.data.len());
        let (taken, rest) = self.data.split_at(wanted);
        self.data = rest;
        taken
    }

    /// Every byte left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exhausted_input_reads_as_zeros() {
        let mut input = Input::new(&[7, 1]);
        assert_eq!(input.below(5), 2);
        assert!(input.flag());
        assert!(input.is_empty());
        assert_eq!((input.byte(), input.below(300), input.u32()), (0, 0, 0));
        assert_eq!(input.pick(&["first", "second"]), &"first");
        assert_eq!(input.maybe(&["x"]), None);
        assert!(input.bytes(10).is_empty());
    }

    #[test]
    fn bytes_takes_no_more_than_is_left() {
        let mut input = Input::new(&[200, 1, 2, 3]);
        assert_eq!(input.bytes(255), &[1, 2, 3]);
        let mut input = Input::new(&[2, 1, 2, 3]);
        assert_eq!(input.bytes(255), &[1, 2]);
        assert_eq!(input.rest(), &[3]);
    }
}
