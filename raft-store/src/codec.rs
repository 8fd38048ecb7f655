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

/// `#[serde(with = "codec::bytes")]` for a `Vec<u8>`: written as one run of bytes instead of
/// element by element. The encoding is the same (a length, then the bytes), so values written
/// either way read back either way; only the time to encode and decode changes, which matters
/// for file contents in records and chunk batches.
pub mod bytes {
    use serde::Deserializer;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Visitor)
    }

    struct Visitor;

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // Self-describing formats (JSON) hand bytes over as a sequence of numbers.
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

/// [`bytes`] for an `Option<Vec<u8>>`.
pub mod opt_bytes {
    use serde::Deserialize;
    use serde::Deserializer;
    use serde::Serialize;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_deref().map(Ref).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::bytes")] Vec<u8>);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }

    struct Ref<'a>(&'a [u8]);

    impl serde::Serialize for Ref<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
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
    fn bytes_fields_read_what_plain_vectors_wrote_and_back() {
        #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
        struct Plain {
            a: Vec<u8>,
            b: Option<Vec<u8>>,
            c: Option<Vec<u8>>,
        }
        #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
        struct Fast {
            #[serde(with = "bytes")]
            a: Vec<u8>,
            #[serde(with = "opt_bytes")]
            b: Option<Vec<u8>>,
            #[serde(with = "opt_bytes")]
            c: Option<Vec<u8>>,
        }
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let plain = Plain {
            a: data.clone(),
            b: Some(data[..300].to_vec()),
            c: None,
        };
        let fast = Fast {
            a: data.clone(),
            b: Some(data[..300].to_vec()),
            c: None,
        };
        let (p, f) = (encode(&plain).unwrap(), encode(&fast).unwrap());
        assert_eq!(p, f, "the same bytes on disk and on the wire");
        assert_eq!(decode::<Fast>(&p).unwrap(), fast);
        assert_eq!(decode::<Plain>(&f).unwrap(), plain);
        // JSON carries them as arrays of numbers either way.
        let json = serde_json::to_string(&fast).unwrap();
        assert_eq!(json, serde_json::to_string(&plain).unwrap());
        assert_eq!(serde_json::from_str::<Fast>(&json).unwrap(), fast);
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
