//! Data sources: where bars come from.
//!
//! - [`csv`]: a directory of OHLCV CSV files, one series per file.

pub mod csv;
