//! TallyPrime's XML gateway (type `tally`). SKELETON: the driver lands with issue 15's Tally part.

use crate::{ConnectionSpec, DriverError};

pub(crate) enum TallyDb {}

impl TallyDb {
    pub(crate) fn open(_spec: &ConnectionSpec) -> Result<Box<dyn crate::database::Driver>, DriverError> {
        Err(DriverError::UnsupportedKind("tally (not built yet)".into()))
    }
}
