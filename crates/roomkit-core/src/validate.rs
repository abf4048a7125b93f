//! Field checks shared by the room and chatroom rules: lengths, property maps, message bodies
//! and recipient lists. Each failure names the wire field it is about.

use std::collections::HashSet;

use roomkit_protocol::{MessageBody, Properties, UserUuid};

use crate::{CoreConfig, Error};

/// `s` has `min` to `max` characters (not bytes).
pub(crate) fn check_chars(field: &'static str, s: &str, min: usize, max: usize) -> Result<(), Error> {
    let n = s.chars().count();
    if n < min {
        return Err(Error::bad(field, "must not be empty"));
    }
    if n > max {
        return Err(Error::bad(field, format!("at most {max} characters, got {n}")));
    }
    Ok(())
}

/// `s` has at most `max` bytes.
pub(crate) fn check_bytes(field: &'static str, s: &str, max: usize) -> Result<(), Error> {
    if s.len() > max {
        return Err(Error::bad(field, format!("at most {max} bytes, got {}", s.len())));
    }
    Ok(())
}

/// A property map within the configured count, key and value limits.
pub(crate) fn check_properties(field: &'static str, props: &Properties, c: &CoreConfig) -> Result<(), Error> {
    if props.len() > c.max_properties {
        return Err(Error::bad(field, format!("at most {} properties", c.max_properties)));
    }
    for (k, v) in props {
        if k.is_empty() || k.len() > c.max_property_key_bytes {
            return Err(Error::bad(field, format!("keys must be 1 to {} bytes", c.max_property_key_bytes)));
        }
        if v.len() > c.max_property_value_bytes {
            return Err(Error::bad(
                field,
                format!("values must be at most {} bytes", c.max_property_value_bytes),
            ));
        }
    }
    Ok(())
}

/// A text or custom body, not empty and at most `max` bytes; clients cannot send notifications.
pub(crate) fn check_body(body: &MessageBody, max: usize) -> Result<(), Error> {
    let (field, content) = match body {
        MessageBody::Text { text } => ("text", text),
        MessageBody::Custom { attach_str } => ("attach_str", attach_str),
        MessageBody::Notification { .. } => {
            return Err(Error::bad("message_type", "clients cannot send notifications"))
        }
    };
    if content.is_empty() {
        return Err(Error::bad(field, "must not be empty"));
    }
    if content.len() > max {
        return Err(Error::MessageTooLong { len: content.len(), max });
    }
    Ok(())
}

/// A directed message's recipients: not empty, duplicates dropped (first kept), at most `max`.
pub(crate) fn check_recipients(list: Vec<UserUuid>, max: usize) -> Result<Vec<UserUuid>, Error> {
    if list.is_empty() {
        return Err(Error::bad(
            "to_user_uuid_list",
            "must not be empty; omit it to send to the whole chatroom",
        ));
    }
    let mut seen = HashSet::with_capacity(list.len());
    let list: Vec<UserUuid> = list.into_iter().filter(|u| seen.insert(u.clone())).collect();
    if list.len() > max {
        return Err(Error::bad("to_user_uuid_list", format!("at most {max} recipients")));
    }
    Ok(list)
}
