//! Byte sizes on the command line: `65536`, `64K`, `64M`, `2G`, `1T` (binary units; an
//! optional `iB` or `B` suffix is accepted).

/// Parses a size; the error says what was wrong.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(format!("size {text:?} does not start with a number"));
    }
    let number: u64 = t[..digits_end]
        .parse()
        .map_err(|_| format!("size {text:?} is too large"))?;
    let unit = t[digits_end..].trim();
    let unit = unit
        .strip_suffix("iB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        other => {
            return Err(format!(
                "size {text:?} has an unknown unit {other:?} (use K, M, G or T)"
            ))
        }
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn units_are_binary() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("3MiB"), Ok(3 << 20));
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("16777216T").is_err());
    }
}
