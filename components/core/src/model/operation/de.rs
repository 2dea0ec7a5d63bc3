//! [`LocalChange`]'s `Deserialize`, written out.
//!
//! The derived one (internally tagged by `change`) buffers the change into serde's generic
//! content tree and deserializes the variant's fields from that tree: code for a second
//! deserializer of every field type. This one reads the fields as they stream, and accepts
//! what the derived one did: keys in any order (a field seen before `change` is held as JSON
//! and read once `change` is known), unknown keys ignored, missing `Option` fields `None`, a
//! repeated key refused, the sequence form `[change, fields…]` read. The tests of
//! `records::journal::de` check it against the derived form, inside journal entries (the
//! only place changes are read).

use super::LocalChange;
use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;
use std::fmt;

/// The value of `change`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    GovernanceApproved,
    GovernanceHold,
    Approved,
    CancelRequested,
    CancelFollowUp,
    KeyRenewed,
}

const CHANGES: &[&str] = &[
    "governance_approved",
    "governance_hold",
    "approved",
    "cancel_requested",
    "cancel_follow_up",
    "key_renewed",
];

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ChangeVisitor;
        impl Visitor<'_> for ChangeVisitor {
            type Value = Change;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("variant identifier")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Change, E> {
                match v {
                    0 => Ok(Change::GovernanceApproved),
                    1 => Ok(Change::GovernanceHold),
                    2 => Ok(Change::Approved),
                    3 => Ok(Change::CancelRequested),
                    4 => Ok(Change::CancelFollowUp),
                    5 => Ok(Change::KeyRenewed),
                    _ => Err(E::invalid_value(
                        de::Unexpected::Unsigned(v),
                        &"variant index 0 <= i < 6",
                    )),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Change, E> {
                match v {
                    "governance_approved" => Ok(Change::GovernanceApproved),
                    "governance_hold" => Ok(Change::GovernanceHold),
                    "approved" => Ok(Change::Approved),
                    "cancel_requested" => Ok(Change::CancelRequested),
                    "cancel_follow_up" => Ok(Change::CancelFollowUp),
                    "key_renewed" => Ok(Change::KeyRenewed),
                    _ => Err(E::unknown_variant(v, CHANGES)),
                }
            }
        }
        // Any value, not an identifier: the derived form took the tag from its buffered
        // content, where a number names the variant by index.
        d.deserialize_any(ChangeVisitor)
    }
}

/// A member of a change: `change` and every variant's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Change,
    GovernanceContext,
    Explanation,
    Conditions,
    Reason,
    SupersededBy,
    OperationId,
    IdempotencyKey,
    Why,
    Other,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MemberVisitor;
        impl Visitor<'_> for MemberVisitor {
            type Value = Member;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("field identifier")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Member, E> {
                Ok(match v {
                    "change" => Member::Change,
                    "governance_context" => Member::GovernanceContext,
                    "explanation" => Member::Explanation,
                    "conditions" => Member::Conditions,
                    "reason" => Member::Reason,
                    "superseded_by" => Member::SupersededBy,
                    "operation_id" => Member::OperationId,
                    "idempotency_key" => Member::IdempotencyKey,
                    "why" => Member::Why,
                    _ => Member::Other,
                })
            }
        }
        d.deserialize_identifier(MemberVisitor)
    }
}

/// The variant's fields as they arrive.
#[derive(Default)]
struct Fields {
    governance_context: Option<Option<String>>,
    explanation: Option<Option<String>>,
    conditions: Option<Option<Value>>,
    reason: Option<Option<String>>,
    superseded_by: Option<Option<String>>,
    operation_id: Option<String>,
    idempotency_key: Option<String>,
    why: Option<String>,
}

/// Reads one key's value into [`Fields`]: a field of the change's variant, or ignored.
struct Field<'a> {
    change: Change,
    key: Member,
    fields: &'a mut Fields,
}

fn put<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    slot: &mut Option<T>,
    name: &'static str,
    d: D,
) -> Result<(), D::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(T::deserialize(d)?);
    Ok(())
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        use Change as C;
        let f = self.fields;
        match (self.change, self.key) {
            (C::GovernanceApproved, Member::GovernanceContext) => {
                put(&mut f.governance_context, "governance_context", d)
            }
            (C::GovernanceHold, Member::Explanation) => put(&mut f.explanation, "explanation", d),
            (C::GovernanceHold, Member::Conditions) => put(&mut f.conditions, "conditions", d),
            (C::CancelRequested, Member::Reason) => put(&mut f.reason, "reason", d),
            (C::CancelRequested, Member::SupersededBy) => {
                put(&mut f.superseded_by, "superseded_by", d)
            }
            (C::CancelFollowUp, Member::OperationId) => put(&mut f.operation_id, "operation_id", d),
            (C::KeyRenewed, Member::IdempotencyKey) => {
                put(&mut f.idempotency_key, "idempotency_key", d)
            }
            (C::KeyRenewed, Member::Why) => put(&mut f.why, "why", d),
            _ => IgnoredAny::deserialize(d).map(|_| ()),
        }
    }
}

