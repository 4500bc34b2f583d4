//! Which key a request is limited under.

use std::borrow::Cow;
use std::fmt;

use http::HeaderName;
use resilience_core::{ConfigError, Priority};

/// Takes the key a request is limited under; every key has its own limit.
///
/// A request without a key (`None`) is limited under the key `_`. Keys
/// longer than [`MAX_KEY_LEN`] are shortened to a prefix and a hash of the
/// whole; any bytes are allowed (Redis keys are binary-safe).
///
/// Implemented by [`KeyBy`] (for `http::Request<B>`) and [`KeyFn`].
pub trait MakeKey<Req> {
    /// The request's key.
    fn make_key<'a>(&'a self, req: &'a Req) -> Option<Cow<'a, [u8]>>;
}

/// The longest key kept as it is, in bytes: `128`.
pub const MAX_KEY_LEN: usize = 128;

/// Where an `http::Request`'s key comes from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KeyBy {
    /// One key for every request: the whole service shares one limit.
    Fixed(Box<[u8]>),
    /// The request path (the route): a limit per path. Use a matched route
    /// (a bounded set) rather than raw paths when paths carry ids.
    Route,
    /// A header's bytes, e.g. a tenant header: a limit per tenant.
    Header(HeaderName),
    /// The request's [`Priority`] (from extensions): a limit per level.
    Priority,
}

/// A key from a function of the request.
#[derive(Clone)]
pub struct KeyFn<F>(pub F);

// === impl KeyBy ===

impl KeyBy {
    /// One fixed key.
    ///
    /// # Errors
    ///
    /// When `key` is empty or longer than [`MAX_KEY_LEN`].
    pub fn fixed(key: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let key = key.as_ref();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(ConfigError::new("key", "must be 1 to 128 bytes"));
        }
        Ok(KeyBy::Fixed(key.into()))
    }
}

impl Default for KeyBy {
    fn default() -> Self {
        KeyBy::Fixed(Box::from(&b"_"[..]))
    }
}

impl<B> MakeKey<http::Request<B>> for KeyBy {
    fn make_key<'a>(&'a self, req: &'a http::Request<B>) -> Option<Cow<'a, [u8]>> {
        match self {
            KeyBy::Fixed(key) => Some(Cow::Borrowed(key)),
            KeyBy::Route => Some(Cow::Borrowed(req.uri().path().as_bytes())),
            KeyBy::Header(name) => req.headers().get(name).map(|v| Cow::Borrowed(v.as_bytes())),
            KeyBy::Priority => {
                let p = Priority::from_extensions(req.extensions()).unwrap_or_default();
                Some(Cow::Borrowed(p.as_str().as_bytes()))
            }
        }
    }
}

// === impl KeyFn ===

impl<F, Req> MakeKey<Req> for KeyFn<F>
where
    F: Fn(&Req) -> Option<Vec<u8>>,
{
    fn make_key<'a>(&'a self, req: &'a Req) -> Option<Cow<'a, [u8]>> {
        (self.0)(req).map(Cow::Owned)
    }
}

impl<F> fmt::Debug for KeyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyFn(..)")
    }
}

/// The key as stored: as it is when short and not empty, `_` when empty,
/// else its first 96 bytes, `#` and a 64-bit hash of the whole in hex.
pub(crate) fn normalize(key: Option<Cow<'_, [u8]>>) -> Cow<'_, [u8]> {
    use std::hash::{Hash, Hasher};
    match key {
        None => Cow::Borrowed(b"_"),
        Some(k) if k.is_empty() => Cow::Borrowed(b"_"),
        Some(k) if k.len() <= MAX_KEY_LEN => k,
        Some(k) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            k.hash(&mut h);
            let mut out = Vec::with_capacity(96 + 17);
            out.extend_from_slice(&k[..96]);
            out.extend_from_slice(format!("#{:016x}", h.finish()).as_bytes());
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_requests() {
        let req = http::Request::get("/orders?x=1")
            .header("x-tenant", &b"acme\xff"[..])
            .body(())
            .unwrap();
        let k = |by: KeyBy| by.make_key(&req).map(|c| c.into_owned());
        assert_eq!(k(KeyBy::Route).unwrap(), b"/orders");
        assert_eq!(
            k(KeyBy::Header(HeaderName::from_static("x-tenant"))).unwrap(),
            b"acme\xff"
        );
        assert_eq!(k(KeyBy::Header(HeaderName::from_static("x-none"))), None);
        assert_eq!(k(KeyBy::Priority).unwrap(), b"critical");
        assert_eq!(k(KeyBy::fixed("all").unwrap()).unwrap(), b"all");
        assert_eq!(KeyBy::fixed("").unwrap_err().field(), "key");
        assert!(KeyBy::fixed([b'a'; 129]).is_err());
        let f = KeyFn(|r: &http::Request<()>| Some(r.method().as_str().as_bytes().to_vec()));
        assert_eq!(&*f.make_key(&req).unwrap(), b"GET");
    }

    #[test]
    fn long_and_empty_keys_are_bounded() {
        assert_eq!(&*normalize(None), b"_");
        assert_eq!(&*normalize(Some(Cow::Borrowed(b""))), b"_");
        let long = vec![0xffu8; 100_000];
        let a = normalize(Some(Cow::Borrowed(&long)));
        assert_eq!(a.len(), 96 + 17);
        let mut other = long.clone();
        other[99_999] = 0;
        let b = normalize(Some(Cow::Borrowed(&other)));
        assert_ne!(a, b, "the hash tells long keys apart");
        assert_eq!(&*normalize(Some(Cow::Borrowed(b"t1"))), b"t1");
    }
}
