//! Encrypted channels: the roster chain (signed commits, PROTOCOL.md §7 `…/commits`), epoch
//! keys sealed to every member device and every keeper device (`…/envelopes`), sealed
//! messages opened and checked (signature, roster membership at the epoch, hash chain), and
//! encrypted erasure-coded files.
//!
//! Who may sign commits (the chain's admins) is fixed by the genesis commit: its signer
//! (the creator's device) and the devices of its keeper entries. A keeper is listed in the
//! roster as the member `keeper/<user id>` (`/` cannot occur in a user id, so no user can
//! pose as one); joining members learn the admin set from the genesis alone, which the
//! creator signed.

use super::{E2ee, E2eeError, LiveChannel};
use crate::channel::Channel;
use crate::error::ClientError;
use crate::event::{ClientEvent, EventStream};
use crate::history::HistoryQueryExt;
use crate::rest::segment;
use herald_crypto::{
    CommitReason, EpochCommit, EpochKey, EpochKeyring, FileManifest, FileParams, IdentityKeys, KeyEnvelope,
    Member, RosterChain, SealedMessage, SignedCommit,
};
use herald_proto::frames::{CreateChannel, Event, HistoryQuery, Request, SendMessage};
use herald_proto::{ErrorCode, Message};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The roster entry of a keeper user: `keeper/<user>`.
pub(crate) const KEEPER_PREFIX: &str = "keeper/";

/// The message `type` of a sealed file manifest.
pub const FILE_TYPE: &str = "herald.file";

/// Encrypted-channel operations of an [`E2ee`] client: `e2ee.channels().create_encrypted("x")`.
#[derive(Clone, Debug)]
pub struct EncryptedChannels {
    e2ee: E2ee,
}

/// An encrypted channel: sends sealed, opens what it reads.
#[derive(Clone, Debug)]
pub struct EncryptedChannel {
    e2ee: E2ee,
    channel: Channel,
}

/// A message opened and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedMessage {
    pub id: String,
    pub seq: u64,
    pub author: String,
    /// The device that sealed it (a member's device at `epoch`).
    pub device: String,
    pub epoch: u64,
    /// The message `type` (plaintext metadata).
    pub kind: String,
    pub plaintext: Vec<u8>,
    pub ts: String,
    /// When its content was last edited (the plaintext is the edited one), if ever.
    pub edited_at: Option<String>,
}

impl OpenedMessage {
    /// The plaintext as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.plaintext).into_owned()
    }

    /// The file manifest a [`EncryptedChannel::put_file`] message carries.
    pub fn file(&self) -> Option<FileRef> {
        (self.kind == FILE_TYPE).then(|| serde_json::from_slice::<FileRef>(&self.plaintext).ok()).flatten()
    }
}

/// What a file message carries (sealed): the manifest with the file key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct FileRef {
    pub manifest: FileManifest,
}

/// A message that could not be opened, and why. Never delivered as if it were fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message {message_id} (seq {seq}, by {author}): {reason}")]
pub struct Unopenable {
    pub message_id: String,
    pub seq: u64,
    pub author: String,
    pub reason: UnopenableReason,
}

/// Why a message cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnopenableReason {
    #[error("not a sealed message: {0}")]
    Malformed(String),
    #[error("no key for epoch {0} (not sealed to this device)")]
    NoKey(u64),
    #[error("sender device {device:?} is not a member at epoch {epoch}")]
    NotMember { device: String, epoch: u64 },
    #[error("sealed by device {device:?} of {owner:?}, but the server names {author:?} as its author")]
    AuthorMismatch { device: String, owner: String, author: String },
    #[error("bad signature or ciphertext: {0}")]
    BadSignature(String),
    #[error("sender identity: {0}")]
    Identity(String),
}

pub use UnopenableReason as Reason;

/// Opened or not.
pub type Opened = Result<OpenedMessage, Unopenable>;

#[derive(Deserialize)]
struct CommitRow {
    epoch: u64,
    commit: SignedCommit,
}

#[derive(Deserialize)]
struct EnvelopeRow {
    epoch: u64,
    envelope: KeyEnvelope,
}

fn zero_hex() -> String {
    "0".repeat(64)
}

/// The user a roster member entry stands for (a keeper's own user id for `keeper/<id>`).
fn owner_user(member: &str) -> &str {
    member.strip_prefix(KEEPER_PREFIX).unwrap_or(member)
}

fn is_stale(e: &ClientError) -> bool {
    e.code() == Some(ErrorCode::StaleEpoch)
}

impl E2ee {
    /// Encrypted-channel operations.
    pub fn channels(&self) -> EncryptedChannels {
        EncryptedChannels { e2ee: self.clone() }
    }

