//! Encoding of everything this crate persists or sends to a peer.
//!
//! Every value is written as one format-version byte followed by its bincode (serde) encoding.
//! A reader that meets a version it does not know fails with an error naming both versions, so
//! a downgrade or a corrupt file is reported instead of being misread. When a type changes
//! shape, the new format gets the next version number and `decode` keeps reading the old one
//! (see docs/decisions/0002-persisted-format-versions.md).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format version written in front of every encoded value.
pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value: expected a format-version byte")]
    Empty,
    #[error("unknown format version {found} (this build reads version {FORMAT_VERSION}); was the data written by a newer Tandem?")]
    UnknownVersion { found: u8 },
    #[error("cannot encode value: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("cannot decode value: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("{trailing} trailing bytes after the encoded value")]
    Trailing { trailing: usize },
}

impl From<CodecError> for std::io::Error {
    fn from(e: CodecError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encode `value` with the format-version prefix.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    Ok(out)
}

/// Decode a value written by [`encode`]; the whole input must be consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion { found: version });
    }
    let (value, read) = bincode::serde::decode_from_slice(body, config())?;
    if read != body.len() {
        return Err(CodecError::Trailing {
            trailing: body.len() - read,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_value() {
        let v = (7u64, String::from("scene.cfg"), vec![1u8, 2, 3]);
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (u64, String, Vec<u8>) = decode(&bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn unknown_version_is_refused_by_name() {
        let mut bytes = encode(&1u64).unwrap();
        bytes[0] = 9;
        let err = decode::<u64>(&bytes).unwrap_err();
        assert!(matches!(err, CodecError::UnknownVersion { found: 9 }));
        assert!(err.to_string().contains("unknown format version 9"));
    }

    #[test]
    fn empty_and_trailing_input_are_refused() {
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
        let mut bytes = encode(&1u64).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<u64>(&bytes),
            Err(CodecError::Trailing { trailing: 1 })
        ));
    }
}
