//! Resource quantities (`500m`, `2`, `1.5Gi`, `1e3`) as exact integers, with Kubernetes' syntax,
//! rounding and canonical form.
//!
//! A quantity is held as a whole number of nano-units (`1n`), the finest precision Kubernetes
//! keeps: anything finer is rounded up (away from zero) when parsed, as Kubernetes does. That
//! makes every comparison exact and cheap, and bounds the representable range to about ±1.7e29
//! units, far beyond any real capacity (`8Ei` is 9.2e18).
//!
//! Syntax (Kubernetes' grammar):
//! ```text
//! quantity ::= [+-] number suffix
//! number   ::= digits | digits "." digits? | "." digits
//! suffix   ::= "" | n | u | m | k | M | G | T | P | E       (decimal SI)
//!            | Ki | Mi | Gi | Ti | Pi | Ei                  (binary SI)
//!            | (e | E) [+-] digits                         (decimal exponent)
//! ```
//! A lone `E` is the exa suffix; `E` followed by digits is an exponent.

use std::fmt;
use std::str::FromStr;

/// How a quantity was written, which decides how it is printed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `m`, `k`, `M`, … or no suffix.
    DecimalSI,
    /// `Ki`, `Mi`, `Gi`, …
    BinarySI,
    /// `1e3`, `5E-3`.
    DecimalExponent,
}

/// A parsed quantity. Equality and ordering compare values only (`1Ki == 1024`), as Kubernetes'
/// `Cmp` does; the format only affects [`Display`](fmt::Display).
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

/// Why a string is not a quantity; the message names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantity {input:?} is invalid: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Syntax { input: String },
    #[error("quantity {input:?} is invalid: unable to parse quantity's suffix {suffix:?}")]
    Suffix { input: String, suffix: String },
    #[error("quantity {input:?} is invalid: too large or too precise to represent")]
    OutOfRange { input: String },
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// Decimal SI suffixes and their power of ten, largest first (the order [`Display`] tries them).
const DECIMAL_SUFFIXES: [(&str, i32); 10] = [
    ("E", 18),
    ("P", 15),
    ("T", 12),
    ("G", 9),
    ("M", 6),
    ("k", 3),
    ("", 0),
    ("m", -3),
    ("u", -6),
    ("n", -9),
];

/// Binary SI suffixes and their power of two, largest first.
const BINARY_SUFFIXES: [(&str, u32); 6] = [
    ("Ei", 60),
    ("Pi", 50),
    ("Ti", 40),
    ("Gi", 30),
    ("Mi", 20),
    ("Ki", 10),
];

/// Parses a quantity. See the module documentation for the syntax.
pub fn parse_quantity(s: &str) -> Result<Quantity, QuantityError> {
    let syntax = || QuantityError::Syntax {
        input: s.to_string(),
    };
    let out_of_range = || QuantityError::OutOfRange {
        input: s.to_string(),
    };

    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let num_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, suffix) = rest.split_at(num_len);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
        return Err(syntax());
    }

    let (format, mut exp10, exp2) = parse_suffix(suffix).ok_or_else(|| {
        if suffix
            .bytes()
            .all(|b| b"eEinumkKMGTP+-0123456789".contains(&b))
        {
            QuantityError::Suffix {
                input: s.to_string(),
                suffix: suffix.to_string(),
            }
        } else {
            syntax()
        }
    })?;

    // Significant digits: leading zeros carry no value, trailing zeros move into the exponent.
    let mut digits: String = format!("{int_part}{frac_part}");
    exp10 -= frac_part.len() as i64;
    let trimmed_start = digits.trim_start_matches('0').len();
    digits.drain(..digits.len() - trimmed_start);
    while digits.ends_with('0') {
        digits.pop();
        exp10 += 1;
    }
    if digits.is_empty() {
        return Ok(Quantity::from_nanos(0, format));
    }
    if digits.len() > 38 {
        return Err(out_of_range());
    }
    let mantissa: u128 = digits.parse().map_err(|_| out_of_range())?;
    let scaled = mantissa
        .checked_mul(1u128 << exp2)
        .ok_or_else(out_of_range)?;
    // Value in nanos is scaled × 10^(exp10 + 9), rounded up when the power is negative.
    let power = exp10 + 9;
    let magnitude = if power >= 0 {
        let factor = u32::try_from(power)
            .ok()
            .and_then(|p| 10u128.checked_pow(p))
            .ok_or_else(out_of_range)?;
        scaled.checked_mul(factor).ok_or_else(out_of_range)?
    } else {
        match u32::try_from(-power)
            .ok()
            .and_then(|p| 10u128.checked_pow(p))
        {
            Some(divisor) => scaled / divisor + u128::from(scaled % divisor != 0),
            // The divisor exceeds any u128, so the value is a positive fraction of a nano.
            None => 1,
        }
    };
    let magnitude = i128::try_from(magnitude).map_err(|_| out_of_range())?;
    Ok(Quantity::from_nanos(
        if negative { -magnitude } else { magnitude },
        format,
    ))
}

