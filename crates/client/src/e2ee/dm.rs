//! Direct messages: Olm to every device of the recipient and to the sender's own other
//! devices, one `dm.send`; received ones decrypted, persisted, then acknowledged.

use super::{E2ee, E2eeError};
use crate::error::ClientError;
use crate::event::{ClientEvent, EventStream};
use crate::rest::segment;
use herald_crypto::{IdentityKeys, OlmMessage, SignedKey};
use herald_proto::frames::{DmSendOk, DmTo, Request};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::VecDeque;

/// A decrypted direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dm {
    /// The server's id of this copy.
    pub id: String,
    /// The sending user (the owner of `from_device`, checked against its pin).
    pub from: String,
    pub from_device: String,
    pub payload: Vec<u8>,
    pub ts: String,
}

impl Dm {
    /// The payload as text (lossy for non-UTF-8 payloads).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A direct message that could not be decrypted, with why. It is never dropped silently:
/// the stream yields it as an error.
#[derive(Debug, thiserror::Error)]
#[error("direct message {id} from {from}/{from_device} cannot be read: {reason}")]
pub struct DmFailure {
    pub id: String,
    pub from: String,
    pub from_device: String,
    pub reason: E2eeError,
}

#[derive(Debug, Clone, Deserialize)]
struct RawDm {
    id: String,
    from: String,
    from_device: String,
    body: String,
    #[serde(default)]
    ts: String,
}

#[derive(Deserialize)]
struct Claimed {
    user: String,
    device_id: String,
    identity: IdentityKeys,
    key: SignedKey,
}

impl E2ee {
    /// Encrypts `payload` to every current device of `user` and to this user's other
    /// devices (creating Olm sessions from claimed one-time keys where there is none yet)
    /// and sends it with one `dm.send`. Returns the ids of the copies. Fails if a device's
    /// identity changed since it was pinned, or a claimed key does not verify.
    pub async fn send_dm(&self, user: &str, payload: impl AsRef<[u8]>) -> Result<Vec<String>, E2eeError> {
        let me = self.user();
        let my_device = self.device_id();
        let mut targets: Vec<(String, IdentityKeys)> =
            self.user_devices(user).await?.into_iter().map(|i| (user.to_owned(), i)).collect();
        if user != me {
            targets.extend(self.user_devices(&me).await?.into_iter().map(|i| (me.clone(), i)));
        }
        targets.retain(|(_, i)| i.device_id != my_device);
        if targets.is_empty() {
            return Err(E2eeError::Channel(format!("{user:?} has no device to send to")));
        }
        self.ensure_sessions(&targets).await?;
        let to = {
            let mut live = self.shared.lock();
            let mut to = Vec::new();
            for (u, identity) in &targets {
                let Some(session) = live.sessions.get_mut(&identity.device_id).and_then(|v| v.last_mut())
                else {
                    continue;
                };
                let msg = session.encrypt(payload.as_ref());
                let body = serde_json::to_string(&msg).map_err(|e| E2eeError::Protocol(e.to_string()))?;
                to.push(DmTo { user: u.clone(), device_id: identity.device_id.clone(), body });
            }
            // The ratchets moved: on disk before the ciphertexts leave.
            self.shared.save(&live)?;
            to
        };
        if to.is_empty() {
            return Err(E2eeError::Channel(format!("no session with any device of {user:?}")));
        }
        let client_id = {
            use rand::RngCore;
            let mut b = [0u8; 12];
            rand::rngs::OsRng.fill_bytes(&mut b);
            hex::encode(b)
        };
        let ok: DmSendOk = self.client.call(Request::DmSend { to, client_id: Some(client_id) }).await?;
        Ok(ok.ids)
    }

