//! `docs/asyncapi.yaml`, the event stream as outside subscribers read it, kept honest: every
//! golden fixture validates against the payload schema of its message (and a fixture changed to
//! carry an undocumented field does not), every event type and schema version the events crate
//! defines has a message, every channel address is the subject the service publishes on, and
//! the headers are the ones it sets.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use workspace::eventstore::jetstream::subjects;
use workspace_events::{AggregateType, InvocationEvent, SessionEvent};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn document() -> Value {
    let text = std::fs::read_to_string(repository().join("docs/asyncapi.yaml"))
        .expect("docs/asyncapi.yaml");
    serde_norway::from_str(&text).expect("docs/asyncapi.yaml is YAML")
}

/// The golden fixtures: `(event type, schema version, envelope)`, from their file names.
fn fixtures() -> Vec<(String, u32, Value)> {
    let dir = repository().join("events/tests/fixtures");
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the fixtures") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("a name");
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let (event_type, version) = stem.rsplit_once(".v").expect("<type>.v<N>.json");
        let text = std::fs::read_to_string(&path).expect("a fixture");
        let envelope: Value = serde_json::from_str(&text).expect("fixture JSON");
        all.push((
            event_type.to_owned(),
            version.parse().expect("a version"),
            envelope,
        ));
    }
    all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    all
}

/// Every `(event type, schema version)` a subscriber may meet: the current ones, and the older
/// ones still in logs (their fixtures).
fn versions() -> BTreeSet<(String, u32)> {
    let mut all: BTreeSet<(String, u32)> = SessionEvent::CURRENT_VERSIONS
        .iter()
        .chain(InvocationEvent::CURRENT_VERSIONS.iter())
        .map(|(t, v)| ((*t).to_owned(), *v))
        .collect();
    all.extend(fixtures().into_iter().map(|(t, v, _)| (t, v)));
    all
}

fn message_key(event_type: &str, version: u32) -> String {
    format!("{event_type}.v{version}")
}

/// A validator of the payload schema of message `key`, resolving references in the document.
fn payload_validator(doc: &Value, key: &str) -> jsonschema::Validator {
    let mut root = doc.clone();
    root["$ref"] = Value::String(format!("#/components/messages/{key}/payload"));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("the payload schema of {key} compiles: {e}"))
}