/// The suffix's format, power of ten and power of two; `None` if it is not a suffix.
fn parse_suffix(suffix: &str) -> Option<(Format, i64, u32)> {
    if let Some((_, p)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        return Some((Format::DecimalSI, i64::from(*p), 0));
    }
    if let Some((_, p)) = BINARY_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        return Some((Format::BinarySI, 0, *p));
    }
    let exp = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?;
    let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    // Bounded so that exponent arithmetic cannot overflow; such values are out of range anyway.
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = exp.parse().ok()?;
    Some((Format::DecimalExponent, value, 0))
}

impl Quantity {
    /// A quantity of whole nano-units.
    pub fn from_nanos(nanos: i128, format: Format) -> Self {
        Quantity { nanos, format }
    }

    /// A whole number of units in decimal SI format (`Quantity::from_units(3)` prints `3`).
    pub fn from_units(units: i64) -> Self {
        Quantity::from_nanos(i128::from(units) * NANOS_PER_UNIT, Format::DecimalSI)
    }

    /// The exact value in nano-units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The value in thousandths, rounded up (toward positive infinity): CPU in millicores.
    pub fn milli_value(&self) -> i128 {
        ceil_div(self.nanos, 1_000_000)
    }

    /// The value in units, rounded up (toward positive infinity): memory and storage in bytes.
    pub fn value(&self) -> i128 {
        ceil_div(self.nanos, NANOS_PER_UNIT)
    }
}

fn ceil_div(n: i128, d: i128) -> i128 {
    let q = n.div_euclid(d);
    if n.rem_euclid(d) == 0 { q } else { q + 1 }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl std::hash::Hash for Quantity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_quantity(s)
    }
}

impl TryFrom<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> for Quantity {
    type Error = QuantityError;

    fn try_from(
        q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    ) -> Result<Self, Self::Error> {
        parse_quantity(&q.0)
    }
}

/// Canonical form, as Kubernetes prints it: the largest suffix that keeps the number whole
/// (`1.5Gi` → `1536Mi`, `0.5` → `500m`, `1000` → `1k`). Binary quantities that are fractional or
/// below 1Ki print in decimal SI, as Kubernetes does, to avoid confusing rounding.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let whole = self.nanos % NANOS_PER_UNIT == 0;
        match self.format {
            Format::BinarySI if whole && self.nanos.abs() >= 1024 * NANOS_PER_UNIT => {
                let units = self.nanos / NANOS_PER_UNIT;
                for (suffix, pow) in BINARY_SUFFIXES {
                    let base = 1i128 << pow;
                    if units % base == 0 {
                        return write!(f, "{}{suffix}", units / base);
                    }
                }
                write!(f, "{units}")
            }
            Format::DecimalExponent => {
                let (mantissa, pow) = largest_decimal_power(self.nanos);
                if pow == 0 {
                    write!(f, "{mantissa}")
                } else {
                    write!(f, "{mantissa}e{pow}")
                }
            }
            Format::DecimalSI | Format::BinarySI => {
                let (mantissa, pow) = largest_decimal_power(self.nanos);
                let suffix = DECIMAL_SUFFIXES
                    .iter()
                    .find(|(_, p)| *p == pow)
                    .map_or("", |(s, _)| *s);
                write!(f, "{mantissa}{suffix}")
            }
        }
    }
}

