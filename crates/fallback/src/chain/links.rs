//! A call's links: the chain's own requests, or each link laid over the
//! caller's request (`Chain::send`), built only when that link is tried.
//!
//! A proxy's request usually ends at its first link; building the request
//! of every backup up front (headers merged and marked, URL joined and
//! redacted for the report) was paid on every call for links that were
//! never tried.

use std::sync::OnceLock;

use tokio::time::Instant;

use crate::body::Body;
use crate::link::Endpoint;

pub(super) struct Links<'a> {
    own: &'a [Endpoint],
    over: Option<Box<Over>>,
}

/// The caller's request, and the links built over it so far.
struct Over {
    parts: http::request::Parts,
    body: Body,
    first: Endpoint,
    /// Links 1.. once built. `OnceLock`, not `OnceCell`: the call's future
    /// holds the links across awaits and must be `Send`.
    rest: Box<[OnceLock<Endpoint>]>,
    /// A gRPC call's deadline, the same for every link.
    deadline: Option<Instant>,
}

impl<'a> Links<'a> {
    /// The chain's own links, as built.
    pub(super) fn own(own: &'a [Endpoint]) -> Links<'a> {
        Links { own, over: None }
    }

    /// Every link carrying the caller's request; the first is built now
    /// (it is nearly always tried, and says whether the call is gRPC), the
    /// others when tried. `deadline` gives a gRPC call's deadline.
    pub(super) fn over(
        own: &'a [Endpoint],
        parts: http::request::Parts,
        body: Body,
        deadline: impl FnOnce(&http::HeaderMap) -> Option<Instant>,
    ) -> Links<'a> {
        let Some(template) = own.first() else {
            return Links::own(own);
        };
        let mut first = template.with_request(&parts, &body);
        let deadline = if first.grpc {
            deadline(&parts.headers)
        } else {
            None
        };
        first.deadline = deadline;
        let rest = (1..own.len()).map(|_| OnceLock::new()).collect();
        Links {
            own,
            over: Some(Box::new(Over {
                parts,
                body,
                first,
                rest,
                deadline,
            })),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.own.len()
    }

    /// Link `index`, built if it was not yet.
    pub(super) fn get(&self, index: usize) -> Option<&Endpoint> {
        let Some(over) = &self.over else {
            return self.own.get(index);
        };
        if index == 0 {
            return Some(&over.first);
        }
        let cell = over.rest.get(index - 1)?;
        Some(cell.get_or_init(|| {
            let mut ep = self.own[index].with_request(&over.parts, &over.body);
            ep.deadline = over.deadline;
            ep
        }))
    }

    pub(super) fn first(&self) -> Option<&Endpoint> {
        self.get(0)
    }

    /// Every link, each built as the iteration reaches it.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl std::ops::Index<usize> for Links<'_> {
    type Output = Endpoint;

    fn index(&self, index: usize) -> &Endpoint {
        self.get(index).expect("a link of the chain")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Chain, Link};

    fn chain() -> Chain {
        Chain::builder()
            .link(Link::get("http://a.test/api").header("x-link", "a"))
            .link(Link::get("http://b.test/v2").header("x-link", "b"))
            .link(Link::get("http://c.test/"))
            .build()
            .unwrap()
    }

    fn request() -> (http::request::Parts, Body) {
        let req = http::Request::post("/orders?id=7")
            .header("authorization", "Bearer s3cret")
            .body(())
            .unwrap();
        (req.into_parts().0, Body::from("order"))
    }

    #[test]
    fn a_link_is_built_over_the_request_only_when_asked_for() {
        let chain = chain();
        let (parts, body) = request();
        let links = Links::over(&chain.inner.endpoints, parts, body, |_| None);
        let over = links.over.as_ref().unwrap();
        assert!(
            over.rest.iter().all(|c| c.get().is_none()),
            "only the first"
        );
        assert_eq!(links.len(), 3);

        let c = &links[2];
        assert_eq!(c.uri, "http://c.test/orders?id=7");
        assert!(over.rest[0].get().is_none(), "link 1 still unbuilt");
        assert!(over.rest[1].get().is_some());

        let b = &links[1];
        assert_eq!(b.uri, "http://b.test/v2/orders?id=7");
        assert_eq!(b.method, http::Method::POST);
        assert_eq!(b.headers["x-link"], "b");
        assert!(b.headers["authorization"].is_sensitive());
        assert!(!b.idempotent);
        assert_eq!(links.iter().count(), 3);
        assert_eq!(links.first().unwrap().headers["x-link"], "a");
    }

    #[test]
    fn the_chains_own_links_are_used_as_they_are() {
        let chain = chain();
        let links = Links::own(&chain.inner.endpoints);
        assert!(std::ptr::eq(&links[1], &chain.inner.endpoints[1]));
        assert!(links.get(3).is_none());
    }

    #[test]
    fn a_grpc_deadline_goes_to_every_link() {
        let chain = chain();
        let req = http::Request::post("/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let at = Instant::now();
        let links = Links::over(
            &chain.inner.endpoints,
            req.into_parts().0,
            Body::empty(),
            |_| Some(at),
        );
        assert!(links.iter().all(|ep| ep.deadline == Some(at)));
        let (parts, body) = request();
        let links = Links::over(&chain.inner.endpoints, parts, body, |_| Some(at));
        assert!(links.iter().all(|ep| ep.deadline.is_none()), "not gRPC");
    }
}