    /// The keeper devices (`GET /v1/keys/keepers`), pinned, grouped as roster members.
    async fn keeper_members(&self) -> Result<Vec<Member>, E2eeError> {
        #[derive(Deserialize)]
        struct Devices {
            devices: Vec<super::DeviceInfo>,
        }
        let v = self.rest().json(Method::GET, "/v1/keys/keepers", None).await?;
        let d: Devices = serde_json::from_value(v)
            .map_err(|e| E2eeError::Protocol(format!("unreadable keeper list: {e}")))?;
        let mut by_user: BTreeMap<String, Vec<super::DeviceInfo>> = BTreeMap::new();
        for dev in d.devices {
            let Some(user) = dev.user.clone() else { continue };
            by_user.entry(user).or_default().push(dev);
        }
        let mut out = Vec::new();
        for (user, devs) in by_user {
            let ids = self.pin_all(&user, &devs)?;
            out.push(Member {
                user: format!("{KEEPER_PREFIX}{user}"),
                devices: ids.into_iter().map(|i| i.device_id).collect(),
            });
        }
        Ok(out)
    }

    /// The identities of every device of `members`, pinned (on first sight) or checked.
    async fn member_identities(&self, members: &[Member]) -> Result<Vec<IdentityKeys>, E2eeError> {
        let mut out = Vec::new();
        for m in members {
            for d in &m.devices {
                out.push(self.peer(owner_user(&m.user), d).await?);
            }
        }
        Ok(out)
    }

    /// Signs and posts the commit of the next epoch with `members`, a fresh key sealed to
    /// every device in it. `Ok(false)` when another commit won the race (`stale_epoch`):
    /// sync and decide again.
    pub(crate) async fn post_commit(
        &self,
        channel: &str,
        members: Vec<Member>,
        reason: CommitReason,
    ) -> Result<bool, E2eeError> {
        let identities = self.member_identities(&members).await?;
        let (body, epoch, key) = {
            let live = self.shared.lock();
            let c = live
                .channels
                .get(channel)
                .ok_or_else(|| E2eeError::Channel(format!("channel {channel} has no roster here")))?;
            let commit = c.chain.next_commit(members, reason).sign(&live.device);
            let key = EpochKey::generate(&mut rand::rngs::OsRng);
            let epoch = commit.commit.epoch;
            // Dry run: a commit this chain would refuse (this device is no admin of it) must
            // not become the head every member then refuses.
            c.chain.clone().apply(&commit).map_err(|e| {
                E2eeError::Channel(format!("this device cannot commit to channel {channel}: {e}"))
            })?;
            let envelopes = commit_envelopes(seal_to(&live.device, channel, epoch, &key, &identities)?);
            let body = json!({
                "epoch": epoch,
                "prev_commit_hash": hex::encode(commit.commit.prev_commit_hash),
                "commit_hash": hex::encode(commit.hash()),
                "commit": commit,
                "envelopes": envelopes,
            });
            (body, epoch, key)
        };
        let path = format!("/v1/channels/{}/commits", segment(channel));
        match self.rest().json(Method::POST, &path, Some(&body)).await {
            Ok(_) => {}
            Err(e) if is_stale(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let commit: SignedCommit =
            serde_json::from_value(body["commit"].clone()).map_err(|e| E2eeError::Protocol(e.to_string()))?;
        let mut live = self.shared.lock();
        if let Some(c) = live.channels.get_mut(channel) {
            if c.chain.epoch() + 1 == epoch {
                c.chain.apply(&commit)?;
                c.commits.insert(epoch, commit);
            }
            c.keyring.insert(epoch, key)?;
        }
        self.shared.save(&live)?;
        Ok(true)
    }

    /// Fetches new commits (verifying each extends the chain) and this device's envelopes.
    pub(crate) async fn sync_channel(&self, channel: &str, created_by: &str) -> Result<(), E2eeError> {
        let head = self.shared.lock().channels.get(channel).map(|c| c.chain.epoch());
        let mut path = format!("/v1/channels/{}/commits", segment(channel));
        if let Some(h) = head {
            path.push_str(&format!("?after={h}"));
        }
        let v = self.rest().json(Method::GET, &path, None).await?;
        let rows: Vec<CommitRow> = serde_json::from_value(v.get("commits").cloned().unwrap_or(Value::Null))
            .map_err(|e| E2eeError::Protocol(format!("unreadable commits: {e}")))?;
        let mut rows = rows.into_iter().peekable();
        if head.is_none() {
            let Some(genesis) = rows.next() else {
                return Err(E2eeError::Channel(format!("channel {channel} has no roster commit yet")));
            };
            let genesis = genesis.commit;
            if genesis.commit.channel != channel {
                return Err(E2eeError::Channel(format!(
                    "channel {channel}: the genesis commit is for channel {:?}",
                    genesis.commit.channel
                )));
            }
            // The admins: the genesis signer (a device of the channel's creator, listed in
            // its own roster) and the keeper devices the creator listed.
            let signer_owner = genesis
                .commit
                .members
                .iter()
                .find(|m| m.devices.contains(&genesis.signer) && !m.user.starts_with(KEEPER_PREFIX))
                .map(|m| m.user.clone())
                .ok_or_else(|| {
                    E2eeError::Channel(format!("channel {channel}: the genesis signer is not in its roster"))
                })?;
            if !created_by.is_empty() && signer_owner != created_by {
                return Err(E2eeError::Channel(format!(
                    "channel {channel}: genesis signed by {signer_owner:?}, but {created_by:?} created the channel"
                )));
            }
            let mut admins = vec![self.peer(&signer_owner, &genesis.signer).await?];
            for m in &genesis.commit.members {
                if let Some(k) = m.user.strip_prefix(KEEPER_PREFIX) {
                    for d in &m.devices {
                        admins.push(self.peer(k, d).await?);
                    }
                }
            }
            let chain = RosterChain::new(&admins, genesis.clone())?;
            let mut commits = BTreeMap::new();
            commits.insert(0, genesis);
            let keyring = EpochKeyring::new(channel)?;
            let mut live = self.shared.lock();
            live.channels.entry(channel.to_owned()).or_insert(LiveChannel {
                admins,
                chain,
                keyring,
                commits,
            });
        }
        {
            let mut live = self.shared.lock();
            if let Some(c) = live.channels.get_mut(channel) {
                for row in rows {
                    if row.epoch <= c.chain.epoch() {
                        continue;
                    }
                    c.chain.apply(&row.commit)?;
                    c.commits.insert(row.epoch, row.commit);
                }
            }
            self.shared.save(&live)?;
        }
        self.fetch_envelopes(channel).await
    }

    async fn fetch_envelopes(&self, channel: &str) -> Result<(), E2eeError> {
        let me = self.device_id();
        let path = format!("/v1/channels/{}/envelopes?device={}", segment(channel), segment(&me));
        let v = self.rest().json(Method::GET, &path, None).await?;
        let rows: Vec<EnvelopeRow> =
            serde_json::from_value(v.get("envelopes").cloned().unwrap_or(Value::Null))
                .map_err(|e| E2eeError::Protocol(format!("unreadable envelopes: {e}")))?;
        for row in rows {
            let env = row.envelope;
            // Who sealed it: a device of the roster (any epoch) or an admin.
            let owner = {
                let live = self.shared.lock();
                let Some(c) = live.channels.get(channel) else { return Ok(()) };
                if c.keyring.get(row.epoch).is_ok() || env.epoch != row.epoch {
                    continue;
                }
                let mut owner = None;
                for ms in c.commits.values().map(|sc| &sc.commit.members) {
                    if let Some(m) = ms.iter().find(|m| m.devices.contains(&env.sender)) {
                        owner = Some(owner_user(&m.user).to_owned());
                    }
                }
                owner
            };
            let Some(owner) = owner else {
                tracing::warn!(channel, epoch = env.epoch, sender = %env.sender, "envelope from a device outside the roster ignored");
                continue;
            };
            let sender = match self.peer(&owner, &env.sender).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(channel, epoch = env.epoch, error = %e, "envelope sender unknown; ignored");
                    continue;
                }
            };
            let mut live = self.shared.lock();
            let live = &mut *live;
            let Some(c) = live.channels.get_mut(channel) else { continue };
            if let Err(e) = env.open_into(&live.device, &sender, &mut c.keyring) {
                tracing::warn!(channel, epoch = env.epoch, error = %e, "envelope does not open; ignored");
            }
        }
        let live = self.shared.lock();
        self.shared.save(&live)
    }
}