#[test]
fn every_golden_fixture_validates_against_the_payload_schema_of_its_message() {
    let doc = document();
    let fixtures = fixtures();
    assert!(fixtures.len() >= 10, "{} fixtures", fixtures.len());
    for (event_type, version, envelope) in fixtures {
        let key = message_key(&event_type, version);
        assert!(
            doc["channels"][event_type.as_str()]["messages"][key.as_str()].is_object(),
            "channel {event_type} lists no message {key}"
        );
        let validator = payload_validator(&doc, &key);
        let errors: Vec<String> = validator
            .iter_errors(&envelope)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{key}: {errors:#?}");
        // The schemas are closed: an undocumented field, or another schema version, fails.
        let mut extra = envelope.clone();
        extra["payload"]["undocumented"] = Value::Bool(true);
        assert!(
            !validator.is_valid(&extra),
            "{key} accepts an undocumented field"
        );
        let mut retyped = envelope.clone();
        retyped["schema_version"] = Value::from(version + 1);
        assert!(
            !validator.is_valid(&retyped),
            "{key} accepts another version"
        );
    }
}

#[test]
fn every_event_type_and_version_has_a_message_on_the_subject_the_service_publishes_on() {
    let doc = document();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let messages = doc["components"]["messages"]
        .as_object()
        .expect("components.messages");
    let expected = versions();
    // Live output messages are not events (their own test below).
    let documented: BTreeSet<String> = messages
        .keys()
        .filter(|k| !k.starts_with("live."))
        .cloned()
        .collect();
    let wanted: BTreeSet<String> = expected.iter().map(|(t, v)| message_key(t, *v)).collect();
    assert_eq!(
        documented, wanted,
        "docs/asyncapi.yaml's messages are not the event types and versions of the events crate"
    );
    for (event_type, version) in &expected {
        let key = message_key(event_type, *version);
        let message = &messages[&key];
        assert_eq!(message["name"], event_type.as_str(), "{key}");
        let aggregate = if event_type.starts_with("session.") {
            AggregateType::Session
        } else {
            AggregateType::Invocation
        };
        let token = subjects::event_token(aggregate, event_type).expect("an event token");
        let address = match aggregate {
            AggregateType::Session => subjects::event_subject(aggregate, "{session_id}", "", token),
            AggregateType::Invocation => {
                subjects::event_subject(aggregate, "{invocation_id}", "{session_id}", token)
            }
        };
        let channel = &doc["channels"][event_type.as_str()];
        assert_eq!(channel["address"], address.as_str(), "{event_type}");
        let parameters: BTreeSet<&str> = channel["parameters"]
            .as_object()
            .expect("parameters")
            .keys()
            .map(String::as_str)
            .collect();
        let placeholders: BTreeSet<&str> = address
            .split('.')
            .filter_map(|t| t.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(parameters, placeholders, "{event_type}");
        // Subscribers receive it.
        let operations = doc["operations"].as_object().expect("operations");
        assert!(
            operations.values().any(|op| op["action"] == "receive"
                && op["channel"]["$ref"] == format!("#/channels/{event_type}").as_str()),
            "no receive operation on {event_type}"
        );
    }
}

#[test]
fn the_documented_headers_are_the_ones_the_service_sets() {
    let doc = document();
    let headers = &doc["components"]["schemas"]["Headers"];
    let required: BTreeSet<&str> = headers["required"]
        .as_array()
        .expect("required headers")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    use workspace_events::subjects::*;
    let set = BTreeSet::from([
        HEADER_MSG_ID,
        HEADER_EVENT_TYPE,
        HEADER_SCHEMA_VERSION,
        HEADER_AGGREGATE_VERSION,
    ]);
    assert_eq!(required, set);
    for name in [
        HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE,
        subjects::HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
    ] {
        assert!(headers["properties"][name].is_object(), "{name}");
    }
    for (key, message) in doc["components"]["messages"].as_object().expect("messages") {
        if key.starts_with("live.") {
            assert!(
                message["headers"].is_null(),
                "{key}: live output has no headers"
            );
            continue;
        }
        assert_eq!(message["headers"]["$ref"], "#/components/schemas/Headers");
    }
}

#[test]
fn the_live_output_channel_is_the_subject_executors_publish_on_and_its_messages_what_they_publish()
{
    use workspace::live::{LiveMessage, OutputChunk, OutputEnd, subject};
    use workspace::runner::OutputChannel;

    let doc = document();
    let channel = &doc["channels"]["live.invocation.output"];
    assert_eq!(channel["address"], subject("{invocation_id}").as_str());
    let parameters: Vec<&String> = channel["parameters"]
        .as_object()
        .expect("parameters")
        .keys()
        .collect();
    assert_eq!(parameters, ["invocation_id"]);
    let operations = doc["operations"].as_object().expect("operations");
    assert!(operations.values().any(|op| op["action"] == "receive"
        && op["channel"]["$ref"] == "#/channels/live.invocation.output"));
    let id = "inv-7f3e2d1c0b9a8f7e";
    let samples = [
        (
            "live.output_chunk",
            LiveMessage::OutputChunk(OutputChunk::new(id, OutputChannel::Stdout, 0, b"tick 1\n")),
        ),
        (
            "live.output_chunk",
            LiveMessage::OutputChunk(OutputChunk::new(id, OutputChannel::Stderr, 7, &[0xff, 0])),
        ),
        (
            "live.output_end",
            LiveMessage::OutputEnd(OutputEnd {
                invocation_id: id.into(),
                stdout_bytes: 7,
                stderr_bytes: 9,
            }),
        ),
    ];
    for (key, message) in samples {
        assert!(
            channel["messages"][key].is_object(),
            "the channel lists {key}"
        );
        let validator = payload_validator(&doc, key);
        let json = serde_json::to_value(&message).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{key} {json}: {errors:#?}");
        let mut extra = json.clone();
        extra["undocumented"] = Value::Bool(true);
        assert!(
            !validator.is_valid(&extra),
            "{key} accepts an undocumented field"
        );
        // What the document describes, the service reads back.
        assert_eq!(
            serde_json::from_value::<LiveMessage>(json).unwrap(),
            message
        );
    }
}
