//! MongoDB (type `mongodb`). SKELETON: the driver lands with issue 15's MongoDB part.

use crate::{ConnectionSpec, DriverError};

pub(crate) enum MongoDb {}

impl MongoDb {
    pub(crate) fn open(_spec: &ConnectionSpec) -> Result<Box<dyn crate::database::Driver>, DriverError> {
        Err(DriverError::UnsupportedKind("mongodb (not built yet)".into()))
    }
}
