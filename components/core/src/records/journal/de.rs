//! [`Entry`]'s `Deserialize`, written out.
//!
//! The derived one (`#[serde(flatten)]` over an internally tagged enum) buffers every entry
//! into serde's generic content tree, then deserializes the variant's fields (an
//! [`Operation`], an [`Observation`]) a second time from that tree: a second copy of the
//! whole operation record's deserializer, about 80 KB of each component's `.wasm`. This one
//! reads the entry as it streams, with the same deserializers the snapshot `op:{op}` uses,
//! and accepts what the derived one did: keys in any order (a variant's field seen before
//! `kind` is held as JSON and read once `kind` is known), unknown keys ignored, missing
//! `Option` fields `None`, `#[serde(default)]` fields defaulted, a repeated key refused.
//! `tests` checks it against the derived form on every shape.

use super::{Entry, EntryKind};
use crate::model::operation::{LocalChange, Observation, Operation, OperationError};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// The value of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    Observed,
    DeadlineExpired,
    Sealed,
    Local,
    DispatchFailed,
}

const KINDS: &[&str] = &[
    "created",
    "observed",
    "deadline_expired",
    "sealed",
    "local",
    "dispatch_failed",
];

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl Visitor<'_> for KindVisitor {
            type Value = Kind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("variant identifier")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
                match v {
                    0 => Ok(Kind::Created),
                    1 => Ok(Kind::Observed),
                    2 => Ok(Kind::DeadlineExpired),
                    3 => Ok(Kind::Sealed),
                    4 => Ok(Kind::Local),
                    5 => Ok(Kind::DispatchFailed),
                    _ => Err(E::invalid_value(
                        de::Unexpected::Unsigned(v),
                        &"variant index 0 <= i < 6",
                    )),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
                match v {
                    "created" => Ok(Kind::Created),
                    "observed" => Ok(Kind::Observed),
                    "deadline_expired" => Ok(Kind::DeadlineExpired),
                    "sealed" => Ok(Kind::Sealed),
                    "local" => Ok(Kind::Local),
                    "dispatch_failed" => Ok(Kind::DispatchFailed),
                    _ => Err(E::unknown_variant(v, KINDS)),
                }
            }
        }
        // Any value, not an identifier: the derived form took the tag from its buffered
        // content, where a number names the variant by index.
        d.deserialize_any(KindVisitor)
    }
}

/// A key of an entry: its own fields, `kind`, and every variant's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Seq,
    RecordedAtMs,
    Kind,
    Operation,
    Observation,
    Abandoned,
    Change,
    By,
    Error,
    RetryAtMs,
    OutcomeUnknown,
    SentDigest,
    SentAtMs,
    LookUp,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("field identifier")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "seq" => Key::Seq,
                    "recorded_at_ms" => Key::RecordedAtMs,
                    "kind" => Key::Kind,
                    "operation" => Key::Operation,
                    "observation" => Key::Observation,
                    "abandoned" => Key::Abandoned,
                    "change" => Key::Change,
                    "by" => Key::By,
                    "error" => Key::Error,
                    "retry_at_ms" => Key::RetryAtMs,
                    "outcome_unknown" => Key::OutcomeUnknown,
                    "sent_digest" => Key::SentDigest,
                    "sent_at_ms" => Key::SentAtMs,
                    "look_up" => Key::LookUp,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// The variant's fields as they arrive.
#[derive(Default)]
struct Fields {
    operation: Option<Box<Operation>>,
    observation: Option<Box<Observation>>,
    abandoned: Option<u64>,
    change: Option<LocalChange>,
    by: Option<Option<String>>,
    error: Option<OperationError>,
    retry_at_ms: Option<Option<u64>>,
    outcome_unknown: Option<bool>,
    sent_digest: Option<Option<String>>,
    sent_at_ms: Option<Option<u64>>,
    look_up: Option<bool>,
}

/// Reads one key's value into [`Fields`]: a field of `kind`'s variant, or ignored.
struct Field<'a> {
    kind: Kind,
    key: Key,
    fields: &'a mut Fields,
}

