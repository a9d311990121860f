//! The in-memory [`crate::keys::KeyStore`] state of [`crate::memory::MemoryStore`]: devices,
//! one-time keys and DM inboxes, with the SQLite backend's semantics. Held inside the memory
//! store's one mutex, so every operation is atomic.

use crate::keys::{Claimed, DeviceOwner, DeviceRecord, DeviceUpload, Dm, DmSend, DmSent, Registered};
use crate::{Result, StoreError};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

#[derive(Debug)]
pub(crate) struct Device {
    pub user: String,
    pub keeper: bool,
    pub revoked: bool,
    identity: Value,
    identity_signature: Value,
    /// One-time keys not yet claimed, oldest upload first.
    one_time_keys: VecDeque<(String, Value)>,
    /// Every key id ever uploaded (claimed ones too): a re-upload of one is ignored.
    seen_key_ids: HashSet<String>,
    fallback_key: Option<Value>,
}

impl Device {
    fn record(&self, device_id: &str) -> DeviceRecord {
        DeviceRecord {
            user: self.user.clone(),
            device_id: device_id.to_owned(),
            keeper: self.keeper,
            identity: self.identity.clone(),
            identity_signature: self.identity_signature.clone(),
            fallback_key: self.fallback_key.clone(),
            one_time_keys: self.one_time_keys.len() as u64,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct KeysState {
    /// (app, device id) → device, ordered by id.
    devices: BTreeMap<(String, String), Device>,
    /// (app, device id) → inbox, oldest first.
    inboxes: HashMap<(String, String), VecDeque<Dm>>,
    /// (app, sending device, client_id) → the ids it was answered with.
    dm_client_ids: HashMap<(String, String, String), Vec<String>>,
}

impl KeysState {
    pub fn register(&mut self, d: DeviceUpload) -> Result<Registered> {
        let key = (d.app.clone(), d.device_id.clone());
        let created = !self.devices.contains_key(&key);
        let dev = self.devices.entry(key).or_insert_with(|| Device {
            user: d.user.clone(),
            keeper: d.keeper,
            revoked: false,
            identity: d.identity.clone(),
            identity_signature: d.identity_signature.clone(),
            one_time_keys: VecDeque::new(),
            seen_key_ids: HashSet::new(),
            fallback_key: None,
        });
        if dev.revoked {
            return Err(StoreError::Forbidden("this device id was revoked and cannot be registered again"));
        }
        if dev.user != d.user {
            return Err(StoreError::Forbidden("this device id is registered by another user"));
        }
        if dev.identity != d.identity {
            return Err(StoreError::Forbidden("this device id is registered with another identity"));
        }
        dev.keeper |= d.keeper;
        dev.identity_signature = d.identity_signature;
        for k in d.one_time_keys {
            if dev.seen_key_ids.insert(k.key_id.clone()) {
                dev.one_time_keys.push_back((k.key_id, k.key));
            }
        }
        if let Some(f) = d.fallback_key {
            dev.fallback_key = Some(f);
        }
        Ok(Registered { created, one_time_keys: dev.one_time_keys.len() as u64 })
    }

    pub fn owner(&self, app: &str, device_id: &str) -> Option<DeviceOwner> {
        self.devices.get(&(app.to_owned(), device_id.to_owned())).map(|d| DeviceOwner {
            user: d.user.clone(),
            revoked: d.revoked,
            keeper: d.keeper,
        })
    }

    pub fn list(&self, app: &str, pick: impl Fn(&Device) -> bool) -> Vec<DeviceRecord> {
        let mut out: Vec<DeviceRecord> = self
            .devices
            .iter()
            .filter(|((a, _), d)| a == app && !d.revoked && pick(d))
            .map(|((_, id), d)| d.record(id))
            .collect();
        out.sort_by(|a, b| (&a.user, &a.device_id).cmp(&(&b.user, &b.device_id)));
        out
    }

    pub fn claim(&mut self, app: &str, user: &str, device_id: &str) -> Option<Claimed> {
        let d = self.devices.get_mut(&(app.to_owned(), device_id.to_owned()))?;
        if d.revoked || d.user != user {
            return None;
        }
        let (key, fallback) = match d.one_time_keys.pop_front() {
            Some((_, k)) => (k, false),
            None => (d.fallback_key.clone()?, true),
        };
        Some(Claimed {
            user: d.user.clone(),
            device_id: device_id.to_owned(),
            identity: d.identity.clone(),
            identity_signature: d.identity_signature.clone(),
            key,
            fallback,
        })
    }

    pub fn revoke(&mut self, app: &str, user: &str, device_id: &str) -> Result<()> {
        let key = (app.to_owned(), device_id.to_owned());
        let d = self.devices.get_mut(&key).filter(|d| !d.revoked).ok_or(StoreError::NotFound("device"))?;
        if d.user != user {
            return Err(StoreError::Forbidden("this device belongs to another user"));
        }
        d.revoked = true;
        d.one_time_keys.clear();
        d.fallback_key = None;
        self.inboxes.remove(&key);
        Ok(())
    }

    pub fn dm_send(&mut self, s: DmSend) -> Result<DmSent> {
        if let Some(cid) = &s.client_id
            && let Some(ids) = self.dm_client_ids.get(&(s.app.clone(), s.from_device.clone(), cid.clone()))
        {
            return Ok(DmSent { ids: ids.clone(), duplicate: true });
        }
        let mut adding: HashMap<&str, u64> = HashMap::new();
        for c in &s.copies {
            match self.devices.get(&(s.app.clone(), c.to_device.clone())) {
                Some(d) if !d.revoked && d.user == c.to_user => {}
                _ => return Err(StoreError::NotFound("device")),
            }
            *adding.entry(c.to_device.as_str()).or_default() += 1;
        }
        for (device, n) in &adding {
            let held = self.inboxes.get(&(s.app.clone(), (*device).to_owned())).map_or(0, |q| q.len() as u64);
            if held + n > s.inbox_max {
                return Err(StoreError::InboxFull);
            }
        }
        let ids: Vec<String> = s.copies.iter().map(|c| c.id.clone()).collect();
        for c in s.copies {
            self.inboxes.entry((s.app.clone(), c.to_device.clone())).or_default().push_back(c);
        }
        if let Some(cid) = s.client_id {
            self.dm_client_ids.insert((s.app, s.from_device, cid), ids.clone());
        }
        Ok(DmSent { ids, duplicate: false })
    }

    pub fn inbox(&self, app: &str, device_id: &str) -> Vec<Dm> {
        self.inboxes
            .get(&(app.to_owned(), device_id.to_owned()))
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn ack(&mut self, app: &str, device_id: &str, ids: &[String]) -> u64 {
        let Some(q) = self.inboxes.get_mut(&(app.to_owned(), device_id.to_owned())) else { return 0 };
        let before = q.len();
        q.retain(|d| !ids.contains(&d.id));
        (before - q.len()) as u64
    }

    pub fn expire(&mut self, before_ms: i64) -> u64 {
        let mut n = 0;
        for q in self.inboxes.values_mut() {
            let before = q.len();
            q.retain(|d| d.ts_ms >= before_ms);
            n += (before - q.len()) as u64;
        }
        n
    }
}
