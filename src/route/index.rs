//! An index over a listener's routes, so that finding the first match
//! does not test every route of a large table (an xDS push can carry
//! thousands).
//!
//! Each route is filed under the one condition a request must meet
//! exactly for the route to match — its gRPC service, else its exact
//! path, else its exact host — or, without one, among the routes every
//! request must be tested against. A request looks up its own service,
//! path and host, and walks the (at most four) candidate lists merged in
//! route order, testing each candidate fully: the first that matches is
//! the first route of the table that matches, as without the index.
//! Small tables are scanned in order, which is cheaper than hashing.

use std::collections::HashMap;

use super::{matches, RequestFacts};
use crate::config::{HostMatch, PathMatch, Route};

/// Up to this many routes, a scan in order beats three hash lookups.
const SCAN_UP_TO: usize = 16;

#[derive(Debug, Default)]
pub struct Index {
    /// None: few routes, scanned in order.
    keyed: Option<Keyed>,
}

/// The keys in the maps come from the config file, not from clients (who
/// only look up), and the hash is seeded per process: a fast one will do.
type Map = HashMap<Box<str>, Vec<u32>, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Keyed {
    by_service: Map,
    by_path: Map,
    by_host: Map,
    /// Routes without an exact condition: tested for every request.
    rest: Vec<u32>,
}

impl Index {
    pub fn new(routes: &[Route]) -> Index {
        if routes.len() <= SCAN_UP_TO {
            return Index { keyed: None };
        }
        let mut k = Keyed::default();
        for (i, r) in routes.iter().enumerate() {
            let i = i as u32;
            let m = &r.matcher;
            let list = if let Some(s) = &m.grpc_service {
                k.by_service.entry(s.as_str().into()).or_default()
            } else if let Some(PathMatch::Exact(p)) = &m.path {
                k.by_path.entry(p.as_str().into()).or_default()
            } else if let Some(HostMatch::Exact(h)) = &m.host {
                k.by_host.entry(h.as_str().into()).or_default()
            } else {
                &mut k.rest
            };
            // In route order: i grows.
            list.push(i);
        }
        Index { keyed: Some(k) }
    }

    /// The place of the first route that matches, as
    /// [`super::find_index`] finds it.
    pub fn find(&self, routes: &[Route], req: &RequestFacts<'_>) -> Option<usize> {
        let Some(k) = &self.keyed else {
            return super::find_index(routes, req);
        };
        const NONE: &[u32] = &[];
        let lists: [&[u32]; 4] = [
            req.grpc
                .and_then(|(s, _)| k.by_service.get(s))
                .map_or(NONE, Vec::as_slice),
            k.by_path.get(req.path).map_or(NONE, Vec::as_slice),
            k.by_host.get(req.host).map_or(NONE, Vec::as_slice),
            &k.rest,
        ];
        let mut at = [0usize; 4];
        loop {
            // The smallest route number at the head of a list.
            let mut best: Option<(usize, u32)> = None;
            for (l, list) in lists.iter().enumerate() {
                if let Some(&i) = list.get(at[l]) {
                    if best.is_none_or(|(_, b)| i < b) {
                        best = Some((l, i));
                    }
                }
            }
            let (l, i) = best?;
            at[l] += 1;
            if matches(&routes[i as usize].matcher, req) {
                return Some(i as usize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteMatch;
    use http::HeaderMap;
    use rand::{Rng, SeedableRng};

    fn route(m: RouteMatch) -> Route {
        super::super::tests::route(m, "")
    }

    /// Random tables and requests over a small alphabet (so that many
    /// conditions collide): the index always finds what the scan finds.
    #[test]
    fn the_index_finds_what_the_scan_finds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let hosts = ["a.com", "b.com", "c.com"];
        let paths = ["/x", "/y", "/a.S/M", "/b.S/M"];
        let services = ["a.S", "b.S"];
        for _ in 0..300 {
            let n = rng.random_range(0..60);
            let routes: Vec<Route> = (0..n)
                .map(|_| {
                    let mut m = RouteMatch::default();
                    match rng.random_range(0..4) {
                        0 => m.host = Some(HostMatch::Exact(hosts[rng.random_range(0..3)].into())),
                        1 => m.host = Some(HostMatch::Suffix(".com".into())),
                        _ => {}
                    }
                    match rng.random_range(0..4) {
                        0 => m.path = Some(PathMatch::Exact(paths[rng.random_range(0..4)].into())),
                        1 => m.path = Some(PathMatch::Prefix("/".into())),
                        _ => {}
                    }
                    if rng.random_bool(0.4) {
                        m.grpc_service = Some(services[rng.random_range(0..2)].into());
                    }
                    if rng.random_bool(0.2) {
                        m.grpc_method = Some("M".into());
                    }
                    route(m)
                })
                .collect();
            let index = Index::new(&routes);
            let h = HeaderMap::new();
            for _ in 0..40 {
                let path = paths[rng.random_range(0..4)];
                let grpc = path
                    .strip_prefix('/')
                    .and_then(|p| p.split_once('/'))
                    .filter(|_| rng.random_bool(0.8));
                let req = RequestFacts {
                    host: hosts[rng.random_range(0..3)],
                    path,
                    headers: &h,
                    grpc,
                };
                assert_eq!(
                    index.find(&routes, &req),
                    super::super::find_index(&routes, &req)
                );
            }
        }
    }
}