/// A key seen twice is refused, as derived deserializers do.
fn vacant<T, E: de::Error>(slot: &Option<T>, name: &'static str) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::duplicate_field(name)),
        None => Ok(()),
    }
}

fn put<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    slot: &mut Option<T>,
    name: &'static str,
    d: D,
) -> Result<(), D::Error> {
    vacant(slot, name)?;
    *slot = Some(T::deserialize(d)?);
    Ok(())
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let f = self.fields;
        match (self.kind, self.key) {
            (Kind::Created, Key::Operation) => put(&mut f.operation, "operation", d),
            (Kind::Observed, Key::Observation) => put(&mut f.observation, "observation", d),
            (Kind::Sealed, Key::Abandoned) => put(&mut f.abandoned, "abandoned", d),
            (Kind::Local, Key::Change) => put(&mut f.change, "change", d),
            (Kind::Local, Key::By) => put(&mut f.by, "by", d),
            (Kind::DispatchFailed, Key::Error) => put(&mut f.error, "error", d),
            (Kind::DispatchFailed, Key::RetryAtMs) => put(&mut f.retry_at_ms, "retry_at_ms", d),
            (Kind::DispatchFailed, Key::OutcomeUnknown) => {
                put(&mut f.outcome_unknown, "outcome_unknown", d)
            }
            (Kind::DispatchFailed, Key::SentDigest) => put(&mut f.sent_digest, "sent_digest", d),
            (Kind::DispatchFailed, Key::SentAtMs) => put(&mut f.sent_at_ms, "sent_at_ms", d),
            (Kind::DispatchFailed, Key::LookUp) => put(&mut f.look_up, "look_up", d),
            _ => IgnoredAny::deserialize(d).map(|_| ()),
        }
    }
}

fn required<T, E: de::Error>(v: Option<T>, name: &'static str) -> Result<T, E> {
    v.ok_or_else(|| E::missing_field(name))
}

impl Fields {
    fn into_kind<E: de::Error>(self, kind: Kind) -> Result<EntryKind, E> {
        Ok(match kind {
            Kind::Created => EntryKind::Created {
                operation: required(self.operation, "operation")?,
            },
            Kind::Observed => EntryKind::Observed {
                observation: required(self.observation, "observation")?,
            },
            Kind::DeadlineExpired => EntryKind::DeadlineExpired,
            Kind::Sealed => EntryKind::Sealed {
                abandoned: required(self.abandoned, "abandoned")?,
            },
            Kind::Local => EntryKind::Local {
                change: required(self.change, "change")?,
                by: self.by.flatten(),
            },
            Kind::DispatchFailed => EntryKind::DispatchFailed {
                error: required(self.error, "error")?,
                // A missing `Option` is `None`, as derived deserializers have it.
                retry_at_ms: self.retry_at_ms.flatten(),
                outcome_unknown: required(self.outcome_unknown, "outcome_unknown")?,
                sent_digest: self.sent_digest.flatten(),
                sent_at_ms: self.sent_at_ms.flatten(),
                look_up: self.look_up.unwrap_or_default(),
            },
        })
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct Entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
        let (mut seq, mut recorded_at_ms, mut kind) = (None, None, None);
        let mut fields = Fields::default();
        // Variant fields that came before `kind` (never in entries this code writes).
        let mut early: Vec<(Key, serde_json::Value)> = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Seq => {
                    vacant(&seq, "seq")?;
                    seq = Some(map.next_value()?);
                }
                Key::RecordedAtMs => {
                    vacant(&recorded_at_ms, "recorded_at_ms")?;
                    recorded_at_ms = Some(map.next_value()?);
                }
                Key::Kind => {
                    vacant(&kind, "kind")?;
                    kind = Some(map.next_value::<Kind>()?);
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
                key => match kind {
                    Some(kind) => map.next_value_seed(Field {
                        kind,
                        key,
                        fields: &mut fields,
                    })?,
                    None => early.push((key, map.next_value()?)),
                },
            }
        }
        let seq = required(seq, "seq")?;
        let recorded_at_ms = required(recorded_at_ms, "recorded_at_ms")?;
        let kind = required(kind, "kind")?;
        for (key, value) in early {
            // Read back as JSON text: the same deserializers as the streamed fields.
            let text = serde_json::to_vec(&value).map_err(de::Error::custom)?;
            let mut json = serde_json::Deserializer::from_slice(&text);
            Field {
                kind,
                key,
                fields: &mut fields,
            }
            .deserialize(&mut json)
            .map_err(de::Error::custom)?;
        }
        Ok(Entry {
            seq,
            recorded_at_ms,
            kind: fields.into_kind(kind)?,
        })
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntryVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::status::TaskStatus;
    use crate::testing::{obs, sample};
    use serde::Deserialize;
    use serde_json::{Value, json};

