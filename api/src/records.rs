//! JSON produce and fetch (for curl users and `collector tail --output json`).
//!
//! Bytes are shown as UTF-8 strings (`value`) when valid, else base64 (`value_b64`); a
//! non-UTF-8 header value is `{"b64": "..."}`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One record of `POST /v1/topics/{topic}/records`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
    /// A string, or `{"b64": "..."}` for bytes (checked by [`JsonRecord::decode`], so a
    /// bad header is `invalid_record`, not `invalid_json`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

/// A [`JsonRecord`] as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub timestamp: Option<i64>,
}

impl JsonRecord {
    /// The record's bytes, or why it is invalid.
    pub fn decode(&self) -> Result<DecodedRecord, String> {
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| Ok((k.as_bytes().to_vec(), decode_header(v)?)))
            .collect::<Result<_, String>>()?;
        Ok(DecodedRecord {
            key: decode_field(&self.key, &self.key_b64, "key")?,
            value: decode_field(&self.value, &self.value_b64, "value")?,
            headers,
            timestamp: self.timestamp,
        })
    }
}

fn decode_field(
    text: &Option<String>,
    b64: &Option<String>,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (text, b64) {
        (Some(_), Some(_)) => Err(format!("give {what} or {what}_b64, not both")),
        (Some(t), None) => Ok(Some(t.as_bytes().to_vec())),
        (None, Some(b)) => B64
            .decode(b)
            .map(Some)
            .map_err(|e| format!("{what}_b64: {e}")),
        (None, None) => Ok(None),
    }
}

fn decode_header(v: &Value) -> Result<Vec<u8>, String> {
    let bad = || "a header value is a string or {\"b64\": ...}".to_owned();
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Object(o) => match o.get("b64") {
            Some(Value::String(b)) => B64.decode(b).map_err(|e| format!("header b64: {e}")),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// `POST /v1/topics/{topic}/records`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonProduce {
    pub records: Vec<JsonRecord>,
    /// All records go to this partition (which the node asked must lead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordOffset {
    pub partition: u32,
    pub offset: u64,
}

/// Reply to a JSON produce: one entry per record, in request order (`null` with `acks=0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonProduceReply {
    pub offsets: Vec<Option<RecordOffset>>,
}

/// `GET /v1/topics/{topic}/partitions/{p}/records?offset=&limit=&max_wait_ms=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonFetchQuery {
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
}

/// Bytes shown as JSON.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum JsonBytes {
    Null,
    Text(String),
    /// Not UTF-8: base64.
    B64(String),
}

impl JsonBytes {
    pub fn of(b: Option<&[u8]>) -> Self {
        match b {
            None => Self::Null,
            Some(b) => match std::str::from_utf8(b) {
                Ok(t) => Self::Text(t.to_owned()),
                Err(_) => Self::B64(B64.encode(b)),
            },
        }
    }

    /// The bytes shown (`None` for null; base64 that does not decode is an error).
    pub fn bytes(&self) -> Result<Option<Vec<u8>>, String> {
        match self {
            Self::Null => Ok(None),
            Self::Text(t) => Ok(Some(t.as_bytes().to_vec())),
            Self::B64(b) => B64.decode(b).map(Some).map_err(|e| e.to_string()),
        }
    }

    fn header_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Text(t) => Value::String(t.clone()),
            Self::B64(b) => serde_json::json!({ "b64": b }),
        }
    }

    fn from_header_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(Self::Null),
            Value::String(s) => Ok(Self::Text(s.clone())),
            Value::Object(o) => match o.get("b64") {
                Some(Value::String(b)) => Ok(Self::B64(b.clone())),
                _ => Err("a header value is a string, null or {\"b64\": ...}".into()),
            },
            _ => Err("a header value is a string, null or {\"b64\": ...}".into()),
        }
    }
}

/// One stored record as JSON: JSON fetch replies, and `collector tail --output json` (which
/// adds `topic` and `partition`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordJson {
    pub topic: Option<String>,
    pub partition: Option<u32>,
    pub offset: u64,
    pub timestamp: i64,
    pub key: JsonBytes,
    pub value: JsonBytes,
    pub headers: Vec<(String, JsonBytes)>,
}