fn required<T, E: de::Error>(v: Option<T>, name: &'static str) -> Result<T, E> {
    v.ok_or_else(|| E::missing_field(name))
}

impl Fields {
    /// A missing `Option` is `None`, as derived deserializers have it.
    fn into_change<E: de::Error>(self, change: Change) -> Result<LocalChange, E> {
        Ok(match change {
            Change::GovernanceApproved => LocalChange::GovernanceApproved {
                governance_context: self.governance_context.flatten(),
            },
            Change::GovernanceHold => LocalChange::GovernanceHold {
                explanation: self.explanation.flatten(),
                conditions: self.conditions.flatten(),
            },
            Change::Approved => LocalChange::Approved,
            Change::CancelRequested => LocalChange::CancelRequested {
                reason: self.reason.flatten(),
                superseded_by: self.superseded_by.flatten(),
            },
            Change::CancelFollowUp => LocalChange::CancelFollowUp {
                operation_id: required(self.operation_id, "operation_id")?,
            },
            Change::KeyRenewed => LocalChange::KeyRenewed {
                idempotency_key: required(self.idempotency_key, "idempotency_key")?,
                why: required(self.why, "why")?,
            },
        })
    }
}

struct ChangeMapVisitor;

impl<'de> Visitor<'de> for ChangeMapVisitor {
    type Value = LocalChange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("internally tagged enum LocalChange")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LocalChange, A::Error> {
        let mut change = None;
        let mut fields = Fields::default();
        // Fields that came before `change` (never in changes this code writes).
        let mut early: Vec<(Member, Value)> = Vec::new();
        while let Some(key) = map.next_key::<Member>()? {
            match key {
                Member::Change => {
                    if change.is_some() {
                        return Err(de::Error::duplicate_field("change"));
                    }
                    change = Some(map.next_value::<Change>()?);
                }
                Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
                key => match change {
                    Some(change) => map.next_value_seed(Field {
                        change,
                        key,
                        fields: &mut fields,
                    })?,
                    None => early.push((key, map.next_value()?)),
                },
            }
        }
        let change = required(change, "change")?;
        for (key, value) in early {
            // Read back as JSON text: the same deserializers as the streamed fields.
            let text = serde_json::to_vec(&value).map_err(de::Error::custom)?;
            let mut json = serde_json::Deserializer::from_slice(&text);
            Field {
                change,
                key,
                fields: &mut fields,
            }
            .deserialize(&mut json)
            .map_err(de::Error::custom)?;
        }
        fields.into_change(change)
    }

    /// `[change, fields…]`, fields in declaration order: the derived form read that too.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LocalChange, A::Error> {
        let change: Change = seq
            .next_element()?
            .ok_or_else(|| de::Error::missing_field("change"))?;
        let s = &mut seq;
        let at = &mut 0;
        let value = match change {
            Change::GovernanceApproved => LocalChange::GovernanceApproved {
                governance_context: element(s, at)?,
            },
            Change::GovernanceHold => LocalChange::GovernanceHold {
                explanation: element(s, at)?,
                conditions: element(s, at)?,
            },
            Change::Approved => LocalChange::Approved,
            Change::CancelRequested => LocalChange::CancelRequested {
                reason: element(s, at)?,
                superseded_by: element(s, at)?,
            },
            Change::CancelFollowUp => LocalChange::CancelFollowUp {
                operation_id: element(s, at)?,
            },
            Change::KeyRenewed => LocalChange::KeyRenewed {
                idempotency_key: element(s, at)?,
                why: element(s, at)?,
            },
        };
        if s.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(*at + 1, &"no more fields"));
        }
        Ok(value)
    }
}

/// The next field of a change written as a sequence.
fn element<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
    seq: &mut A,
    at: &mut usize,
) -> Result<T, A::Error> {
    let v = seq
        .next_element()?
        .ok_or_else(|| de::Error::invalid_length(*at, &"more fields of the change"))?;
    *at += 1;
    Ok(v)
}

impl<'de> Deserialize<'de> for LocalChange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ChangeMapVisitor)
    }
}