    /// The derived form this module replaces, kept to check it against.
    #[derive(Deserialize)]
    struct Derived {
        seq: u64,
        recorded_at_ms: u64,
        #[serde(flatten)]
        kind: DerivedKind,
    }

    #[derive(Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum DerivedKind {
        Created {
            operation: Box<Operation>,
        },
        Observed {
            observation: Box<Observation>,
        },
        DeadlineExpired,
        Sealed {
            abandoned: u64,
        },
        Local {
            change: DerivedChange,
            #[serde(default)]
            by: Option<String>,
        },
        DispatchFailed {
            error: OperationError,
            retry_at_ms: Option<u64>,
            outcome_unknown: bool,
            #[serde(default)]
            sent_digest: Option<String>,
            #[serde(default)]
            sent_at_ms: Option<u64>,
            #[serde(default)]
            look_up: bool,
        },
    }

    /// [`LocalChange`] as derived before its `Deserialize` was written out.
    #[derive(Deserialize)]
    #[serde(tag = "change", rename_all = "snake_case")]
    enum DerivedChange {
        GovernanceApproved {
            governance_context: Option<String>,
        },
        GovernanceHold {
            explanation: Option<String>,
            conditions: Option<Value>,
        },
        Approved,
        CancelRequested {
            reason: Option<String>,
            superseded_by: Option<String>,
        },
        CancelFollowUp {
            operation_id: String,
        },
        KeyRenewed {
            idempotency_key: String,
            why: String,
        },
    }

    impl From<DerivedChange> for LocalChange {
        fn from(d: DerivedChange) -> LocalChange {
            match d {
                DerivedChange::GovernanceApproved { governance_context } => {
                    LocalChange::GovernanceApproved { governance_context }
                }
                DerivedChange::GovernanceHold {
                    explanation,
                    conditions,
                } => LocalChange::GovernanceHold {
                    explanation,
                    conditions,
                },
                DerivedChange::Approved => LocalChange::Approved,
                DerivedChange::CancelRequested {
                    reason,
                    superseded_by,
                } => LocalChange::CancelRequested {
                    reason,
                    superseded_by,
                },
                DerivedChange::CancelFollowUp { operation_id } => {
                    LocalChange::CancelFollowUp { operation_id }
                }
                DerivedChange::KeyRenewed {
                    idempotency_key,
                    why,
                } => LocalChange::KeyRenewed {
                    idempotency_key,
                    why,
                },
            }
        }
    }

    impl From<Derived> for Entry {
        fn from(d: Derived) -> Entry {
            let kind = match d.kind {
                DerivedKind::Created { operation } => EntryKind::Created { operation },
                DerivedKind::Observed { observation } => EntryKind::Observed { observation },
                DerivedKind::DeadlineExpired => EntryKind::DeadlineExpired,
                DerivedKind::Sealed { abandoned } => EntryKind::Sealed { abandoned },
                DerivedKind::Local { change, by } => EntryKind::Local {
                    change: change.into(),
                    by,
                },
                DerivedKind::DispatchFailed {
                    error,
                    retry_at_ms,
                    outcome_unknown,
                    sent_digest,
                    sent_at_ms,
                    look_up,
                } => EntryKind::DispatchFailed {
                    error,
                    retry_at_ms,
                    outcome_unknown,
                    sent_digest,
                    sent_at_ms,
                    look_up,
                },
            };
            Entry {
                seq: d.seq,
                recorded_at_ms: d.recorded_at_ms,
                kind,
            }
        }
    }

    fn entries() -> Vec<Entry> {
        let error = OperationError::new("SELLER_UNAVAILABLE", "connection reset");
        [
            EntryKind::Created {
                operation: Box::new(sample("op1")),
            },
            EntryKind::Observed {
                observation: Box::new(obs(TaskStatus::Working, Some("task_1"))),
            },
            EntryKind::DeadlineExpired,
            EntryKind::Sealed { abandoned: 4 },
            EntryKind::Local {
                change: LocalChange::Approved,
                by: Some("ak_live_1234".into()),
            },
            EntryKind::Local {
                change: LocalChange::GovernanceHold {
                    explanation: Some("budget".into()),
                    conditions: Some(json!({"max": 5})),
                },
                by: None,
            },
            EntryKind::DispatchFailed {
                error: error.clone(),
                retry_at_ms: Some(9_000),
                outcome_unknown: true,
                sent_digest: Some("ab12".into()),
                sent_at_ms: Some(8_000),
                look_up: true,
            },
            EntryKind::DispatchFailed {
                error,
                retry_at_ms: None,
                outcome_unknown: false,
                sent_digest: None,
                sent_at_ms: None,
                look_up: false,
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Entry {
            seq: i as u64 + 1,
            recorded_at_ms: 1_000 + i as u64,
            kind,
        })
        .collect()
    }

    /// JSON text of an object with its members in the given order.
    fn object(members: &[(&str, &Value)]) -> Vec<u8> {
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("{}:{}", json!(k), v))
            .collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    }

    /// Every entry as written, then its members rotated (so variant fields come before
    /// `kind`, and `seq` last), each one left out, one repeated, an unknown one added, and
    /// `null` in each place.
    fn variants(e: &Entry) -> Vec<Vec<u8>> {
        shapes(&serde_json::to_vec(e).unwrap())
    }

    fn shapes(written: &[u8]) -> Vec<Vec<u8>> {
        let written = written.to_vec();
        let Value::Object(map) = serde_json::from_slice(&written).unwrap() else {
            unreachable!()
        };
        let members: Vec<(&str, &Value)> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut out = vec![written.clone()];
        for r in 0..members.len() {
            let mut m = members.clone();
            m.rotate_left(r);
            out.push(object(&m));
            m.reverse();
            out.push(object(&m));
        }
        let null = Value::Null;
        let unknown = json!({"x": [1, 2]});
        for i in 0..members.len() {
            let mut m = members.clone();
            m.remove(i);
            out.push(object(&m));
            let mut m = members.clone();
            m.push(members[i]);
            out.push(object(&m));
            let mut m = members.clone();
            m.insert(i, members[i]);
            out.push(object(&m));
            let mut m = members.clone();
            m[i].1 = &null;
            out.push(object(&m));
        }
        let mut m = members.clone();
        m.insert(1, ("unknown_key", &unknown));
        out.push(object(&m));
        let mut m = members.clone();
        m.push(("operation", &unknown));
        out.push(object(&m));
        out
    }

    #[test]
    fn reads_what_the_derived_form_read_and_refuses_what_it_refused() {
        let mut checked = 0;
        let odd: Vec<Vec<u8>> = [
            r#"{"seq":1,"recorded_at_ms":2,"kind":"bogus"}"#,
            r#"{"seq":1,"recorded_at_ms":2,"kind":3,"abandoned":1}"#,
            r#"{"seq":1,"recorded_at_ms":2,"kind":9}"#,
            r#"{"seq":1,"recorded_at_ms":2}"#,
            r#"{"seq":1,"recorded_at_ms":2,"kind":"deadline_expired","abandoned":{}}"#,
            r#"{"seq":-1,"recorded_at_ms":2,"kind":"deadline_expired"}"#,
            r#"{"seq":"1","recorded_at_ms":2,"kind":"deadline_expired"}"#,
            r#"{"seq":1.5,"recorded_at_ms":2,"kind":"deadline_expired"}"#,
            r#"{"seq":1,"recorded_at_ms":2,"kind":"sealed","abandoned":"x"}"#,
            r#"{"abandoned":7,"seq":1,"recorded_at_ms":2,"kind":"sealed"}"#,
            r#"{"seq":1,"recorded_at_ms":2,"kind":"local","change":{"change":"approved"},"by":5}"#,
            r#"[1,2,"deadline_expired"]"#,
            r#"{}"#,
            r#"null"#,
            r#"7"#,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let all: Vec<Vec<u8>> = entries()
            .iter()
            .flat_map(variants)
            .chain(odd)
            .chain(changes())
            .collect();
        for text in all {
            let ours = serde_json::from_slice::<Entry>(&text).map_err(|e| e.to_string());
            let derived = serde_json::from_slice::<Derived>(&text)
                .map(Entry::from)
                .map_err(|e| e.to_string());
            let shown = String::from_utf8_lossy(&text);
            match (&ours, &derived) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{shown}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{shown}: ours {ours:?}, derived {derived:?}"),
            }
            // Through a `Value` too (tests read entries with `from_value`).
            let v: Option<Value> = serde_json::from_slice(&text).ok();
            if let Some(v) = v {
                let ours = serde_json::from_value::<Entry>(v.clone()).ok();
                let derived = serde_json::from_value::<Derived>(v).ok().map(Entry::from);
                assert_eq!(ours, derived, "{shown}");
            }
            checked += 1;
        }
        assert!(checked > 100, "{checked}");
    }

    /// Local entries with every change in every shape: members reordered, left out,
    /// repeated, `null`, and the sequence form `[change, fields…]`.
    fn changes() -> Vec<Vec<u8>> {
        let samples = [
            LocalChange::GovernanceApproved {
                governance_context: Some("ctx".into()),
            },
            LocalChange::GovernanceApproved {
                governance_context: None,
            },
            LocalChange::GovernanceHold {
                explanation: Some("why".into()),
                conditions: Some(json!([{"max": 1}])),
            },
            LocalChange::GovernanceHold {
                explanation: None,
                conditions: None,
            },
            LocalChange::Approved,
            LocalChange::CancelRequested {
                reason: Some("re-plan".into()),
                superseded_by: Some("op9".into()),
            },
            LocalChange::CancelFollowUp {
                operation_id: "op2".into(),
            },
            LocalChange::KeyRenewed {
                idempotency_key: "k2".into(),
                why: "get_media_buys".into(),
            },
        ];
        let mut texts: Vec<Vec<u8>> = samples
            .iter()
            .flat_map(|c| shapes(&serde_json::to_vec(c).unwrap()))
            .collect();
        for seq in [
            r#"["approved"]"#,
            r#"["approved", 1, 2]"#,
            r#"[2]"#,
            r#"[]"#,
            r#"["governance_approved", "ctx"]"#,
            r#"["governance_approved", null]"#,
            r#"["governance_approved"]"#,
            r#"["governance_approved", "ctx", "more"]"#,
            r#"["governance_hold", "why", {"a": 1}]"#,
            r#"["governance_hold", "why"]"#,
            r#"["cancel_requested", null, "op9"]"#,
            r#"["cancel_follow_up", "op2"]"#,
            r#"["cancel_follow_up", null]"#,
            r#"[4, "op2"]"#,
            r#"["key_renewed", "k2", "why"]"#,
            r#"["key_renewed", "k2"]"#,
            r#"["bogus"]"#,
            r#"{"change": 5, "idempotency_key": "k", "why": "w"}"#,
            r#"{"change": 6}"#,
            r#"{"change": "bogus"}"#,
            r#"{"change": null}"#,
            r#"{}"#,
            r#""approved""#,
            r#"null"#,
        ] {
            texts.push(seq.as_bytes().to_vec());
        }
        texts
            .into_iter()
            .map(|change| {
                let change = String::from_utf8(change).unwrap();
                format!(r#"{{"seq":1,"recorded_at_ms":2,"kind":"local","change":{change}}}"#)
                    .into_bytes()
            })
            .collect()
    }

    #[test]
    fn entries_round_trip() {
        for e in entries() {
            let back: Entry = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
            assert_eq!(back, e);
        }
    }
}
