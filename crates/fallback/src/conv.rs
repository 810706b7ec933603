//! What the builders accept for methods, URLs and headers: typed values
//! (`http::Method`, `http::Uri`, `HeaderName`, `HeaderValue`) or strings.
//! Strings are checked when the chain is built, never by the setter.

use http::{HeaderName, HeaderValue, Method, Uri};

mod sealed {
    pub trait Sealed {}
}

/// A header name or value as given: typed, or text checked at build time.
#[derive(Clone, Debug)]
pub enum Given<T> {
    /// Already a typed value.
    Typed(T),
    /// Text, checked when the chain is built.
    Text(String),
}

/// A method: an [`http::Method`] or a string (the standard methods in any
/// case, e.g. `"post"`).
pub trait IntoMethod: sealed::Sealed {
    #[doc(hidden)]
    fn into_method(self) -> String;
}

/// A URL: an [`http::Uri`] or a string.
pub trait IntoUrl: sealed::Sealed {
    #[doc(hidden)]
    fn into_url(self) -> String;
}

/// A header name: a [`HeaderName`] or a string.
pub trait IntoHeaderName: sealed::Sealed {
    #[doc(hidden)]
    fn into_header_name(self) -> Given<HeaderName>;
}

/// A header value: a [`HeaderValue`] (its sensitive flag kept) or a string.
pub trait IntoHeaderValue: sealed::Sealed {
    #[doc(hidden)]
    fn into_header_value(self) -> Given<HeaderValue>;
}

impl sealed::Sealed for &str {}
impl sealed::Sealed for String {}
impl sealed::Sealed for &String {}
impl sealed::Sealed for Method {}
impl sealed::Sealed for &Method {}
impl sealed::Sealed for Uri {}
impl sealed::Sealed for &Uri {}
impl sealed::Sealed for HeaderName {}
impl sealed::Sealed for &HeaderName {}
impl sealed::Sealed for HeaderValue {}
impl sealed::Sealed for &HeaderValue {}

impl IntoMethod for &str {
    fn into_method(self) -> String {
        self.to_owned()
    }
}
impl IntoMethod for String {
    fn into_method(self) -> String {
        self
    }
}
impl IntoMethod for &String {
    fn into_method(self) -> String {
        self.clone()
    }
}
impl IntoMethod for Method {
    fn into_method(self) -> String {
        self.as_str().to_owned()
    }
}
impl IntoMethod for &Method {
    fn into_method(self) -> String {
        self.as_str().to_owned()
    }
}

impl IntoUrl for &str {
    fn into_url(self) -> String {
        self.to_owned()
    }
}
impl IntoUrl for String {
    fn into_url(self) -> String {
        self
    }
}
impl IntoUrl for &String {
    fn into_url(self) -> String {
        self.clone()
    }
}
impl IntoUrl for Uri {
    fn into_url(self) -> String {
        self.to_string()
    }
}
impl IntoUrl for &Uri {
    fn into_url(self) -> String {
        self.to_string()
    }
}

impl IntoHeaderName for &str {
    fn into_header_name(self) -> Given<HeaderName> {
        Given::Text(self.to_owned())
    }
}
impl IntoHeaderName for String {
    fn into_header_name(self) -> Given<HeaderName> {
        Given::Text(self)
    }
}
impl IntoHeaderName for &String {
    fn into_header_name(self) -> Given<HeaderName> {
        Given::Text(self.clone())
    }
}
impl IntoHeaderName for HeaderName {
    fn into_header_name(self) -> Given<HeaderName> {
        Given::Typed(self)
    }
}
impl IntoHeaderName for &HeaderName {
    fn into_header_name(self) -> Given<HeaderName> {
        Given::Typed(self.clone())
    }
}

impl IntoHeaderValue for &str {
    fn into_header_value(self) -> Given<HeaderValue> {
        Given::Text(self.to_owned())
    }
}
impl IntoHeaderValue for String {
    fn into_header_value(self) -> Given<HeaderValue> {
        Given::Text(self)
    }
}
impl IntoHeaderValue for &String {
    fn into_header_value(self) -> Given<HeaderValue> {
        Given::Text(self.clone())
    }
}
impl IntoHeaderValue for HeaderValue {
    fn into_header_value(self) -> Given<HeaderValue> {
        Given::Typed(self)
    }
}
impl IntoHeaderValue for &HeaderValue {
    fn into_header_value(self) -> Given<HeaderValue> {
        Given::Typed(self.clone())
    }
}

impl Given<HeaderName> {
    /// The name as text, for messages and redaction.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Given::Typed(n) => n.as_str(),
            Given::Text(t) => t,
        }
    }
}

impl Given<HeaderValue> {
    /// The value as text, for `Debug` (already redacted by the caller).
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Given::Typed(v) => v.to_str().unwrap_or("<binary>"),
            Given::Text(t) => t,
        }
    }
}
