//! `Symbol`: a provider ticker that has been checked before it reaches a query, a file name or a
//! line-protocol tag.

use std::fmt;
use std::str::FromStr;

/// Longest symbol accepted, in bytes.
pub const MAX_SYMBOL_LEN: usize = 32;

/// A validated provider ticker: `AAPL`, `BRK.B`, `600519.SS`, `EURUSD=X`, `^GSPC`, `BTC-USD`, `GC=F`.
///
/// Accepted: 1 to 32 printable ASCII characters other than whitespace, `,`, `"`, `'`, `` ` ``,
/// `\`, `;`, `/` and `#`. Letters keep their case (providers are case-sensitive for some tickers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(String);

/// Why a string is not a valid symbol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    #[error("symbol is empty")]
    Empty,
    #[error("symbol {shown} is {len} bytes long; at most {MAX_SYMBOL_LEN} are allowed")]
    TooLong { shown: String, len: usize },
    #[error("symbol {shown} contains {what} at position {position}")]
    BadChar {
        shown: String,
        what: &'static str,
        position: usize,
    },
}

impl Symbol {
    /// Checks `s` and wraps it.
    pub fn new(s: &str) -> Result<Self, SymbolError> {
        if s.is_empty() {
            return Err(SymbolError::Empty);
        }
        let shown = format!("{s:?}");
        if s.len() > MAX_SYMBOL_LEN {
            return Err(SymbolError::TooLong {
                shown: shorten(&shown),
                len: s.len(),
            });
        }
        for (position, c) in s.chars().enumerate() {
            let what = match c {
                c if c.is_whitespace() => "whitespace",
                c if c.is_control() => "a control character",
                ',' => "a comma",
                '"' | '\'' | '`' => "a quote",
                '\\' => "a backslash",
                ';' => "a semicolon",
                '/' => "a slash",
                '#' => "a '#'",
                c if !c.is_ascii() => "a non-ASCII character",
                _ => continue,
            };
            return Err(SymbolError::BadChar {
                shown,
                what,
                position,
            });
        }
        Ok(Symbol(s.to_owned()))
    }

    /// The ticker as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= 48 {
        s.to_owned()
    } else {
        let mut end = 45;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

impl FromStr for Symbol {
    type Err = SymbolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Symbol::new(s)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Symbol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Symbol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Symbol::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_tickers() {
        for s in [
            "AAPL",
            "BRK.B",
            "600519.SS",
            "EURUSD=X",
            "^GSPC",
            "BTC-USD",
            "GC=F",
            "0P000071W8.TO",
        ] {
            assert_eq!(Symbol::new(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn rejects_bad_symbols_naming_the_problem() {
        assert_eq!(Symbol::new(""), Err(SymbolError::Empty));
        let long = "A".repeat(33);
        assert!(
            Symbol::new(&long)
                .unwrap_err()
                .to_string()
                .contains("33 bytes")
        );
        let cases = [
            ("AA PL", "whitespace"),
            ("AAPL,MSFT", "a comma"),
            ("AA\"PL", "a quote"),
            ("AA'PL", "a quote"),
            ("AA\\PL", "a backslash"),
            ("AA\nPL", "whitespace"),
            ("AA\u{1}PL", "a control character"),
            ("AAPL;DROP", "a semicolon"),
        ];
        for (s, what) in cases {
            let err = Symbol::new(s).unwrap_err().to_string();
            assert!(err.contains(what), "{s:?}: {err}");
        }
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<Symbol>("\"A B\"").unwrap_err();
        assert!(err.to_string().contains("whitespace"));
        let ok: Symbol = serde_json::from_str("\"^GSPC\"").unwrap();
        assert_eq!(ok.as_str(), "^GSPC");
    }
}
