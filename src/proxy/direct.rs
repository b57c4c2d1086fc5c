//! Phase 8, direct response: a route that answers by itself
//! (`direct_response`) ends the request here, with its response header
//! edits.

use http::{Response, StatusCode};

use super::headers::apply_edits;
use super::outcome::Outcome;
use super::Step;
use crate::body;
use crate::config::{Route, RouteAction};

#[inline]
pub(super) fn direct_response(route: &Route, outcome: &mut Outcome) -> Result<(), Step> {
    let RouteAction::Direct { status, body } = &route.action else {
        return Ok(());
    };
    outcome.http_status = *status;
    let mut resp = Response::new(body::full(body.clone()));
    *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
    apply_edits(resp.headers_mut(), &route.response_headers);
    Err(Step::Answer(resp))
}