/// `key` sealed to every device of `to` but the sender's: `(device id, envelope)`.
fn seal_to(
    device: &herald_crypto::Device,
    channel: &str,
    epoch: u64,
    key: &EpochKey,
    to: &[IdentityKeys],
) -> Result<Vec<(String, KeyEnvelope)>, E2eeError> {
    let mut out = Vec::new();
    for r in to {
        if r.device_id == device.device_id() {
            continue;
        }
        let env = herald_crypto::seal_epoch_key(&mut rand::rngs::OsRng, device, channel, epoch, key, r)?;
        out.push((r.device_id.clone(), env));
    }
    Ok(out)
}

/// The `envelopes` of a commit body: `[{device_id, envelope}]`.
fn commit_envelopes(sealed: Vec<(String, KeyEnvelope)>) -> Vec<Value> {
    sealed
        .into_iter()
        .map(|(device_id, envelope)| json!({ "device_id": device_id, "envelope": envelope }))
        .collect()
}

impl EncryptedChannels {
    /// Creates an encrypted channel named `name` with only the caller as member. See
    /// [`EncryptedChannels::create_encrypted_with`].
    pub async fn create_encrypted(&self, name: &str) -> Result<EncryptedChannel, E2eeError> {
        self.create_encrypted_with(Some(name), &[]).await
    }

