//! A log that keeps its lines.

use crate::foundation::log::Log;
use std::cell::RefCell;

/// Collects lines for assertions.
#[derive(Default)]
pub struct Lines(pub RefCell<Vec<String>>);

impl Log for Lines {
    fn line(&self, line: &str) {
        self.0.borrow_mut().push(line.to_string());
    }
}
