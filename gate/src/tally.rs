//! Tally's SQL subset: a `SELECT` over one Tally collection, translated exactly into a
//! collection export, or refused.
//!
//! SKELETON: refuses everything until the translator lands.

use crate::{Checked, Policy, RejectCode, Rejection};

/// Translates a query the SQL layers already approved.
pub(crate) fn check(_sql: &str, _params: usize, _policy: &Policy) -> Result<Checked, Rejection> {
    Err(Rejection::new(RejectCode::SqlSyntaxError, "Tally queries are not supported yet"))
}
