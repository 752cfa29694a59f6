//! Every JSON example in `docs/api.md` parses into its `api` type and serialises back to the
//! same JSON: the documented API and the types cannot drift apart.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Every balanced `{...}` in `text` that is valid JSON.
fn json_objects(text: &str) -> Vec<Value> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' {
            let mut depth = 0usize;
            let mut in_str = false;
            let mut end = None;
            let mut j = i;
            while j < bytes.len() {
                let c = bytes[j];
                if in_str {
                    if c == b'\\' {
                        j += 1;
                    } else if c == b'"' {
                        in_str = false;
                    }
                } else if c == b'"' {
                    in_str = true;
                } else if c == b'{' {
                    depth += 1;
                } else if c == b'}' {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(j);
                        break;
                    }
                } else if c == b'\n' && depth > 0 && !text[i..j].contains('"') {
                    break;
                }
                j += 1;
            }
            if let Some(end) = end
                && let Ok(v) = serde_json::from_str::<Value>(&text[i..=end])
            {
                out.push(v);
                i = end + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

fn round_trip<T: Serialize + DeserializeOwned>(v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("docs/api.md example {v} does not parse: {e}"));
    let back = serde_json::to_value(&t).expect("serialises");
    assert_eq!(&back, v, "docs/api.md example changes in a round trip");
    t
}

fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some()
}

#[test]
fn every_example_in_the_api_docs_round_trips() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md");
    let text = std::fs::read_to_string(path).expect("reading docs/api.md");
    let mut checked = Vec::new();
    for v in json_objects(&text) {
        let kind = if has(&v, "error") {
            let e: api::ErrorEnvelope =
                serde_json::from_value(v.clone()).expect("the error envelope parses");
            assert!(!e.error.message.is_empty());
            "error"
        } else if has(&v, "batches") {
            round_trip::<api::ProduceReply>(&v);
            "produce reply"
        } else if has(&v, "records") && v["records"][0].get("offset").is_some() {
            let r = round_trip::<api::JsonFetchReply>(&v);
            assert!(!r.records.is_empty());
            "json fetch reply"
        } else if has(&v, "records") {
            let r = round_trip::<api::JsonProduce>(&v);
            for rec in &r.records {
                rec.decode().expect("documented records are valid");
            }
            "json produce"
        } else if has(&v, "offsets") {
            round_trip::<api::JsonProduceReply>(&v);
            "json produce reply"
        } else if has(&v, "producer_id") {
            round_trip::<api::ProducerId>(&v);
            "producer id"
        } else if has(&v, "name") {
            round_trip::<api::CreateTopic>(&v);
            "create topic"
        } else {
            continue;
        };
        checked.push(kind);
    }
    for kind in [
        "error",
        "produce reply",
        "json fetch reply",
        "json produce",
        "json produce reply",
        "producer id",
        "create topic",
    ] {
        assert!(
            checked.contains(&kind),
            "no {kind} example found in docs/api.md (checked: {checked:?})"
        );
    }
}

/// Every error code the API can answer with is in the table of `docs/api.md`, under its
/// status.
#[test]
fn every_error_code_is_documented_under_its_status() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md");
    let text = std::fs::read_to_string(path).expect("reading docs/api.md");
    for code in api::ErrorCode::ALL {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", code.status())))
            .unwrap_or_else(|| panic!("no row for status {} in docs/api.md", code.status()));
        assert!(
            row.contains(&format!("`{}`", code.as_str())),
            "{} is not documented in the {} row of docs/api.md",
            code.as_str(),
            code.status()
        );
    }
}
