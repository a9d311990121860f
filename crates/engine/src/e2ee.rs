//! End-to-end encryption on the server side (PROTOCOL.md §7): the key directory, direct
//! messages with an offline inbox per device, roster commits and envelopes of encrypted
//! channels, and the keeper's `keys_needed`. The server stores and routes what clients
//! sealed; it reads only the fields §7 names and never logs bodies, keys or envelopes.
//!
//! Every event leaves through the broker: a `dm` as an [`Envelope::Device`] for the
//! connections that declared the device, `keys_needed` and the `member_left` of encrypted
//! channels as an [`Envelope::Keeper`] for the app's keeper connections.

use crate::Principal;
use crate::broker::Envelope;
use crate::error::EngineError;
use crate::events::{event_of, to_bytes};
use crate::ops::{ConnHandle, Engine};
use herald_proto::e2ee::{
    ClaimOk, ClaimTarget, ClaimedKey, CommitList, CommitPosted, CommitView, DeviceInfo, DeviceList,
    DeviceUploaded, DmInbox, DmView, EnvelopeList, EnvelopeView, EpochEnvelope, PostCommit,
};
use herald_proto::frames::{DmSendOk, DmTo, Event};
use herald_proto::{ClientId, DeviceId, EntryKind, UserId};
use herald_store::keys::{Commit, DeviceRecord, DeviceUpload, Dm, DmSend, EnvelopeRow, OneTimeKey};
use herald_store::{Applied, Guard, Mutation, StoreError};
use serde_json::Value;
use std::collections::HashSet;

/// Most devices one `POST /v1/keys/claim` names.
pub const MAX_CLAIMS: usize = 1000;
/// Most one-time keys one bundle upload carries.
pub const MAX_ONE_TIME_KEYS: usize = 1000;
/// Most copies one `dm.send` carries.
pub const MAX_DM_COPIES: usize = 1000;
/// Most ids one `dm.ack` names.
pub const MAX_ACK_IDS: usize = 10_000;
/// Most envelopes one commit or `POST …/envelopes` carries.
pub const MAX_ENVELOPES: usize = 10_000;

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::BadRequest(msg.into())
}

fn store_err(e: StoreError) -> EngineError {
    match e {
        StoreError::InboxFull => EngineError::RateLimited { retry_after_ms: 1000 },
        e => EngineError::from_store(e, ""),
    }
}

fn info(d: DeviceRecord) -> DeviceInfo {
    DeviceInfo {
        user: d.user,
        device_id: d.device_id,
        identity: d.identity,
        identity_signature: d.identity_signature,
        fallback_key: d.fallback_key,
        one_time_keys: d.one_time_keys,
    }
}

fn dm_view(d: &Dm) -> DmView {
    DmView {
        id: d.id.clone(),
        from: d.from.clone(),
        from_device: d.from_device.clone(),
        body: d.body.clone(),
        ts: herald_proto::time::format_ms(d.ts_ms),
    }
}

fn dm_event(d: &Dm) -> Event {
    Event::Dm {
        id: d.id.clone(),
        from: d.from.clone(),
        from_device: d.from_device.clone(),
        body: d.body.clone(),
        ts: herald_proto::time::format_ms(d.ts_ms),
    }
}

/// 64 lowercase hex digits (a commit hash).
fn check_hash(h: &str, field: &str) -> Result<(), EngineError> {
    if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(bad(format!("{field} must be 64 lowercase hex digits")))
    }
}

/// The fields of a bundle the server reads (§7), checked for shape only: no signature is
/// verified here (clients do).
fn read_bundle(
    device_id: &str,
    bundle: &Value,
) -> Result<(Value, Value, Vec<OneTimeKey>, Option<Value>), EngineError> {
    let obj = bundle.as_object().ok_or_else(|| bad("bundle must be a JSON object"))?;
    let identity = obj
        .get("identity")
        .filter(|v| v.is_object())
        .ok_or_else(|| bad("bundle.identity must be an object"))?;
    if let Some(id) = identity.get("device_id")
        && id.as_str() != Some(device_id)
    {
        return Err(bad("bundle.identity.device_id must be the device id of the path"));
    }
    let signature = obj
        .get("identity_signature")
        .filter(|v| v.is_string())
        .ok_or_else(|| bad("bundle.identity_signature must be a string"))?;
    let keys = match obj.get("one_time_keys") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(bad("bundle.one_time_keys must be an array")),
    };
    if keys.len() > MAX_ONE_TIME_KEYS {
        return Err(bad(format!("at most {MAX_ONE_TIME_KEYS} one-time keys per upload")));
    }
    let mut one_time_keys = Vec::with_capacity(keys.len());
    for k in keys {
        let key_id = k
            .get("key_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or_else(|| bad("every one-time key must be an object with a key_id of 1-128 characters"))?
            .to_owned();
        one_time_keys.push(OneTimeKey { key_id, key: k });
    }
    let fallback = match obj.get("fallback_key") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(bad("bundle.fallback_key must be an object or null")),
    };
    Ok((identity.clone(), signature.clone(), one_time_keys, fallback))
}

