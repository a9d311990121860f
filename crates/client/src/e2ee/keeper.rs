//! The keeper: a service device (its token has the `keeper` grant) that creators seal
//! every epoch key to, and that hands keys to members who join while nobody else is online
//! (PROTOCOL.md §7).
//!
//! On `keys_needed {channel, user, devices}` it makes the head roster list the user's
//! current devices (an `add` commit for a new member, a `rotate` for changed devices, each
//! with a fresh key) and seals every epoch key it holds to those devices, so the member
//! reads the whole history. On `member_left` of an encrypted channel it posts a `remove`
//! commit (a fresh key the removed member never gets) unless someone already did.

use super::{E2ee, E2eeError};
use crate::event::ClientEvent;
use herald_proto::frames::Event;
use serde_json::Value;
use std::collections::BTreeSet;

/// What a keeper admits.
#[derive(Debug, Clone, Default)]
pub struct KeeperConfig {
    /// Only these channels (ids or names) are served; all when `None`.
    pub allow: Option<BTreeSet<String>>,
}

impl KeeperConfig {
    /// Reads an allow list: one channel id or name per line; `#` comments and blank lines
    /// ignored.
    pub fn allow_file(path: &std::path::Path) -> Result<KeeperConfig, E2eeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| E2eeError::State(format!("cannot read allow list {path:?}: {e}")))?;
        let allow = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(KeeperConfig { allow: Some(allow) })
    }
}

/// One thing the keeper did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeeperAction {
    /// Keys sealed to `user`'s devices in `channel` (and a commit posted if the roster
    /// changed).
    Admitted { channel: String, user: String },
    /// A removal commit for `user` (or nothing to do: someone else had rotated).
    Removed { channel: String, user: String },
    /// Something failed; the keeper goes on.
    Failed { channel: String, user: String, error: String },
    /// A channel outside the allow list was ignored.
    Ignored { channel: String },
}

/// A keeper device: see the module docs.
#[derive(Debug, Clone)]
pub struct Keeper {
    e2ee: E2ee,
    config: KeeperConfig,
}

enum Work {
    Admit { channel: String, user: String },
    Left { channel: String, user: String },
}

fn work_of(event: &ClientEvent) -> Option<Work> {
    match event {
        ClientEvent::Raw(v) => work_of_json(v),
        ClientEvent::Event(e) => match e.as_ref() {
            Event::MemberLeft { channel, user, .. } => {
                Some(Work::Left { channel: channel.clone(), user: user.clone() })
            }
            other => serde_json::to_value(other).ok().as_ref().and_then(work_of_json),
        },
        _ => None,
    }
}

fn work_of_json(v: &Value) -> Option<Work> {
    let channel = v.get("channel")?.as_str()?.to_owned();
    let user = v.get("user")?.as_str()?.to_owned();
    match v.get("event")?.as_str()? {
        "keys_needed" => Some(Work::Admit { channel, user }),
        "member_left" => Some(Work::Left { channel, user }),
        _ => None,
    }
}

impl Keeper {
    /// A keeper over a connected E2EE client whose token has the `keeper` grant.
    pub fn new(e2ee: E2ee, config: KeeperConfig) -> Keeper {
        Keeper { e2ee, config }
    }

    /// The device client.
    pub fn e2ee(&self) -> &E2ee {
        &self.e2ee
    }

    fn allowed(&self, channel: &str) -> bool {
        self.config.allow.as_ref().is_none_or(|a| a.contains(channel))
    }

    /// Serves `keys_needed` and `member_left` until the client closes, calling `report`
    /// with what it did. At the start and after every reconnect it first catches up
    /// ([`Keeper::catch_up`]) on what it may have missed while away.
    pub async fn run(&self, mut report: impl FnMut(KeeperAction)) {
        let mut events = self.e2ee.client().events();
        self.catch_up(&mut report).await;
        let mut first_connect = true;
        while let Some(event) = events.recv().await {
            if let ClientEvent::Connected(_) = event {
                // The first is this connection's own (caught up above); later ones follow a
                // drop, during which signals may have been missed.
                if !std::mem::take(&mut first_connect) {
                    self.catch_up(&mut report).await;
                }
                continue;
            }
            let Some(work) = work_of(&event) else { continue };
            report(self.handle(work).await);
        }
    }

    /// For every channel whose roster this keeper holds, and every channel of the allow
    /// list: fetches new commits and, for every member whose current devices differ from the
    /// head roster's (a device registered while the keeper was away), posts the commit and
    /// seals the keys. Joins missed while away are not found this way (a keeper cannot list
    /// a channel's members); they are served at the member's next `keys_needed` (a new
    /// device, or a rejoin).
    pub async fn catch_up(&self, report: &mut impl FnMut(KeeperAction)) {
        let mut channels: BTreeSet<String> = self.e2ee.shared.lock().channels.keys().cloned().collect();
        channels.extend(self.config.allow.iter().flatten().cloned());
        for channel in channels {
            if !self.allowed(&channel) {
                continue;
            }
            match self.e2ee.sync_channel(&channel, "").await {
                Ok(()) => {}
                // No roster yet, or not an encrypted channel: nothing to keep.
                Err(E2eeError::Channel(_)) => continue,
                Err(e) => {
                    report(KeeperAction::Failed { channel, user: String::new(), error: e.to_string() });
                    continue;
                }
            }
            let users: Vec<String> = {
                let live = self.e2ee.shared.lock();
                live.channels
                    .get(&channel)
                    .map(|c| {
                        c.chain
                            .members()
                            .iter()
                            .filter(|m| !m.user.starts_with(super::channel::KEEPER_PREFIX))
                            .map(|m| m.user.clone())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for user in users {
                if let Err(e) = self.e2ee.admit(&channel, "", &user, false).await {
                    report(KeeperAction::Failed { channel: channel.clone(), user, error: e.to_string() });
                }
            }
        }
    }

    async fn handle(&self, work: Work) -> KeeperAction {
        let (channel, user, result, done) = match work {
            Work::Admit { channel, user } => {
                if !self.allowed(&channel) {
                    return KeeperAction::Ignored { channel };
                }
                let r = self.e2ee.admit(&channel, "", &user, true).await;
                (channel.clone(), user.clone(), r, KeeperAction::Admitted { channel, user })
            }
            Work::Left { channel, user } => {
                if !self.allowed(&channel) {
                    return KeeperAction::Ignored { channel };
                }
                let r = self.e2ee.rotate_without(&channel, "", &user).await;
                (channel.clone(), user.clone(), r, KeeperAction::Removed { channel, user })
            }
        };
        match result {
            Ok(()) => done,
            // A plain channel, or an encrypted one whose creator has not posted its genesis
            // yet (then the creator seals to the member itself).
            Err(E2eeError::Channel(_)) => done,
            Err(E2eeError::Client(e)) if e.code() == Some(herald_proto::ErrorCode::NotFound) => done,
            Err(e) => KeeperAction::Failed { channel, user, error: e.to_string() },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn allow_file_takes_one_channel_per_line_and_ignores_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow");
        std::fs::write(&path, "# channels the keeper serves\nchan-a\n\n  chan-b  # the second\n").unwrap();
        let config = KeeperConfig::allow_file(&path).unwrap();
        let allow = config.allow.unwrap();
        assert_eq!(allow.into_iter().collect::<Vec<_>>(), ["chan-a", "chan-b"]);
        assert!(KeeperConfig::allow_file(&dir.path().join("missing")).is_err());
    }
}