/// Splits non-zero nanos into a whole mantissa and the largest multiple-of-three power of ten
/// (from -9 to 18) that divides them exactly.
fn largest_decimal_power(nanos: i128) -> (i128, i32) {
    for (_, pow) in DECIMAL_SUFFIXES {
        let divisor = 10i128.pow((pow + 9) as u32);
        if nanos % divisor == 0 {
            return (nanos / divisor, pow);
        }
    }
    (nanos, -9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        parse_quantity(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn known_values() {
        assert_eq!(q("1.5Gi").value(), 1_610_612_736);
        assert_eq!(q("250m").milli_value(), 250);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("1E").value(), 1_000_000_000_000_000_000);
        assert_eq!(q("500m").milli_value(), 500);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q("128Mi").value(), 128 * 1024 * 1024);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("100k").value(), 100_000);
        assert_eq!(q("1M").value(), 1_000_000);
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("1.").value(), 1);
        assert_eq!(q("+3").value(), 3);
        assert_eq!(q("-3").value(), -3);
        assert_eq!(q("5e-3").milli_value(), 5);
        assert_eq!(q("100n").nanos(), 100);
        assert_eq!(q("1Ki"), q("1024"));
    }

    #[test]
    fn rounding_is_up() {
        assert_eq!(q("0.1m").milli_value(), 1);
        assert_eq!(q("1.5").value(), 2);
        assert_eq!(q("0.1n").nanos(), 1);
        assert_eq!(q("1e-30").nanos(), 1);
        assert_eq!(q("-1.5").value(), -1);
    }

    #[test]
    fn canonical_display() {
        for (input, canonical) in [
            ("1.5Gi", "1536Mi"),
            ("0.5", "500m"),
            ("1000", "1k"),
            ("1500m", "1500m"),
            ("1e3", "1e3"),
            ("1500e0", "1500"),
            ("512Mi", "512Mi"),
            ("0.5Ki", "512"),
            ("1025Ki", "1025Ki"),
            ("0.1Ki", "102400m"),
            ("0", "0"),
            ("0Gi", "0"),
            ("-2Ki", "-2Ki"),
            ("100k", "100k"),
            ("1M", "1M"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn errors_name_input_and_reason() {
        for bad in [
            "", "abc", "1.2.3", "Mi", "1 Gi", "--1", "1Gb", "1e", "1e+", ".", "0x10", "1Kii",
        ] {
            let e = parse_quantity(bad).expect_err(bad);
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
        }
        assert_eq!(
            parse_quantity("1Gb").unwrap_err().to_string(),
            "quantity \"1Gb\" is invalid: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
        assert_eq!(
            parse_quantity("1Mm").unwrap_err().to_string(),
            "quantity \"1Mm\" is invalid: unable to parse quantity's suffix \"Mm\""
        );
        assert!(matches!(
            parse_quantity("1e999999"),
            Err(QuantityError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_quantity("99999999999999999999999Ei"),
            Err(QuantityError::OutOfRange { .. })
        ));
    }

    fn any_format() -> impl Strategy<Value = Format> {
        prop_oneof![
            Just(Format::DecimalSI),
            Just(Format::BinarySI),
            Just(Format::DecimalExponent)
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = parse_quantity(&s);
        }

        #[test]
        fn parse_never_panics_on_quantity_like(s in "[+-]?[0-9.]{0,45}([eEinumkKMGTP]{0,2}[-+]?[0-9]{0,8})?") {
            let _ = parse_quantity(&s);
        }

        #[test]
        fn display_round_trips(nanos in -(1i128 << 100)..(1i128 << 100), format in any_format()) {
            let q = Quantity::from_nanos(nanos, format);
            let back = parse_quantity(&q.to_string()).unwrap();
            prop_assert_eq!(back, q);
            // The canonical form is a fixed point.
            prop_assert_eq!(back.to_string(), q.to_string());
        }

        #[test]
        fn written_quantities_round_trip(
            int in 0u64..1_000_000,
            frac in proptest::option::of("[0-9]{1,6}"),
            suffix in prop_oneof![
                Just(String::new()), Just("m".to_string()), Just("k".to_string()),
                Just("Mi".to_string()), Just("Gi".to_string()), Just("Ki".to_string()),
                (-9i32..12).prop_map(|e| format!("e{e}")),
            ],
        ) {
            let s = match frac {
                Some(f) => format!("{int}.{f}{suffix}"),
                None => format!("{int}{suffix}"),
            };
            let q = parse_quantity(&s).unwrap();
            prop_assert_eq!(parse_quantity(&q.to_string()).unwrap(), q);
        }
    }
}