impl Engine {
    /// Checks the device a `connect` declares: one of the caller's (another user's:
    /// `forbidden`; unknown or revoked: `not_found`).
    pub async fn check_device(&self, who: &Principal, device: &str) -> Result<(), EngineError> {
        let device = DeviceId::parse(device)?;
        match self.store.keys().device_owner(&who.app, device.as_str()).await.map_err(store_err)? {
            Some(o) if o.revoked => Err(EngineError::NotFound(format!("device {device:?} was revoked"))),
            Some(o) if o.user != who.user.id => {
                Err(EngineError::Forbidden(format!("device {device:?} belongs to another user")))
            }
            Some(_) => Ok(()),
            None => Err(EngineError::NotFound(format!("device {device:?} not found"))),
        }
    }

    /// Indexes a connection by its declared device (checked with [`Engine::check_device`])
    /// and its `keeper` grant. With a device, [`Engine::resume`] sends the inbox first.
    pub fn attach_e2ee(&self, conn: &ConnHandle, who: &Principal, device: Option<String>) {
        if device.is_some() || who.grants.keeper {
            self.hub.attach_e2ee(conn.shared(), device, who.grants.keeper);
        }
    }

    /// The declared device's whole inbox, oldest first, then the DMs that arrived meanwhile.
    /// False if the connection went away.
    pub(crate) async fn send_inbox(&self, conn: &ConnHandle) -> Result<bool, EngineError> {
        let Some(device) = conn.device() else { return Ok(true) };
        let inbox = self.store.keys().dm_inbox(&conn.app, &device).await.map_err(store_err)?;
        let mut sent = HashSet::with_capacity(inbox.len());
        for d in &inbox {
            if !conn.send_paced(to_bytes(&dm_event(d))).await {
                return Ok(false);
            }
            sent.insert(d.id.clone());
        }
        conn.release_dms(&sent);
        Ok(true)
    }

    /// `dm.send` from `device` (the connection's).
    pub async fn dm_send(
        &self,
        who: &Principal,
        device: &str,
        to: Vec<DmTo>,
        client_id: Option<String>,
    ) -> Result<DmSendOk, EngineError> {
        if to.is_empty() {
            return Err(bad("to must name at least one device"));
        }
        if to.len() > MAX_DM_COPIES {
            return Err(bad(format!("at most {MAX_DM_COPIES} copies per dm.send")));
        }
        let client_id = client_id.map(ClientId::parse).transpose()?.map(ClientId::into_string);
        // The sending device may have been revoked since this connection declared it.
        self.check_device(who, device).await?;
        let now = self.clock.now_ms();
        let mut copies = Vec::with_capacity(to.len());
        for t in to {
            let user = UserId::parse(t.user)?.into_string();
            let to_device = DeviceId::parse(t.device_id)?.into_string();
            if t.body.len() > self.config.max_content_bytes {
                return Err(EngineError::PayloadTooLarge(format!(
                    "a DM body is {} bytes; the limit is {}",
                    t.body.len(),
                    self.config.max_content_bytes
                )));
            }
            copies.push(Dm {
                id: self.ids.new_id(),
                to_user: user,
                to_device,
                from: who.user.id.clone(),
                from_device: device.to_owned(),
                body: t.body,
                ts_ms: now,
            });
        }
        let send = DmSend {
            app: who.app.clone(),
            from: who.user.id.clone(),
            from_device: device.to_owned(),
            client_id,
            copies: copies.clone(),
            inbox_max: self.config.dm_inbox_max,
        };
        let sent = self.store.keys().dm_send(send).await.map_err(store_err)?;
        if !sent.duplicate {
            let envelopes: Vec<Envelope> = copies
                .iter()
                .map(|d| Envelope::Device {
                    app: who.app.clone(),
                    device: d.to_device.clone(),
                    id: d.id.clone(),
                    frame: to_bytes(&dm_event(d)),
                })
                .collect();
            self.broker.publish(&envelopes);
        }
        Ok(DmSendOk { ids: sent.ids })
    }

