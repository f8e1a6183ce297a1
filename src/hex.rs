//! Hex decoding for the signatures and keys platforms send.

/// Bytes from lowercase or uppercase hex; `None` for anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Lowercase hex of bytes.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_refuses_junk() {
        assert_eq!(super::decode("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(super::encode(&[0, 255, 16]), "00ff10");
        for bad in ["0", "zz", "0g", "é0"] {
            assert_eq!(super::decode(bad), None, "{bad}");
        }
    }
}