impl RecordJson {
    /// A record from its stored parts (header keys shown lossily as UTF-8).
    pub fn new<'a>(
        offset: u64,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Self {
        Self {
            topic: None,
            partition: None,
            offset,
            timestamp,
            key: JsonBytes::of(key),
            value: JsonBytes::of(value),
            headers: headers
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), JsonBytes::of(v)))
                .collect(),
        }
    }

    pub fn located(mut self, topic: &str, partition: u32) -> Self {
        self.topic = Some(topic.to_owned());
        self.partition = Some(partition);
        self
    }
}

fn put_bytes<M: SerializeMap>(m: &mut M, name: &str, b: &JsonBytes) -> Result<(), M::Error> {
    match b {
        JsonBytes::Null => m.serialize_entry(name, &Value::Null),
        JsonBytes::Text(t) => m.serialize_entry(name, t),
        JsonBytes::B64(b) => m.serialize_entry(&format!("{name}_b64"), b),
    }
}

impl Serialize for RecordJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(t) = &self.topic {
            m.serialize_entry("topic", t)?;
        }
        if let Some(p) = &self.partition {
            m.serialize_entry("partition", p)?;
        }
        m.serialize_entry("offset", &self.offset)?;
        m.serialize_entry("timestamp", &self.timestamp)?;
        put_bytes(&mut m, "key", &self.key)?;
        put_bytes(&mut m, "value", &self.value)?;
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.header_value()))
            .collect();
        m.serialize_entry("headers", &headers)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for RecordJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            topic: Option<String>,
            partition: Option<u32>,
            offset: u64,
            timestamp: i64,
            key: Option<String>,
            key_b64: Option<String>,
            value: Option<String>,
            value_b64: Option<String>,
            #[serde(default)]
            headers: serde_json::Map<String, Value>,
        }
        let r = Raw::deserialize(d)?;
        let pick = |t: Option<String>, b: Option<String>| match (t, b) {
            (_, Some(b)) => JsonBytes::B64(b),
            (Some(t), None) => JsonBytes::Text(t),
            (None, None) => JsonBytes::Null,
        };
        let headers = r
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), JsonBytes::from_header_value(v)?)))
            .collect::<Result<_, String>>()
            .map_err(serde::de::Error::custom)?;
        Ok(Self {
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: pick(r.key, r.key_b64),
            value: pick(r.value, r.value_b64),
            headers,
        })
    }
}

/// Reply to a JSON fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonFetchReply {
    pub records: Vec<RecordJson>,
    pub high_watermark: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_show_as_text_or_base64_and_come_back() {
        let r = RecordJson::new(
            3,
            1_764_000_000_000,
            Some(&[0xff, 0x00]),
            Some(b"hello"),
            [
                (&b"host"[..], Some(&b"web1"[..])),
                (&b"bin"[..], Some(&[0xfe][..])),
            ],
        )
        .located("logs", 2);
        let v = serde_json::to_value(&r).expect("serialises");
        assert_eq!(v["key_b64"], "/wA=");
        assert!(v.get("key").is_none());
        assert_eq!(v["value"], "hello");
        assert_eq!(v["headers"]["host"], "web1");
        assert_eq!(v["headers"]["bin"]["b64"], "/g==");
        assert_eq!(v["topic"], "logs");
        let back: RecordJson = serde_json::from_value(v).expect("parses");
        // A JSON object keeps no order: headers come back sorted by name.
        let mut sorted = r.clone();
        sorted.headers.sort();
        assert_eq!(back, sorted);
        assert_eq!(back.key.bytes().expect("b64"), Some(vec![0xff, 0x00]));
    }

    #[test]
    fn json_record_decoding_refuses_both_forms_and_bad_headers() {
        let both = JsonRecord {
            value: Some("a".into()),
            value_b64: Some("YQ==".into()),
            ..JsonRecord::default()
        };
        assert!(both.decode().unwrap_err().contains("not both"));
        let mut bad = JsonRecord::default();
        bad.headers.insert("h".into(), Value::from(1));
        assert!(bad.decode().is_err());
    }
}
