//! Reused per-row buffers: cells borrowed from the driver's row, plus text the driver had to
//! format (timestamps, decimals, UUIDs) in one scratch `String` per row.

use std::ops::Range;

use crate::{Cell, DriverError, RowSink};

/// A cell that is either ready or a range of the row's scratch text.
#[derive(Clone, Copy)]
enum Slot<'r> {
    Ready(Cell<'r>),
    Text(usize, usize),
    Decimal(usize, usize),
}

/// Buffers reused across all rows of one query.
#[derive(Default)]
pub(crate) struct RowBuf {
    text: String,
    slots: Vec<Slot<'static>>,
    cells: Vec<Cell<'static>>,
}

/// Collects the cells of one row.
pub(crate) struct Filler<'b, 'r> {
    text: &'b mut String,
    slots: Vec<Slot<'r>>,
}

impl<'r> Filler<'_, 'r> {
    /// A cell borrowed from the row (or owning nothing).
    pub(crate) fn cell(&mut self, cell: Cell<'r>) {
        self.slots.push(Slot::Ready(cell));
    }

    /// A text cell written by `write` into the scratch buffer.
    pub(crate) fn text_with(&mut self, write: impl FnOnce(&mut String)) {
        let range = self.write(write);
        self.slots.push(Slot::Text(range.start, range.end));
    }

    /// A decimal cell written by `write` into the scratch buffer.
    pub(crate) fn decimal_with(&mut self, write: impl FnOnce(&mut String)) {
        let range = self.write(write);
        self.slots.push(Slot::Decimal(range.start, range.end));
    }

    /// A text cell written by a fallible `write` into the scratch buffer (nothing on error).
    pub(crate) fn try_text_with(
        &mut self,
        write: impl FnOnce(&mut String) -> Result<(), DriverError>,
    ) -> Result<(), DriverError> {
        let range = self.try_write(write)?;
        self.slots.push(Slot::Text(range.start, range.end));
        Ok(())
    }

    /// A decimal cell written by a fallible `write` into the scratch buffer (nothing on error).
    pub(crate) fn try_decimal_with(
        &mut self,
        write: impl FnOnce(&mut String) -> Result<(), DriverError>,
    ) -> Result<(), DriverError> {
        let range = self.try_write(write)?;
        self.slots.push(Slot::Decimal(range.start, range.end));
        Ok(())
    }

    fn try_write(
        &mut self,
        write: impl FnOnce(&mut String) -> Result<(), DriverError>,
    ) -> Result<Range<usize>, DriverError> {
        let start = self.text.len();
        if let Err(e) = write(self.text) {
            self.text.truncate(start);
            return Err(e);
        }
        Ok(start..self.text.len())
    }

    fn write(&mut self, write: impl FnOnce(&mut String)) -> Range<usize> {
        let start = self.text.len();
        write(self.text);
        start..self.text.len()
    }
}

impl RowBuf {
    /// Builds one row with `fill` and hands it to `sink`.
    pub(crate) fn emit<'r>(
        &mut self,
        sink: &mut dyn RowSink,
        fill: impl FnOnce(&mut Filler<'_, 'r>) -> Result<(), DriverError>,
    ) -> Result<(), DriverError> {
        self.text.clear();
        let mut filler =
            Filler { text: &mut self.text, slots: recycle_slots(std::mem::take(&mut self.slots)) };
        fill(&mut filler)?;
        let slots = filler.slots;
        let text = self.text.as_str();
        let mut cells = recycle_cells(std::mem::take(&mut self.cells));
        cells.extend(slots.iter().map(|slot| match *slot {
            Slot::Ready(cell) => cell,
            Slot::Text(a, b) => Cell::Text(&text[a..b]),
            Slot::Decimal(a, b) => Cell::Decimal(&text[a..b]),
        }));
        let result = sink.row(&cells);
        self.cells = recycle_cells(cells);
        self.slots = recycle_slots(slots);
        result.map_err(DriverError::from)
    }
}

/// Empties `cells` and hands its allocation back with a fresh lifetime.
///
/// `into_iter().map().collect()` between same-layout types reuses the allocation in place.
pub(crate) fn recycle_cells<'b>(mut cells: Vec<Cell<'_>>) -> Vec<Cell<'b>> {
    cells.clear();
    cells.into_iter().map(|_| Cell::Null).collect()
}

fn recycle_slots<'b>(mut slots: Vec<Slot<'_>>) -> Vec<Slot<'b>> {
    slots.clear();
    slots.into_iter().map(|_| Slot::Text(0, 0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ColumnMeta, SinkError};

    #[derive(Default)]
    struct Json(Vec<String>);
    impl RowSink for Json {
        fn columns(&mut self, _: &[ColumnMeta]) -> Result<(), SinkError> {
            Ok(())
        }
        fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), SinkError> {
            self.0.push(serde_json::to_string(cells).unwrap());
            Ok(())
        }
    }

    #[test]
    fn mixes_borrowed_and_formatted_cells_and_keeps_allocations() {
        let mut buf = RowBuf::default();
        let mut sink = Json::default();
        let owned = String::from("borrowed");
        for i in 0..3 {
            buf.emit(&mut sink, |f| {
                f.cell(Cell::Int(i));
                f.text_with(|s| s.push_str("2024-01-02T03:04:05"));
                f.cell(Cell::Text(&owned));
                f.decimal_with(|s| s.push_str("1.50"));
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(sink.0[2], r#"[2,"2024-01-02T03:04:05","borrowed","1.50"]"#);
        assert!(buf.cells.capacity() >= 4 && buf.slots.capacity() >= 4);
    }

    #[test]
    fn recycle_keeps_the_allocation() {
        let mut cells: Vec<Cell<'static>> = Vec::with_capacity(16);
        cells.push(Cell::Int(1));
        let ptr = cells.as_ptr();
        let recycled: Vec<Cell<'_>> = recycle_cells(cells);
        assert!(recycled.is_empty());
        assert!(recycled.capacity() >= 16);
        assert_eq!(recycled.as_ptr(), ptr);
    }
}