    /// `dm.ack` / `POST /v1/dm/ack` for a device (already known to be the caller's).
    pub async fn dm_ack(&self, who: &Principal, device: &str, ids: Vec<String>) -> Result<(), EngineError> {
        if ids.len() > MAX_ACK_IDS {
            return Err(bad(format!("at most {MAX_ACK_IDS} ids per ack")));
        }
        self.store.keys().dm_ack(&who.app, device, &ids).await.map_err(store_err)?;
        Ok(())
    }

    /// The caller's own, live device `device` (REST calls naming one).
    async fn own_device(&self, who: &Principal, device: &str) -> Result<String, EngineError> {
        self.check_device(who, device).await?;
        Ok(device.to_owned())
    }

    /// `GET /v1/dm/inbox?device=`.
    pub async fn dm_inbox(&self, who: &Principal, device: &str) -> Result<DmInbox, EngineError> {
        let device = self.own_device(who, device).await?;
        let inbox = self.store.keys().dm_inbox(&who.app, &device).await.map_err(store_err)?;
        Ok(DmInbox { dms: inbox.iter().map(dm_view).collect() })
    }

    /// `POST /v1/dm/ack`.
    pub async fn dm_ack_rest(
        &self,
        who: &Principal,
        device: &str,
        ids: Vec<String>,
    ) -> Result<(), EngineError> {
        let device = self.own_device(who, device).await?;
        self.dm_ack(who, &device, ids).await
    }

    /// Erases DMs older than `--dm-ttl`; how many.
    pub async fn expire_dms(&self) -> Result<u64, EngineError> {
        let ttl = i64::try_from(self.config.dm_ttl_ms).unwrap_or(i64::MAX);
        let before = self.clock.now_ms().saturating_sub(ttl);
        self.store.keys().dm_expire(before).await.map_err(store_err)
    }

    /// `PUT /v1/keys/devices/{device_id}`: `(created, answer)`.
    pub async fn register_device(
        &self,
        who: &Principal,
        device_id: &str,
        bundle: &Value,
    ) -> Result<(bool, DeviceUploaded), EngineError> {
        let device_id = DeviceId::parse(device_id)?.into_string();
        let (identity, identity_signature, one_time_keys, fallback_key) = read_bundle(&device_id, bundle)?;
        self.note_user(who).await?;
        let upload = DeviceUpload {
            app: who.app.clone(),
            user: who.user.id.clone(),
            device_id: device_id.clone(),
            keeper: who.grants.keeper,
            identity,
            identity_signature,
            one_time_keys,
            fallback_key,
        };
        let r = self.store.keys().register_device(upload).await.map_err(store_err)?;
        if r.created {
            self.keys_needed_everywhere(who).await;
        }
        Ok((r.created, DeviceUploaded { device_id, one_time_keys: r.one_time_keys }))
    }

