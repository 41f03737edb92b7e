//! [`Text`]: an immutable UTF-8 string that shares its storage with the bytes it came from.

use std::{borrow::Borrow, fmt, ops::Deref};

use bytes::Bytes;
use bytestring::ByteString;

/// An immutable, cheaply cloned UTF-8 string backed by [`Bytes`].
///
/// The decoder hands out event types, data and ids as `Text` so that a value that
/// arrived inside one network chunk is a slice of that chunk rather than a copy, and
/// cloning it (to keep the last event ID, or to fan one event out) costs a reference
/// count, not an allocation. It dereferences to [`str`].
///
/// ```
/// use tidings_wire::Text;
///
/// let text = Text::from("hello");
/// assert_eq!(text, "hello");
/// assert_eq!(text.len(), 5);
/// assert_eq!(text.to_uppercase(), "HELLO");
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(ByteString);

impl Text {
    /// The empty string.
    ///
    /// ```
    /// assert!(tidings_wire::Text::new().is_empty());
    /// ```
    pub const fn new() -> Self {
        Self(ByteString::new())
    }

    /// Wraps a static string without copying it.
    ///
    /// ```
    /// let text = tidings_wire::Text::from_static("message");
    /// assert_eq!(text.as_str(), "message");
    /// ```
    pub const fn from_static(s: &'static str) -> Self {
        Self(ByteString::from_static(s))
    }

    /// The string slice.
    ///
    /// ```
    /// let text = tidings_wire::Text::from("abc");
    /// assert_eq!(text.as_str(), "abc");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The underlying bytes (valid UTF-8).
    ///
    /// ```
    /// let text = tidings_wire::Text::from("abc");
    /// assert_eq!(&text.as_bytes()[..], b"abc");
    /// ```
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// Gives up the string for its bytes, without copying.
    ///
    /// ```
    /// let bytes = tidings_wire::Text::from("abc").into_bytes();
    /// assert_eq!(&bytes[..], b"abc");
    /// ```
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    /// Converts bytes to text, replacing invalid UTF-8 with U+FFFD as the event-stream
    /// format requires. Valid input (the usual case) is not copied.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tidings_wire::Text;
    ///
    /// assert_eq!(Text::from_utf8_lossy(Bytes::from_static(b"ok")), "ok");
    /// assert_eq!(Text::from_utf8_lossy(Bytes::from_static(b"a\xffb")), "a\u{FFFD}b");
    /// ```
    pub fn from_utf8_lossy(bytes: Bytes) -> Self {
        let len = bytes.len();
        Self::from_slice_lossy(&bytes, 0, len)
    }

    /// Converts a slice of `src` to text: zero-copy when it is valid UTF-8, a lossy copy
    /// when it is not. Validates the bytes once.
    pub(crate) fn from_slice_lossy(src: &Bytes, start: usize, end: usize) -> Self {
        match ByteString::try_from(src.slice(start..end)) {
            Ok(s) => Self(s),
            Err(_) => Self(ByteString::from(
                String::from_utf8_lossy(&src[start..end]).into_owned(),
            )),
        }
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(ByteString::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(ByteString::from(s))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        String::from(t.0)
    }
}

impl From<Text> for Bytes {
    fn from(t: Text) -> Self {
        t.into_bytes()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_replaces_invalid_sequences() {
        let t = Text::from_utf8_lossy(Bytes::from_static(b"\xe2\x82 x \xf0\x9f\x98"));
        assert_eq!(t, "\u{FFFD} x \u{FFFD}");
    }

    #[test]
    fn long_valid_text_is_not_copied() {
        let src = Bytes::from(vec![b'a'; 1000]);
        let t = Text::from_utf8_lossy(src.clone());
        assert_eq!(t.as_bytes().as_ptr(), src.as_ptr());
    }

    #[test]
    fn slice_shares_storage() {
        let src = Bytes::from_static(b"data: hello");
        let t = Text::from_slice_lossy(&src, 6, 11);
        assert_eq!(t, "hello");
        assert_eq!(t.as_bytes().as_ptr(), src[6..].as_ptr());
    }
}
