//! Reading a fuzz input as a sequence of choices. Past the end every read
//! is 0, so any input is a complete program.

pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// One of `n` choices.
    pub fn pick(&mut self, n: usize) -> usize {
        self.u8() as usize % n
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos = start + n;
        &self.data[start..end]
    }

    /// A length-prefixed byte string: one byte, or two when the first has
    /// its top bit set (up to 32 KiB).
    pub fn chunk(&mut self) -> &'a [u8] {
        let first = self.u8() as usize;
        let len = if first & 0x80 != 0 {
            (first & 0x7f) << 8 | self.u8() as usize
        } else {
            first
        };
        self.bytes(len)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}