    /// A member registered a new device: every encrypted channel of theirs needs keys for it.
    async fn keys_needed_everywhere(&self, who: &Principal) {
        let channels = match self.store.member_channels(&who.app, &who.user.id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "keys_needed: cannot read the user's channels");
                return;
            }
        };
        let mut encrypted = Vec::new();
        for id in channels {
            if let Ok(Some(ch)) = self.store.channel(&who.app, &id).await
                && ch.encrypted
            {
                encrypted.push(ch.id);
            }
        }
        if encrypted.is_empty() {
            return;
        }
        let devices = self.device_ids(&who.app, &who.user.id).await;
        let envelopes: Vec<Envelope> = encrypted
            .into_iter()
            .map(|channel| {
                keeper_envelope(
                    &who.app,
                    None,
                    &Event::KeysNeeded { channel, user: who.user.id.clone(), devices: devices.clone() },
                )
            })
            .collect();
        self.broker.publish(&envelopes);
    }

    async fn device_ids(&self, app: &str, user: &str) -> Vec<String> {
        match self.store.keys().devices_of(app, user).await {
            Ok(d) => d.into_iter().map(|d| d.device_id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "keys_needed: cannot read the user's devices");
                Vec::new()
            }
        }
    }

    /// After a membership change of an encrypted channel: `keys_needed` for every member who
    /// joined or was added, and `member_left` for every leave, to the app's keepers.
    pub(crate) async fn tell_keepers(&self, app: &str, applied: &Applied) {
        let Some(ch) = applied.channel.as_ref().filter(|c| c.encrypted) else { return };
        let mut envelopes = Vec::new();
        for e in &applied.entries {
            match e.kind {
                EntryKind::MemberJoined => {
                    let devices = self.device_ids(app, &e.reference).await;
                    envelopes.push(keeper_envelope(
                        app,
                        None,
                        &Event::KeysNeeded { channel: ch.id.clone(), user: e.reference.clone(), devices },
                    ));
                }
                EntryKind::MemberLeft => {
                    envelopes.push(keeper_envelope(app, Some(&ch.id), &event_of(e, None)));
                }
                _ => {}
            }
        }
        if !envelopes.is_empty() {
            self.broker.publish(&envelopes);
        }
    }

    /// `GET /v1/keys/users/{user}`.
    pub async fn devices_of(&self, who: &Principal, user: &str) -> Result<DeviceList, EngineError> {
        let user = UserId::parse(user)?;
        let devices = self.store.keys().devices_of(&who.app, user.as_str()).await.map_err(store_err)?;
        Ok(DeviceList { devices: devices.into_iter().map(info).collect() })
    }

    /// `GET /v1/keys/keepers`.
    pub async fn keepers(&self, who: &Principal) -> Result<DeviceList, EngineError> {
        let devices = self.store.keys().keepers(&who.app).await.map_err(store_err)?;
        Ok(DeviceList { devices: devices.into_iter().map(info).collect() })
    }

    /// `POST /v1/keys/claim`.
    pub async fn claim(&self, who: &Principal, targets: Vec<ClaimTarget>) -> Result<ClaimOk, EngineError> {
        if targets.len() > MAX_CLAIMS {
            return Err(bad(format!("at most {MAX_CLAIMS} devices per claim")));
        }
        let mut claimed = Vec::with_capacity(targets.len());
        for t in targets {
            let user = UserId::parse(t.user)?;
            let device = DeviceId::parse(t.device_id)?;
            if let Some(c) =
                self.store.keys().claim(&who.app, user.as_str(), device.as_str()).await.map_err(store_err)?
            {
                claimed.push(ClaimedKey {
                    user: c.user,
                    device_id: c.device_id,
                    identity: c.identity,
                    identity_signature: c.identity_signature,
                    key: c.key,
                    fallback: c.fallback,
                });
            }
        }
        Ok(ClaimOk { claimed })
    }

    /// `DELETE /v1/keys/devices/{device_id}`: the owner revokes a device.
    pub async fn revoke_device(&self, who: &Principal, device_id: &str) -> Result<(), EngineError> {
        let device = DeviceId::parse(device_id)?;
        self.store.keys().revoke_device(&who.app, &who.user.id, device.as_str()).await.map_err(store_err)
    }

    /// An encrypted channel of the caller's app that the caller may read the keys of: a
    /// member, a keeper or an admin.
    async fn key_channel(
        &self,
        who: &Principal,
        channel: &str,
    ) -> Result<herald_proto::model::Channel, EngineError> {
        let ch = self.lookup_channel(who, channel).await?;
        if !(who.grants.keeper
            || who.grants.channels_admin
            || who.grants.server
            || self.member(who, &ch.id).await?)
        {
            return Err(EngineError::Forbidden(format!("not a member of channel {channel:?}")));
        }
        Ok(ch)
    }

    /// `POST /v1/channels/{id}/commits`: creator, `channels:admin` or `keeper`.
    pub async fn post_commit(
        &self,
        who: &Principal,
        channel: &str,
        c: PostCommit,
    ) -> Result<CommitPosted, EngineError> {
        check_hash(&c.prev_commit_hash, "prev_commit_hash")?;
        check_hash(&c.commit_hash, "commit_hash")?;
        if !c.commit.is_object() {
            return Err(bad("commit must be a JSON object"));
        }
        if c.envelopes.len() > MAX_ENVELOPES {
            return Err(bad(format!("at most {MAX_ENVELOPES} envelopes")));
        }
        let mut envelopes = Vec::with_capacity(c.envelopes.len());
        for e in c.envelopes {
            let device_id = DeviceId::parse(e.device_id)?.into_string();
            envelopes.push(EnvelopeRow { device_id, epoch: c.epoch, envelope: e.envelope });
        }
        let ch = self.lookup_channel(who, channel).await?;
        if !ch.encrypted {
            return Err(bad(format!("channel {channel:?} is not encrypted")));
        }
        let guard = if who.grants.keeper || who.grants.channels_admin {
            Guard::none()
        } else {
            Guard { creator: Some(who.user.id.clone()), ..Guard::none() }
        };
        let (epoch, commit_hash) = (c.epoch, c.commit_hash.clone());
        let m = Mutation::Rotate {
            actor: Self::actor_of(who),
            channel: ch.id.clone(),
            commit: Commit {
                epoch: c.epoch,
                prev_commit_hash: c.prev_commit_hash,
                commit_hash: c.commit_hash,
                commit: c.commit,
            },
            envelopes,
            guard,
            ts_ms: self.clock.now_ms(),
        };
        let a = self.apply_mutation(m, channel).await?;
        let seq = a.entries.last().map_or(0, |e| e.seq);
        Ok(CommitPosted { epoch, commit_hash, seq })
    }

    /// `GET /v1/channels/{id}/commits[?after=]`.
    pub async fn commits(
        &self,
        who: &Principal,
        channel: &str,
        after: Option<u64>,
    ) -> Result<CommitList, EngineError> {
        let ch = self.key_channel(who, channel).await?;
        let commits = self.store.keys().commits(&ch.id, after).await.map_err(store_err)?;
        Ok(CommitList {
            commits: commits
                .into_iter()
                .map(|c| CommitView {
                    epoch: c.epoch,
                    prev_commit_hash: c.prev_commit_hash,
                    commit_hash: c.commit_hash,
                    commit: c.commit,
                })
                .collect(),
        })
    }

    /// `POST /v1/channels/{id}/envelopes`: members and keepers.
    pub async fn put_envelopes(
        &self,
        who: &Principal,
        channel: &str,
        envelopes: Vec<EpochEnvelope>,
    ) -> Result<(), EngineError> {
        if envelopes.len() > MAX_ENVELOPES {
            return Err(bad(format!("at most {MAX_ENVELOPES} envelopes")));
        }
        let mut rows = Vec::with_capacity(envelopes.len());
        for e in envelopes {
            let device_id = DeviceId::parse(e.device_id)?.into_string();
            rows.push(EnvelopeRow { device_id, epoch: e.epoch, envelope: e.envelope });
        }
        let ch = self.lookup_channel(who, channel).await?;
        if !(who.grants.keeper || self.member(who, &ch.id).await?) {
            return Err(EngineError::Forbidden(format!("not a member of channel {channel:?}")));
        }
        self.store.keys().put_envelopes(&ch.id, rows).await.map_err(store_err)
    }

    /// `GET /v1/channels/{id}/envelopes?device=`: a device of the caller, who is a member or
    /// a keeper.
    pub async fn envelopes_for(
        &self,
        who: &Principal,
        channel: &str,
        device: &str,
    ) -> Result<EnvelopeList, EngineError> {
        let device = DeviceId::parse(device)?;
        let ch = self.lookup_channel(who, channel).await?;
        let mine = matches!(
            self.store.keys().device_owner(&who.app, device.as_str()).await.map_err(store_err)?,
            Some(o) if o.user == who.user.id && !o.revoked
        );
        if !mine {
            return Err(EngineError::Forbidden(format!("device {device:?} is not one of yours")));
        }
        if !(who.grants.keeper || self.member(who, &ch.id).await?) {
            return Err(EngineError::Forbidden(format!("not a member of channel {channel:?}")));
        }
        let rows = self.store.keys().envelopes_for(&ch.id, device.as_str()).await.map_err(store_err)?;
        Ok(EnvelopeList {
            envelopes: rows
                .into_iter()
                .map(|r| EnvelopeView { epoch: r.epoch, envelope: r.envelope })
                .collect(),
        })
    }
}

fn keeper_envelope(app: &str, skip_members_of: Option<&str>, event: &Event) -> Envelope {
    Envelope::Keeper {
        app: app.to_owned(),
        skip_members_of: skip_members_of.map(str::to_owned),
        frame: to_bytes(event),
    }
}
