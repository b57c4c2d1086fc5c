//! Small byte strings copied into a shared chunk instead of a buffer each.
//!
//! A proxied unary call receives small pieces on both of its connections:
//! literal header values, and a message body in one DATA frame. Each used
//! to get its own allocation (and, once cloned for a retry's record, the
//! shared header `bytes` makes on the first clone of a buffer it does not
//! share yet). Copied into a connection's chunk instead, each is a slice
//! of it: about one allocation per kilobyte, and clones are a reference
//! count.
//!
//! A piece longer than [`Chunk::SHARED_MAX`] gets its own buffer, so a
//! live piece never keeps more than [`Chunk::SIZE`] bytes alive besides
//! itself. A connection that never receives such pieces never allocates
//! one.

use bytes::BytesMut;

pub(crate) struct Chunk {
    buf: BytesMut,
}

impl Chunk {
    pub const SIZE: usize = 1024;
    pub const SHARED_MAX: usize = 256;

    pub fn new() -> Self {
        Chunk {
            buf: BytesMut::new(),
        }
    }

    /// `bytes`, copied: a slice of the chunk if short, else a buffer of
    /// its own.
    #[inline]
    pub fn copy(&mut self, bytes: &[u8]) -> BytesMut {
        if bytes.is_empty() {
            return BytesMut::new();
        }
        if bytes.len() > Self::SHARED_MAX {
            return BytesMut::from(bytes);
        }
        if self.buf.capacity() - self.buf.len() < bytes.len() {
            self.buf = BytesMut::with_capacity(Self::SIZE);
        }
        self.buf.extend_from_slice(bytes);
        self.buf.split()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_pieces_share_a_chunk_and_long_ones_do_not() {
        let mut c = Chunk::new();
        let a = c.copy(b"abc").freeze();
        let b = c.copy(b"defg").freeze();
        assert_eq!((&a[..], &b[..]), (&b"abc"[..], &b"defg"[..]));
        // Adjacent slices of one buffer.
        assert_eq!(a.as_ptr() as usize + 3, b.as_ptr() as usize);
        let long = vec![7u8; Chunk::SHARED_MAX + 1];
        let l = c.copy(&long);
        assert_eq!(&l[..], &long[..]);
        let next = c.copy(b"h").freeze();
        assert_eq!(b.as_ptr() as usize + 4, next.as_ptr() as usize);
        assert!(c.copy(b"").is_empty());
    }

    #[test]
    fn a_full_chunk_is_replaced_and_the_old_one_stays_valid() {
        let mut c = Chunk::new();
        let piece = [1u8; 200];
        let kept: Vec<_> = (0..12).map(|_| c.copy(&piece).freeze()).collect();
        assert!(kept.iter().all(|k| k[..] == piece[..]));
    }

    #[test]
    fn a_piece_grows_into_a_buffer_of_its_own() {
        let mut c = Chunk::new();
        let mut first = c.copy(b"abc");
        let second = c.copy(b"xyz");
        first.extend_from_slice(b"def");
        assert_eq!(&first[..], b"abcdef");
        assert_eq!(&second[..], b"xyz");
    }
}
