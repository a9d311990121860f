//! Private channels authorised by the app's backend (PROTOCOL.md §9): a channel whose name
//! starts with `private-` is joined only with `auth`, the backend's HMAC-SHA256 of
//! `conn_id ":" channel_name` under the app secret, checked in constant time. The first signed
//! join creates the channel (`policy: invite`).
//!
//! Decisions (docs/protocol.md §9): `channel.create` of a `private-` name is `forbidden` for
//! everyone (such a channel comes into being only through a signed join); `add_member` into a
//! private channel needs `channels:admin` or `server` (a member cannot bring anyone in without
//! the backend's say); removing someone else from it needs `channels:admin` or `server` (its
//! creator is merely its first joiner, not its owner). The secrets come in through
//! [`EngineConfig::app_secrets`](crate::EngineConfig), read by the server at start.

use crate::error::EngineError;
use crate::{Engine, Principal, rules};
use herald_proto::ChannelName;
use herald_proto::model::{Channel, Policy};
use herald_proto::names::looks_like_uuid;
use herald_proto::private::{is_private, verify_channel};
use herald_store::{Guard, Mutation, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

/// The app secrets of PROTOCOL.md §9: one per app id, or one for every app. `Debug` names
/// the apps, never a secret.
#[derive(Clone, Default)]
pub struct AppSecrets {
    by_app: Arc<HashMap<String, Arc<[u8]>>>,
    every_app: Option<Arc<[u8]>>,
}

impl AppSecrets {
    /// A secret per app.
    pub fn new(secrets: HashMap<String, Vec<u8>>) -> AppSecrets {
        AppSecrets {
            by_app: Arc::new(secrets.into_iter().map(|(k, v)| (k, Arc::from(v))).collect()),
            every_app: None,
        }
    }

    /// One secret for every app (`--app-secret-file`, `HERALD_APP_SECRET`).
    pub fn for_every_app(secret: Vec<u8>) -> AppSecrets {
        AppSecrets { by_app: Arc::default(), every_app: Some(Arc::from(secret)) }
    }

    /// The secret of `app`, if one is configured.
    pub fn get(&self, app: &str) -> Option<&[u8]> {
        self.every_app.as_deref().or_else(|| self.by_app.get(app).map(|s| &**s))
    }
}

impl std::fmt::Debug for AppSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSecrets")
            .field("apps", &self.by_app.keys().collect::<Vec<_>>())
            .field("every_app", &self.every_app.is_some())
            .finish()
    }
}

/// `channel.create` never makes a private channel.
pub(crate) fn refuse_private_create(name: &str) -> Result<(), EngineError> {
    if is_private(name) {
        return Err(EngineError::Forbidden(format!(
            "{name:?} is a private channel: it is created by its first channel.join with the \
             auth signature of the app's backend"
        )));
    }
    Ok(())
}

fn forbidden(why: &str) -> EngineError {
    EngineError::Forbidden(why.to_owned())
}

impl Engine {
    /// Whether channel `id` of the caller's app is a private one (false when it does not exist:
    /// the write that follows reports that).
    pub(crate) async fn is_private_channel(&self, who: &Principal, id: &str) -> Result<bool, EngineError> {
        let ch = self.store().channel(&who.app, id).await.map_err(|e| EngineError::from_store(e, id))?;
        Ok(ch.and_then(|c| c.name).is_some_and(|n| is_private(&n)))
    }

    /// `channel.add_member` into a private channel needs `channels:admin` or `server`.
    pub(crate) async fn check_private_add(&self, who: &Principal, id: &str) -> Result<(), EngineError> {
        if !(who.grants.channels_admin || who.grants.server) && self.is_private_channel(who, id).await? {
            return Err(forbidden(
                "only the app's backend (a channels:admin or server token) adds members to a private channel",
            ));
        }
        Ok(())
    }

