//! The host's controls over a room's own state: its lock and its properties. Every change is
//! stored and announced to the whole room; a request that changes nothing announces nothing.

use roomkit_protocol::Event;

use super::{Caller, Room};
use crate::{registry::Outputs, store::StoreOp, validate::check_bytes, CoreConfig, Error};

impl Room {
    /// `lock_room` / `unlock_room`.
    pub(crate) fn set_locked(
        &mut self,
        caller: Caller<'_>,
        locked: bool,
        out: &mut Outputs,
    ) -> Result<(), Error> {
        self.require_host(caller)?;
        if self.info.locked == locked {
            return Ok(());
        }
        self.info.locked = locked;
        out.store(StoreOp::PutRoom(self.record()));
        let event = Event::RoomLockStateChanged { room_uuid: self.info.room_uuid.clone(), locked };
        out.deliver(self.audience(None), event);
        Ok(())
    }

    /// `update_room_property` (with a value) / `delete_room_property` (without).
    pub(crate) fn update_property(
        &mut self,
        config: &CoreConfig,
        caller: Caller<'_>,
        key: String,
        value: Option<String>,
        out: &mut Outputs,
    ) -> Result<(), Error> {
        self.require_host(caller)?;
        if key.is_empty() {
            return Err(Error::bad("key", "must not be empty"));
        }
        check_bytes("key", &key, config.max_property_key_bytes)?;
        let room_uuid = self.info.room_uuid.clone();
        let event = match value {
            Some(value) => {
                check_bytes("value", &value, config.max_property_value_bytes)?;
                let props = &mut self.info.properties;
                if !props.contains_key(&key) && props.len() >= config.max_properties {
                    let reason = format!("a room has at most {} properties", config.max_properties);
                    return Err(Error::bad("key", reason));
                }
                if props.get(&key) == Some(&value) {
                    return Ok(()); // unchanged: no event, as for lock and delete
                }
                props.insert(key.clone(), value.clone());
                Event::RoomPropertiesChanged { room_uuid, properties: [(key, value)].into() }
            }
            None => {
                if self.info.properties.remove(&key).is_none() {
                    return Ok(());
                }
                Event::RoomPropertiesDeleted { room_uuid, keys: vec![key] }
            }
        };
        out.store(StoreOp::PutRoom(self.record()));
        out.deliver(self.audience(None), event);
        Ok(())
    }
}