    /// Creates outbound sessions with the targets that have none: one `POST /v1/keys/claim`.
    async fn ensure_sessions(&self, targets: &[(String, IdentityKeys)]) -> Result<(), E2eeError> {
        let missing: Vec<Value> = {
            let live = self.shared.lock();
            targets
                .iter()
                .filter(|(_, i)| live.sessions.get(&i.device_id).is_none_or(Vec::is_empty))
                .map(|(u, i)| json!({ "user": u, "device_id": i.device_id }))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let v =
            self.rest().json(Method::POST, "/v1/keys/claim", Some(&json!({ "devices": missing }))).await?;
        let claimed: Vec<Claimed> = serde_json::from_value(v.get("claimed").cloned().unwrap_or(Value::Null))
            .map_err(|e| E2eeError::Protocol(format!("unreadable claim answer: {e}")))?;
        let mut live = self.shared.lock();
        for c in claimed {
            let Some((_, pinned)) = targets.iter().find(|(u, i)| *u == c.user && i.device_id == c.device_id)
            else {
                continue;
            };
            if *pinned != c.identity {
                return Err(E2eeError::IdentityChanged { user: c.user, device: c.device_id });
            }
            // Verifies the key's signature by the pinned device: a key swapped by the server
            // fails here.
            let session = live.device.create_outbound_session(pinned, &c.key)?;
            live.sessions.entry(c.device_id).or_default().push(session);
        }
        self.shared.save(&live)?;
        Ok(())
    }

    /// The decrypted direct messages of this device: first its inbox on the server (what
    /// arrived while offline, oldest first), then live ones. Each is acknowledged after it
    /// was decrypted and the session state saved; one that cannot be decrypted is yielded
    /// as [`DmFailure`] (and acknowledged too, since it never will decrypt), except after a
    /// network failure, when it stays in the inbox for the next attempt.
    pub fn dms(&self) -> DmStream {
        DmStream {
            e2ee: self.clone(),
            events: self.client.events(),
            queue: VecDeque::new(),
            inbox_fetched: false,
        }
    }

    /// Calls `f` with every direct message of this device (decrypted, or the reason it
    /// cannot be), from a task of its own, as [`E2ee::dms`] yields them. Must be called
    /// within a Tokio runtime.
    pub fn on_dm<F>(&self, mut f: F) -> crate::Listener
    where
        F: FnMut(Result<Dm, DmFailure>) + Send + 'static,
    {
        let mut dms = self.dms();
        let task = tokio::spawn(async move {
            while let Some(dm) = dms.next().await {
                f(dm);
            }
        });
        crate::Listener { task: task.abort_handle() }
    }

    fn handled(&self, id: &str) -> bool {
        self.shared.lock().handled_dms.iter().any(|h| h == id)
    }

    async fn open_dm(&self, dm: &RawDm) -> Result<Vec<u8>, E2eeError> {
        let identity = self.peer(&dm.from, &dm.from_device).await?;
        let msg: OlmMessage = serde_json::from_str(&dm.body)
            .map_err(|e| E2eeError::Protocol(format!("malformed olm message: {e}")))?;
        let mut created = false;
        let result = {
            let mut live = self.shared.lock();
            let live = &mut *live;
            let sessions = live.sessions.entry(dm.from_device.clone()).or_default();
            let mut plain = None;
            // Newest session first: the one the peer most likely used.
            for s in sessions.iter_mut().rev() {
                if msg.pre_key && !s.matches(&msg) {
                    continue;
                }
                if let Ok(p) = s.decrypt(&msg) {
                    plain = Some(p);
                    break;
                }
            }
            let result = match plain {
                Some(p) => Ok(p),
                None if msg.pre_key => match live.device.create_inbound_session(&identity, &msg) {
                    Ok((session, p)) => {
                        sessions.push(session);
                        created = true;
                        Ok(p)
                    }
                    Err(e) => Err(E2eeError::Crypto(e)),
                },
                None => Err(E2eeError::Channel(
                    "no Olm session decrypts it (a message of a session this device does not have)".into(),
                )),
            };
            live.handled_dms.push_back(dm.id.clone());
            while live.handled_dms.len() > super::HANDLED_DMS_MAX {
                live.handled_dms.pop_front();
            }
            self.shared.save(live)?;
            result
        };
        if created {
            // A one-time key was used up: top up if few are left. A failure here must not
            // lose the message; the next start tries again.
            if let Err(e) = self.replenish_one_time_keys().await {
                tracing::warn!(error = %e, "one-time key top-up failed");
            }
        }
        result
    }

    async fn ack(&self, id: &str) -> Result<(), ClientError> {
        self.client.request(Request::DmAck { ids: vec![id.to_owned()] }).await.map(drop)
    }

    async fn fetch_inbox(&self) -> Result<Vec<RawDm>, E2eeError> {
        let path = format!("/v1/dm/inbox?device={}", segment(&self.device_id()));
        let v = self.rest().json(Method::GET, &path, None).await?;
        serde_json::from_value(v.get("dms").cloned().unwrap_or(Value::Array(Vec::new())))
            .map_err(|e| E2eeError::Protocol(format!("unreadable inbox: {e}")))
    }
}

/// The `dm` event in a client event, raw or typed.
fn as_dm(event: &ClientEvent) -> Option<RawDm> {
    let v = match event {
        ClientEvent::Raw(v) => (**v).clone(),
        ClientEvent::Event(e) => serde_json::to_value(e).ok()?,
        _ => return None,
    };
    if v.get("event").and_then(Value::as_str) != Some("dm") {
        return None;
    }
    serde_json::from_value(v).ok()
}

/// Decrypted direct messages, from [`E2ee::dms`].
pub struct DmStream {
    e2ee: E2ee,
    events: EventStream,
    queue: VecDeque<RawDm>,
    inbox_fetched: bool,
}

impl DmStream {
    /// The next direct message (`None` once the client is closed), or why the next one
    /// cannot be read.
    pub async fn next(&mut self) -> Option<Result<Dm, DmFailure>> {
        if !self.inbox_fetched {
            match self.e2ee.fetch_inbox().await {
                Ok(dms) => {
                    self.queue.extend(dms);
                    self.inbox_fetched = true;
                }
                Err(e) => {
                    // Live events still flow; the inbox is fetched again on the next call.
                    tracing::warn!(error = %e, "cannot fetch the DM inbox");
                }
            }
        }
        loop {
            let dm = match self.queue.pop_front() {
                Some(dm) => dm,
                None => loop {
                    let event = self.events.recv().await?;
                    if let ClientEvent::Connected(_) = event {
                        // After a reconnect the server resends the inbox; nothing to do.
                        continue;
                    }
                    if let Some(dm) = as_dm(&event) {
                        break dm;
                    }
                },
            };
            if self.e2ee.handled(&dm.id) {
                // Already read (the ack may have been lost): ack again, skip.
                let _ = self.e2ee.ack(&dm.id).await;
                continue;
            }
            let result = self.e2ee.open_dm(&dm).await;
            let transient = matches!(&result, Err(E2eeError::Client(_)));
            if transient {
                let mut live = self.e2ee.shared.lock();
                live.handled_dms.retain(|h| h != &dm.id);
            } else if let Err(e) = self.e2ee.ack(&dm.id).await {
                tracing::warn!(error = %e, "dm.ack failed; the message may be delivered again and is then skipped");
            }
            return Some(match result {
                Ok(payload) => {
                    Ok(Dm { id: dm.id, from: dm.from, from_device: dm.from_device, payload, ts: dm.ts })
                }
                Err(reason) => {
                    Err(DmFailure { id: dm.id, from: dm.from, from_device: dm.from_device, reason })
                }
            });
        }
    }
}
