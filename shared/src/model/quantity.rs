//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`), parsed by the rules of
//! `k8s.io/apimachinery/pkg/api/resource`:
//!
//! ```text
//! quantity ::= sign? number suffix
//! number   ::= digits | digits '.' digits? | '.' digits
//! suffix   ::= binarySI (Ki Mi Gi Ti Pi Ei) | decimalSI (n u m "" k M G T P E)
//!            | ('e' | 'E') sign? digits          (a decimal exponent)
//! ```
//!
//! Values are exact until converted: [`cores`] gives a float (`100m` → 0.1), [`bytes`] an
//! integer rounded up as Kubernetes' `Quantity.Value()` does (`100m` → 1, `1Ki` → 1024).

/// A parsed quantity: `mantissa × 10^exp10 × 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quantity {
    mantissa: i128,
    exp10: i32,
    exp2: u32,
}

/// More significant digits than this are not a quantity anyone writes; refusing them keeps the
/// arithmetic in `i128`.
const MAX_DIGITS: usize = 30;

fn parse(text: &str) -> Option<Quantity> {
    let text = text.trim();
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0');
    if significant.len() > MAX_DIGITS {
        return None;
    }
    let mut mantissa: i128 = if significant.is_empty() { 0 } else { significant.parse().ok()? };
    if negative {
        mantissa = -mantissa;
    }
    let mut exp10 = -i32::try_from(fraction.len()).ok()?;
    let mut exp2 = 0;
    match suffix {
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "" => {}
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            exp10 = exp10.checked_add(exponent.parse::<i32>().ok().filter(|e| e.abs() <= 1000)?)?;
        }
    }
    Some(Quantity { mantissa, exp10, exp2 })
}

/// A quantity as a number of CPU cores (or any unit, as a float): `100m` → 0.1, `2` → 2.0.
/// `None` when the text is not a quantity or the value is not finite.
pub fn cores(text: &str) -> Option<f64> {
    let q = parse(text)?;
    // The mantissa holds at most 30 digits, so the decimal string round-trips through f64's
    // own correctly rounded parser.
    let value: f64 = format!("{}e{}", q.mantissa, q.exp10).parse().ok()?;
    let value = value * 2f64.powi(i32::try_from(q.exp2).ok()?);
    value.is_finite().then_some(value)
}

/// A quantity as a whole number of bytes (or units), rounded up like Kubernetes'
/// `Quantity.Value()`: `1Ki` → 1024, `1.5G` → 1500000000, `100m` → 1. `None` when the text is
/// not a quantity or the value does not fit in an `i64`.
pub fn bytes(text: &str) -> Option<i64> {
    let q = parse(text)?;
    let scaled = q.mantissa.checked_mul(1i128.checked_shl(q.exp2)?)?;
    let value = if q.exp10 >= 0 {
        scaled.checked_mul(10i128.checked_pow(u32::try_from(q.exp10).ok()?)?)?
    } else {
        match 10i128.checked_pow(q.exp10.unsigned_abs()) {
            // Rounding up: the smallest integer not below the value.
            Some(divisor) => -(-scaled).div_euclid(divisor),
            // Dividing by more than i128 holds: a value between -1 and 1.
            None => i128::from(scaled > 0),
        }
    };
    i64::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_become_cores() {
        let cases = [
            ("100m", 0.1),
            ("250m", 0.25),
            ("1", 1.0),
            ("2.5", 2.5),
            ("0.5", 0.5),
            (".5", 0.5),
            ("1500m", 1.5),
            ("500000n", 0.0005),
            ("250u", 0.00025),
            ("1k", 1000.0),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("+2", 2.0),
            ("-1", -1.0),
            ("0", 0.0),
            ("1Ki", 1024.0),
        ];
        for (text, expected) in cases {
            assert_eq!(cores(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn memory_and_storage_quantities_become_bytes_rounded_up() {
        let cases = [
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("129M", 129_000_000),
            ("123Mi", 128_974_848),
            ("1Ki", 1024),
            ("1.5Gi", 1_610_612_736),
            ("0.5Gi", 536_870_912),
            ("1G", 1_000_000_000),
            ("1.5G", 1_500_000_000),
            ("10Ti", 10_995_116_277_760),
            ("1Ei", 1_152_921_504_606_846_976),
            ("8E", 8_000_000_000_000_000_000),
            ("100m", 1),
            ("1001m", 2),
            ("1000m", 1),
            ("-100m", 0),
            ("1n", 1),
            ("0", 0),
            ("110", 110),
        ];
        for (text, expected) in cases {
            assert_eq!(bytes(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn malformed_or_huge_quantities_are_none() {
        for text in ["", "-", ".", "1.2.3", "Mi", "1Kb", "1 Gi", "1e", "1e+", "1ee3", "abc", "1m3", "10Ei", "1e400"] {
            assert_eq!(bytes(text), None, "{text}");
        }
        for text in ["", "1Kb", "1e", "1.2.3", "x"] {
            assert_eq!(cores(text), None, "{text}");
        }
        assert_eq!(bytes("1e-400"), Some(1), "a tiny positive value rounds up to 1");
        assert_eq!(bytes("1e1001"), None, "exponents are bounded");
        assert_eq!(bytes(&"9".repeat(31)), None);
    }
}