    /// Banning in a private channel needs `channels:admin` or `server` (its first joiner is no
    /// owner).
    pub(crate) async fn check_private_moderation(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<(), EngineError> {
        if !(who.grants.channels_admin || who.grants.server) && self.is_private_channel(who, id).await? {
            return Err(forbidden(
                "only the app's backend (a channels:admin or server token) moderates a private channel",
            ));
        }
        Ok(())
    }

    /// `channel.join` (WebSocket, with the connection's id) and `POST /v1/channels/{name}/join`
    /// (with a `conn_id` the caller owns, checked by the gateway). A `private-` channel needs
    /// `auth` signed for `conn_id` and its name; any other channel follows its policy.
    pub async fn join(
        &self,
        who: &Principal,
        conn_id: Option<&str>,
        channel: &str,
        auth: Option<&str>,
        now: i64,
    ) -> Result<Channel, EngineError> {
        Self::check_ref(channel)?;
        let existing =
            self.store().channel(&who.app, channel).await.map_err(|e| EngineError::from_store(e, channel))?;
        let name = match &existing {
            Some(ch) => ch.name.clone(),
            None if looks_like_uuid(channel) => return Err(EngineError::ChannelNotFound(channel.to_owned())),
            None => Some(channel.to_owned()),
        };
        let Some(name) = name.filter(|n| is_private(n)) else {
            let ch = existing.ok_or_else(|| EngineError::ChannelNotFound(channel.to_owned()))?;
            let m = Mutation::Join {
                actor: Self::actor(who),
                channel: ch.id,
                guard: rules::unbanned(rules::join(who), &who.user.id, now),
                ts_ms: now,
            };
            let a = self.apply(m, channel).await?;
            self.tell_keepers(&who.app, &a).await;
            return a.channel.ok_or(EngineError::Internal);
        };
        let secret =
            self.config().app_secrets.get(&who.app).ok_or_else(|| {
                forbidden("this app has no app secret configured: private channels are off")
            })?;
        let conn_id = conn_id.ok_or_else(|| forbidden("joining a private channel needs a connection id"))?;
        let auth =
            auth.ok_or_else(|| forbidden("a private channel needs the auth signature of the app's backend"))?;
        if !verify_channel(secret, conn_id, &name, auth) {
            return Err(forbidden("the auth signature is not valid for this connection and channel"));
        }
        if let Some(ch) = existing {
            let m = Mutation::Join {
                actor: Self::actor(who),
                channel: ch.id,
                guard: rules::unbanned(Guard::none(), &who.user.id, now),
                ts_ms: now,
            };
            let a = self.apply(m, channel).await?;
            self.tell_keepers(&who.app, &a).await;
            return a.channel.ok_or(EngineError::Internal);
        }
        let create = Mutation::CreateChannel {
            actor: Self::actor(who),
            id: self.ids().new_id(),
            name: Some(ChannelName::parse(name.clone())?),
            title: None,
            encrypted: false,
            policy: Policy::Invite,
            members: Vec::new(),
            ts_ms: now,
        };
        match self.store().apply(create).await {
            Ok(a) => a.channel.ok_or(EngineError::Internal),
            // Created meanwhile by another signed join: join it.
            Err(StoreError::NameTaken) => {
                let ch = self
                    .store()
                    .channel(&who.app, &name)
                    .await
                    .map_err(|e| EngineError::from_store(e, &name))?
                    .ok_or_else(|| EngineError::ChannelNotFound(name.clone()))?;
                let m = Mutation::Join {
                    actor: Self::actor(who),
                    channel: ch.id,
                    guard: rules::unbanned(Guard::none(), &who.user.id, now),
                    ts_ms: now,
                };
                let a = self.apply(m, &name).await?;
                self.tell_keepers(&who.app, &a).await;
                a.channel.ok_or(EngineError::Internal)
            }
            Err(e) => Err(EngineError::from_store(e, &name)),
        }
    }
}