    /// Creates an encrypted channel (`channel.create` with `encrypted: true`), then its
    /// genesis commit, signed by this device, listing the caller's and `members`' devices
    /// and every keeper device (`GET /v1/keys/keepers`), with the epoch-0 key sealed to
    /// each. A second create of one's own name returns the existing channel, synced.
    pub async fn create_encrypted_with(
        &self,
        name: Option<&str>,
        members: &[&str],
    ) -> Result<EncryptedChannel, E2eeError> {
        let e2ee = &self.e2ee;
        let create = CreateChannel {
            name: name.map(str::to_owned),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            encrypted: true,
            ..CreateChannel::default()
        };
        let channel = e2ee.client.channels().create_with(create).await?;
        let ch = EncryptedChannel { e2ee: e2ee.clone(), channel };
        let id = ch.id().to_owned();
        let me = e2ee.user();
        let mut roster = vec![Member {
            user: me.clone(),
            devices: e2ee.user_devices(&me).await?.into_iter().map(|i| i.device_id).collect(),
        }];
        for m in members {
            if *m == me {
                continue;
            }
            let devices = e2ee.user_devices(m).await?.into_iter().map(|i| i.device_id).collect();
            roster.push(Member { user: (*m).to_owned(), devices });
        }
        roster.extend(e2ee.keeper_members().await?);
        let identities = e2ee.member_identities(&roster).await?;
        let (body, admins, genesis, key) = {
            let live = e2ee.shared.lock();
            let genesis = EpochCommit::genesis(id.clone(), roster.clone()).sign(&live.device);
            let mut admins = vec![live.device.identity_keys()];
            for m in &roster {
                if m.user.starts_with(KEEPER_PREFIX) {
                    admins.extend(identities.iter().filter(|i| m.devices.contains(&i.device_id)).cloned());
                }
            }
            let key = EpochKey::generate(&mut rand::rngs::OsRng);
            let envelopes = commit_envelopes(seal_to(&live.device, &id, 0, &key, &identities)?);
            let body = json!({
                "epoch": 0,
                "prev_commit_hash": zero_hex(),
                "commit_hash": hex::encode(genesis.hash()),
                "commit": genesis,
                "envelopes": envelopes,
            });
            (body, admins, genesis, key)
        };
        let path = format!("/v1/channels/{}/commits", segment(&id));
        match e2ee.rest().json(Method::POST, &path, Some(&body)).await {
            Ok(_) => {
                let chain = RosterChain::new(&admins, genesis.clone())?;
                let mut keyring = EpochKeyring::new(id.clone())?;
                keyring.insert(0, key)?;
                let mut commits = BTreeMap::new();
                commits.insert(0, genesis);
                let mut live = e2ee.shared.lock();
                live.channels.insert(id.clone(), LiveChannel { admins, chain, keyring, commits });
                e2ee.shared.save(&live)?;
            }
            // The channel existed already (a second create of one's own name): use its
            // roster.
            Err(e) if is_stale(&e) => ch.sync().await?,
            Err(e) => return Err(e.into()),
        }
        Ok(ch)
    }

    /// Joins an encrypted channel and syncs its roster and keys (the keys may come later,
    /// from the keeper: [`EncryptedChannel::wait_for_keys`]).
    pub async fn join(&self, channel: &str) -> Result<EncryptedChannel, E2eeError> {
        let channel = self.e2ee.client.channels().join(channel).await?;
        Ok(EncryptedChannel { e2ee: self.e2ee.clone(), channel })
    }

    /// A handle to an encrypted channel the user is a member of.
    pub async fn get(&self, channel: &str) -> Result<EncryptedChannel, E2eeError> {
        let channel = self.e2ee.client.channels().get(channel).await?;
        if !channel.info().encrypted {
            return Err(E2eeError::Channel(format!("channel {:?} is not encrypted", channel.id())));
        }
        Ok(EncryptedChannel { e2ee: self.e2ee.clone(), channel })
    }
}

impl EncryptedChannel {
    /// The channel id.
    pub fn id(&self) -> &str {
        self.channel.id()
    }

    /// The plain handle (reactions, receipts, typing: plaintext metadata).
    pub fn inner(&self) -> &Channel {
        &self.channel
    }

    /// Fetches new roster commits (each verified against the chain) and this device's key
    /// envelopes.
    pub async fn sync(&self) -> Result<(), E2eeError> {
        self.e2ee.sync_channel(self.id(), &self.channel.info().created_by).await
    }

    /// The verified head epoch, if the roster is known here.
    pub fn epoch(&self) -> Option<u64> {
        self.e2ee.shared.lock().channels.get(self.id()).map(|c| c.chain.epoch())
    }

    /// The epochs whose key this device holds.
    pub fn key_epochs(&self) -> Vec<u64> {
        self.e2ee
            .shared
            .lock()
            .channels
            .get(self.id())
            .map(|c| c.keyring.iter().map(|(e, _)| e).collect())
            .unwrap_or_default()
    }

    /// The members of the head epoch (users and their devices; keepers as `keeper/<id>`).
    pub fn members(&self) -> Vec<Member> {
        self.e2ee
            .shared
            .lock()
            .channels
            .get(self.id())
            .map(|c| c.chain.members().to_vec())
            .unwrap_or_default()
    }

