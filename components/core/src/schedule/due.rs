//! The due index (in progress).