    /// Syncs until a key for `epoch` (the head's if `None`) is here, or `timeout` passes.
    /// For a member who just joined, whose keys the keeper seals in the background.
    pub async fn wait_for_keys(
        &self,
        epoch: Option<u64>,
        timeout: std::time::Duration,
    ) -> Result<(), E2eeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = self.e2ee.client.events();
        loop {
            match self.sync().await {
                Ok(()) | Err(E2eeError::Channel(_)) => {}
                Err(e) => return Err(e),
            }
            {
                let live = self.e2ee.shared.lock();
                if let Some(c) = live.channels.get(self.id()) {
                    let want = epoch.unwrap_or(c.chain.epoch());
                    if c.keyring.get(want).is_ok() {
                        return Ok(());
                    }
                }
            }
            // Wait for something to happen in the channel (a commit, a message) or a short
            // poll interval: envelopes arrive without an event of their own.
            let wait = tokio::time::sleep_until(
                deadline.min(tokio::time::Instant::now() + std::time::Duration::from_millis(200)),
            );
            tokio::select! {
                _ = wait => {}
                _ = events.recv() => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(E2eeError::Channel(format!(
                    "no key for channel {} within {timeout:?}",
                    self.id()
                )));
            }
        }
    }

    /// Seals `text` with the head epoch's key and sends it (`message.send` with `epoch`).
    /// On `stale_epoch` it syncs and seals again.
    pub async fn send(&self, text: &str) -> Result<Message, E2eeError> {
        self.send_sealed(text.as_bytes(), None).await
    }

    /// Seals `plaintext` and sends it with message type `kind` (plaintext metadata).
    pub async fn send_sealed(&self, plaintext: &[u8], kind: Option<&str>) -> Result<Message, E2eeError> {
        let client_id = {
            use rand::RngCore;
            let mut b = [0u8; 12];
            rand::rngs::OsRng.fill_bytes(&mut b);
            hex::encode(b)
        };
        self.sealed_request(plaintext, "message.send", |content, epoch| Request::MessageSend {
            channel: self.id().to_owned(),
            message: SendMessage {
                content,
                kind: kind.map(str::to_owned),
                client_id: Some(client_id.clone()),
                epoch: Some(epoch),
                ..SendMessage::default()
            },
        })
        .await
    }

    /// Replaces the content of one's own message `message_id` with `text`, sealed with the
    /// head epoch's key (`message.edit` with `epoch`); on `stale_epoch` it syncs and seals
    /// again. Members see a `message_edited` ([`EncryptedChannel::edits`]); another user's
    /// message is `not_author`.
    pub async fn edit(&self, message_id: &str, text: &str) -> Result<Message, E2eeError> {
        self.edit_sealed(message_id, text.as_bytes()).await
    }

    /// [`EncryptedChannel::edit`] with bytes.
    pub async fn edit_sealed(&self, message_id: &str, plaintext: &[u8]) -> Result<Message, E2eeError> {
        self.sealed_request(plaintext, "message.edit", |content, epoch| Request::MessageEdit {
            channel: self.id().to_owned(),
            message_id: message_id.to_owned(),
            content,
            epoch: Some(epoch),
        })
        .await
    }

    /// Seals `plaintext` under the head epoch and sends `request(sealed, epoch)`, syncing
    /// and sealing again when the epoch moved (`stale_epoch`) or its key is not here yet.
    async fn sealed_request(
        &self,
        plaintext: &[u8],
        op: &str,
        request: impl Fn(String, u64) -> Request,
    ) -> Result<Message, E2eeError> {
        let mut synced = false;
        for _ in 0..5 {
            let sealed = {
                let live = self.e2ee.shared.lock();
                match live.channels.get(self.id()) {
                    Some(c) => {
                        let epoch = c.chain.epoch();
                        match c.keyring.get(epoch) {
                            Ok(key) => Some((
                                epoch,
                                herald_crypto::seal_message(
                                    &mut rand::rngs::OsRng,
                                    &live.device,
                                    self.id(),
                                    epoch,
                                    key,
                                    plaintext,
                                )?,
                            )),
                            Err(_) => None,
                        }
                    }
                    None => None,
                }
            };
            let Some((epoch, content)) = sealed else {
                if synced {
                    return Err(E2eeError::Channel(format!(
                        "no key for the head epoch of channel {} (not sealed to this device yet)",
                        self.id()
                    )));
                }
                self.sync().await?;
                synced = true;
                continue;
            };
            match self.e2ee.client.request(request(content, epoch)).await {
                Ok(ok) => {
                    let m = ok.get("message").cloned().unwrap_or(Value::Null);
                    return serde_json::from_value(m)
                        .map_err(|e| E2eeError::Protocol(format!("unreadable {op} answer: {e}")));
                }
                Err(e) if is_stale(&e) => {
                    self.sync().await?;
                    synced = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(E2eeError::Channel(format!(
            "channel {}: the epoch kept changing; gave up after 5 tries",
            self.id()
        )))
    }

    /// Opens one message: parses the sealed form, finds the epoch key (syncing once if it
    /// is missing), checks the sealing device was a member at that epoch and is the
    /// author's, verifies its signature against its pinned identity and decrypts.
    pub async fn open(&self, m: &Message) -> Opened {
        let fail =
            |reason| Unopenable { message_id: m.id.clone(), seq: m.seq, author: m.author.clone(), reason };
        let sealed = SealedMessage::parse(&m.content).map_err(|e| fail(Reason::Malformed(e.to_string())))?;
        let epoch = sealed.epoch();
        let known = {
            let live = self.e2ee.shared.lock();
            live.channels
                .get(self.id())
                .is_some_and(|c| c.keyring.get(epoch).is_ok() && c.commits.contains_key(&epoch))
        };
        if !known && let Err(e) = self.sync().await {
            tracing::debug!(error = %e, "sync before opening failed");
        }
        let (owner, key) = {
            let live = self.e2ee.shared.lock();
            let Some(c) = live.channels.get(self.id()) else {
                return Err(fail(Reason::NoKey(epoch)));
            };
            let Some(members) = c.chain.members_at(epoch) else {
                return Err(fail(Reason::NoKey(epoch)));
            };
            let Some(member) = members.iter().find(|mm| mm.devices.iter().any(|d| d == sealed.sender()))
            else {
                return Err(fail(Reason::NotMember { device: sealed.sender().to_owned(), epoch }));
            };
            let key = c.keyring.get(epoch).map_err(|_| fail(Reason::NoKey(epoch)))?.clone();
            (member.user.clone(), key)
        };
        if owner_user(&owner) != m.author {
            return Err(fail(Reason::AuthorMismatch {
                device: sealed.sender().to_owned(),
                owner,
                author: m.author.clone(),
            }));
        }
        let identity = self
            .e2ee
            .peer(owner_user(&owner), sealed.sender())
            .await
            .map_err(|e| fail(Reason::Identity(e.to_string())))?;
        let plaintext =
            sealed.open(self.id(), &key, &identity).map_err(|e| fail(Reason::BadSignature(e.to_string())))?;
        Ok(OpenedMessage {
            id: m.id.clone(),
            seq: m.seq,
            author: m.author.clone(),
            device: sealed.sender().to_owned(),
            epoch,
            kind: m.kind.clone(),
            plaintext,
            ts: m.ts.clone(),
            edited_at: m.edited_at.clone(),
        })
    }

    /// Every message of the channel, oldest first, each opened or with why not. The hash
    /// chain of the whole log is verified first (a broken link fails the call), and every
    /// message must match its verified log entry.
    pub async fn history(&self) -> Result<Vec<Opened>, E2eeError> {
        let mut log = VerifiedLog::default();
        self.read_log(&mut log).await?;
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.channel.history(HistoryQuery::after(after, 500)).await?;
            for m in &page.messages {
                after = after.max(m.seq);
                // An edit committed after the log was read: read on once before refusing.
                if !log.matches(m) {
                    self.read_log(&mut log).await?;
                }
                if !log.matches(m) {
                    let what = if m.edited_at.is_some() {
                        "its newest verified edit"
                    } else {
                        "its verified log entry"
                    };
                    return Err(E2eeError::Client(ClientError::Protocol(format!(
                        "message at seq {} differs from {what}",
                        m.seq
                    ))));
                }
                out.push(self.open(m).await);
            }
            if !page.has_more || page.messages.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    /// Reads the log past what `log` holds.
    async fn read_log(&self, log: &mut VerifiedLog) -> Result<(), E2eeError> {
        loop {
            let page = self.channel.log(log.after, 500).await?;
            for e in &page.entries {
                match e.kind {
                    herald_proto::EntryKind::Message => {
                        log.messages.insert(e.seq, (e.content.clone(), e.author.clone()));
                    }
                    herald_proto::EntryKind::MessageEdited => {
                        log.edits.insert(e.reference.clone(), (e.content.clone(), e.author.clone()));
                    }
                    _ => {}
                }
                log.after = e.seq;
            }
            if !page.has_more || page.entries.is_empty() {
                return Ok(());
            }
        }
    }

    /// Calls `f` with every new message of this channel, opened (or why not), from a task
    /// of its own. Must be called within a Tokio runtime.
    pub fn on_message<F>(&self, mut f: F) -> crate::Listener
    where
        F: FnMut(Opened) + Send + 'static,
    {
        let mut messages = self.messages();
        let task = tokio::spawn(async move {
            while let Some(m) = messages.next().await {
                f(m);
            }
        });
        crate::Listener { task: task.abort_handle() }
    }

    /// New messages of this channel as they arrive, opened.
    pub fn messages(&self) -> EncryptedMessages {
        EncryptedMessages { channel: self.clone(), events: self.e2ee.client.events() }
    }

    /// Edits of this channel's messages as they arrive (`message_edited`), opened with the
    /// checks of a message: the new content must be sealed by a device of the message's
    /// author. Each is an [`OpenedMessage`] with `id` the edited message's id, the new
    /// plaintext, `edited_at` set and `seq` the edit's own log entry.
    pub fn edits(&self) -> EncryptedEdits {
        EncryptedEdits { channel: self.clone(), events: self.e2ee.client.events() }
    }

    /// Removes `user` from the channel (`channel.remove_member`) and rotates: a commit
    /// without them, a fresh key sealed to the remaining devices and the keepers. If a
    /// keeper rotated first, its commit stands.
    pub async fn remove_member(&self, user: &str) -> Result<(), E2eeError> {
        self.channel.remove_member(user).await?;
        self.e2ee.rotate_without(self.id(), &self.channel.info().created_by, user).await
    }

    /// Admits `user` as a keeper does (for an admin of the channel: its creator): a commit
    /// listing their current devices, and every epoch key this device holds sealed to them.
    /// For channels without a keeper.
    pub async fn admit_member(&self, user: &str) -> Result<(), E2eeError> {
        self.e2ee.admit(self.id(), &self.channel.info().created_by, user, true).await
    }

    /// A new epoch with the same members and a fresh key.
    pub async fn rotate(&self) -> Result<(), E2eeError> {
        for _ in 0..5 {
            self.sync().await?;
            let members = self.members();
            if self.e2ee.post_commit(self.id(), members, CommitReason::Rotate).await? {
                return Ok(());
            }
        }
        Err(E2eeError::Channel("rotation lost the race 5 times".into()))
    }

    /// Encrypts `bytes`, erasure-codes them into 4 data + 2 parity shards, uploads each as a
    /// blob (`?shard=i`), and sends the manifest (with the file key) as a sealed message of
    /// type `herald.file`.
    pub async fn put_file(
        &self,
        bytes: &[u8],
        name: &str,
        mime: &str,
    ) -> Result<(Message, FileManifest), E2eeError> {
        self.put_file_with(
            bytes,
            name,
            mime,
            &FileParams { data_shards: 4, parity_shards: 2, ..FileParams::default() },
        )
        .await
    }

    /// [`EncryptedChannel::put_file`] with other shard counts.
    pub async fn put_file_with(
        &self,
        bytes: &[u8],
        name: &str,
        mime: &str,
        params: &FileParams,
    ) -> Result<(Message, FileManifest), E2eeError> {
        let encoded = herald_crypto::encrypt_file(&mut rand::rngs::OsRng, name, mime, bytes, params)?;
        for (i, shard) in encoded.shards.into_iter().enumerate() {
            let r = self.e2ee.rest().put_shard(self.id(), i, shard).await?;
            if encoded.manifest.shard_hashes.get(i) != Some(&r.blob_id) {
                return Err(E2eeError::Protocol(format!("the server stored shard {i} under another id")));
            }
        }
        let manifest = encoded.manifest;
        let body = serde_json::to_vec(&FileRef { manifest: manifest.clone() })
            .map_err(|e| E2eeError::Protocol(e.to_string()))?;
        let m = self.send_sealed(&body, Some(FILE_TYPE)).await?;
        Ok((m, manifest))
    }

    /// Downloads the shards of `manifest` and rebuilds the file from any `k` intact ones;
    /// fewer is an error saying how many survive.
    pub async fn get_file(&self, manifest: &FileManifest) -> Result<Vec<u8>, E2eeError> {
        let mut shards: Vec<Option<Vec<u8>>> = Vec::new();
        let mut intact = 0;
        for h in &manifest.shard_hashes {
            match self.channel.get_blob(h).await {
                Ok(b) if blake3::hash(&b).to_hex().as_str() == h => {
                    intact += 1;
                    shards.push(Some(b));
                }
                Ok(_) => shards.push(None),
                Err(e) if e.code() == Some(ErrorCode::NotFound) => shards.push(None),
                Err(e) => return Err(e.into()),
            }
        }
        if intact < usize::from(manifest.k) {
            return Err(E2eeError::Channel(format!(
                "file {:?} cannot be rebuilt: {intact} of {} shards survive, {} needed",
                manifest.name,
                manifest.shard_hashes.len(),
                manifest.k
            )));
        }
        Ok(herald_crypto::decrypt_file(manifest, &shards)?)
    }

    /// The message `message_id`, opened (from history).
    pub async fn get_message(&self, message_id: &str) -> Result<OpenedMessage, E2eeError> {
        for opened in self.history().await? {
            match opened {
                Ok(m) if m.id == message_id => return Ok(m),
                Err(u) if u.message_id == message_id => return Err(u.into()),
                _ => {}
            }
        }
        Err(E2eeError::Channel(format!("no message {message_id} in channel {}", self.id())))
    }
}

impl E2ee {
    /// Posts a remove commit for `user` unless the head roster already lacks them.
    pub(crate) async fn rotate_without(
        &self,
        channel: &str,
        created_by: &str,
        user: &str,
    ) -> Result<(), E2eeError> {
        for _ in 0..5 {
            self.sync_channel(channel, created_by).await?;
            let members = {
                let live = self.shared.lock();
                let Some(c) = live.channels.get(channel) else { return Ok(()) };
                if !c.chain.members().iter().any(|m| m.user == user) {
                    return Ok(());
                }
                c.chain.members().iter().filter(|m| m.user != user).cloned().collect::<Vec<_>>()
            };
            if self
                .post_commit(channel, members, CommitReason::Remove { users: vec![user.to_owned()] })
                .await?
            {
                return Ok(());
            }
        }
        Err(E2eeError::Channel("removal commit lost the race 5 times".into()))
    }

    /// Makes the head roster list exactly `devices` for `user` (adding them as a member if
    /// needed) and seals every older epoch key this device holds to those devices, so the
    /// user reads the whole history. What the keeper does on `keys_needed`.
    /// With `reseal` false (a keeper catching up), keys are sealed only when the roster
    /// had to change.
    pub(crate) async fn admit(
        &self,
        channel: &str,
        created_by: &str,
        user: &str,
        reseal: bool,
    ) -> Result<(), E2eeError> {
        let devices: BTreeSet<String> =
            self.user_devices(user).await?.into_iter().map(|i| i.device_id).collect();
        if devices.is_empty() {
            return Ok(());
        }
        let mut changed = false;
        for _ in 0..5 {
            self.sync_channel(channel, created_by).await?;
            let (members, reason) = {
                let live = self.shared.lock();
                let Some(c) = live.channels.get(channel) else { return Ok(()) };
                let current = c.chain.members().iter().find(|m| m.user == user);
                match current {
                    Some(m) if m.devices.iter().cloned().collect::<BTreeSet<_>>() == devices => break,
                    Some(_) => {
                        let members = c
                            .chain
                            .members()
                            .iter()
                            .map(|m| {
                                if m.user == user {
                                    Member {
                                        user: user.to_owned(),
                                        devices: devices.iter().cloned().collect(),
                                    }
                                } else {
                                    m.clone()
                                }
                            })
                            .collect();
                        (members, CommitReason::Rotate)
                    }
                    None => {
                        let mut members = c.chain.members().to_vec();
                        members.push(Member {
                            user: user.to_owned(),
                            devices: devices.iter().cloned().collect(),
                        });
                        (members, CommitReason::Add { users: vec![user.to_owned()] })
                    }
                }
            };
            if self.post_commit(channel, members, reason).await? {
                changed = true;
                break;
            }
        }
        if !changed && !reseal {
            return Ok(());
        }
        // History: every key held, sealed to the user's devices (the newest came with the
        // commit; sealing it again is harmless: a second envelope replaces the first).
        let mut identities = Vec::new();
        for d in &devices {
            identities.push(self.peer(user, d).await?);
        }
        let envelopes = {
            let live = self.shared.lock();
            let Some(c) = live.channels.get(channel) else { return Ok(()) };
            let mut out = Vec::new();
            for (epoch, key) in c.keyring.iter() {
                for (device_id, envelope) in seal_to(&live.device, channel, epoch, key, &identities)? {
                    out.push(json!({ "device_id": device_id, "epoch": epoch, "envelope": envelope }));
                }
            }
            out
        };
        let path = format!("/v1/channels/{}/envelopes", segment(channel));
        for chunk in envelopes.chunks(200) {
            self.rest().json(Method::POST, &path, Some(&json!({ "envelopes": chunk }))).await?;
        }
        Ok(())
    }
}

/// What [`EncryptedChannel::history`] read of the log: each message entry's content and
/// author by `seq`, and each message's newest edit by message id.
#[derive(Default)]
struct VerifiedLog {
    after: u64,
    messages: BTreeMap<u64, (Option<String>, String)>,
    edits: std::collections::HashMap<String, (Option<String>, String)>,
}

impl VerifiedLog {
    /// `m` is what the log says: an unedited message its entry's content and author, an
    /// edited one its newest edit's content, by its author. A message not in the log yet
    /// does not match.
    fn matches(&self, m: &Message) -> bool {
        let Some((content, author)) = self.messages.get(&m.seq) else { return false };
        if author != &m.author {
            return false;
        }
        if m.edited_at.is_none() {
            return content.as_deref() == Some(m.content.as_str());
        }
        self.edits.get(&m.id).is_some_and(|(c, a)| a == &m.author && c.as_deref() == Some(m.content.as_str()))
    }
}

/// Edits of one encrypted channel's messages, opened: from [`EncryptedChannel::edits`].
pub struct EncryptedEdits {
    channel: EncryptedChannel,
    events: EventStream,
}

impl EncryptedEdits {
    /// The next edit in the channel (`None` once the client is closed).
    pub async fn next(&mut self) -> Option<Opened> {
        loop {
            let event = self.events.recv().await?;
            if let ClientEvent::Event(e) = event
                && let Event::MessageEdited { channel, meta, message_id, content, edited_at, epoch } = *e
                && channel == self.channel.id()
            {
                let edited = Message {
                    id: message_id,
                    seq: meta.seq,
                    author: meta.author,
                    kind: String::new(),
                    content,
                    reply_to: None,
                    client_id: None,
                    ts: meta.ts,
                    edited_at: Some(edited_at),
                    epoch,
                    reactions: None,
                };
                return Some(self.channel.open(&edited).await);
            }
        }
    }
}

/// New messages of one encrypted channel, opened: from [`EncryptedChannel::messages`].
pub struct EncryptedMessages {
    channel: EncryptedChannel,
    events: EventStream,
}

impl EncryptedMessages {
    /// The next message of the channel (`None` once the client is closed).
    pub async fn next(&mut self) -> Option<Opened> {
        loop {
            let event = self.events.recv().await?;
            if let ClientEvent::Event(e) = event
                && let Event::Message { channel, message, .. } = *e
                && channel == self.channel.id()
            {
                return Some(self.channel.open(&message).await);
            }
        }
    }
}
