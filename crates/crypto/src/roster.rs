//! Signed roster commits and the client-side verifier of their chain.
//!
//! Every change of a channel's membership (and every key rotation) is an
//! [`EpochCommit`] signed by a device whose Ed25519 key the members pinned
//! when the channel was created (the keeper or a channel admin). Commits
//! form a hash chain: `prev_commit_hash` is the [`SignedCommit::hash`] of the
//! previous commit, epochs increase by exactly one, and the first commit
//! (epoch 0, reason `create`) has an all-zero `prev_commit_hash`. A client
//! accepts a new epoch only through [`RosterChain::apply`], so a server
//! cannot add a member or fork the history on its own.
//!
//! Canonical signed bytes ([`EpochCommit::canonical_bytes`]):
//!
//! ```text
//! T("herald/epoch-commit/v1") | channel | u64 epoch | prev_commit_hash(32)
//!   | u64 member_count | for each member: user | u64 device_count | device...
//!   | reason: u8 tag (0 create, 1 add, 2 remove, 3 rotate) | u64 n | user...
//! signature   = Ed25519(signer, canonical_bytes)
//! commit hash = BLAKE3(T("herald/commit-hash/v1") | canonical_bytes | signer | signature)
//! ```
//!
//! JSON form of a [`SignedCommit`]:
//!
//! ```json
//! { "commit": { "channel": "c", "epoch": 1, "prev_commit_hash": "<hex 32 bytes>",
//!               "members": [ { "user": "alice", "devices": ["a1"] } ],
//!               "reason": { "kind": "remove", "users": ["bob"] } },
//!   "signer": "admin-device", "signature": "<base64url 64 bytes>" }
//! ```

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::encoding::{Transcript, b64_array, check_id};
use crate::identity::{Device, IdentityKeys, verify_sig};
use crate::{CryptoError, Result};

/// One member of a channel and the devices that receive its keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// User id.
    pub user: String,
    /// Device ids of that user.
    pub devices: Vec<String>,
}

/// Why a commit was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommitReason {
    /// Channel creation (epoch 0).
    Create,
    /// Users were added.
    Add {
        /// The added users.
        users: Vec<String>,
    },
    /// Users were removed.
    Remove {
        /// The removed users.
        users: Vec<String>,
    },
    /// Key rotation without membership change (or device changes).
    Rotate,
}

/// One epoch of a channel's roster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochCommit {
    /// Channel id.
    pub channel: String,
    /// The epoch this commit starts.
    pub epoch: u64,
    /// [`SignedCommit::hash`] of the previous commit, zero for epoch 0.
    #[serde(with = "hex32")]
    pub prev_commit_hash: [u8; 32],
    /// The full member list of this epoch.
    pub members: Vec<Member>,
    /// Why.
    pub reason: CommitReason,
}

/// An [`EpochCommit`] with its signer and signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommit {
    /// The commit.
    pub commit: EpochCommit,
    /// Device id of the signer (a pinned admin).
    pub signer: String,
    /// Ed25519 signature over [`EpochCommit::canonical_bytes`].
    #[serde(with = "b64_array")]
    pub signature: [u8; 64],
}

mod hex32 {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&blake3::Hash::from_bytes(*v).to_hex())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        blake3::Hash::from_hex(s.as_bytes()).map(|h| *h.as_bytes()).map_err(D::Error::custom)
    }
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl EpochCommit {
    /// The first commit of a channel.
    pub fn genesis(channel: impl Into<String>, members: Vec<Member>) -> Self {
        EpochCommit {
            channel: channel.into(),
            epoch: 0,
            prev_commit_hash: [0u8; 32],
            members,
            reason: CommitReason::Create,
        }
    }

    /// The bytes that are signed (see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut t = Transcript::new("herald/epoch-commit/v1")
            .str(&self.channel)
            .u64(self.epoch)
            .bytes(&self.prev_commit_hash)
            .u64(len64(self.members.len()));
        for m in &self.members {
            t = t.str(&m.user).u64(len64(m.devices.len()));
            for d in &m.devices {
                t = t.str(d);
            }
        }
        let (tag, users): (u8, &[String]) = match &self.reason {
            CommitReason::Create => (0, &[]),
            CommitReason::Add { users } => (1, users),
            CommitReason::Remove { users } => (2, users),
            CommitReason::Rotate => (3, &[]),
        };
        t = t.u8(tag).u64(len64(users.len()));
        for u in users {
            t = t.str(u);
        }
        t.finish()
    }

    /// Signs the commit with `signer`'s Ed25519 key.
    pub fn sign(self, signer: &Device) -> SignedCommit {
        let signature = signer.sign(&self.canonical_bytes());
        SignedCommit { commit: self, signer: signer.device_id().to_owned(), signature }
    }

    /// Structural checks: ids, no user or device listed twice, the reason
    /// consistent with the member list.
    fn check(&self) -> Result<()> {
        let bad = |reason: &str| CryptoError::Roster { epoch: self.epoch, reason: reason.to_owned() };
        check_id("channel id", &self.channel)?;
        let mut users = HashSet::new();
        let mut devices = HashSet::new();
        for m in &self.members {
            check_id("user id", &m.user)?;
            if !users.insert(m.user.as_str()) {
                return Err(bad("user listed twice"));
            }
            for d in &m.devices {
                check_id("device id", d)?;
                if !devices.insert(d.as_str()) {
                    return Err(bad("device listed twice"));
                }
            }
        }
        match &self.reason {
            CommitReason::Create if self.epoch != 0 => Err(bad("create commit after epoch 0")),
            CommitReason::Create => Ok(()),
            _ if self.epoch == 0 => Err(bad("epoch 0 must be a create commit")),
            CommitReason::Add { users: added } => {
                if added.iter().all(|u| users.contains(u.as_str())) {
                    Ok(())
                } else {
                    Err(bad("added user missing from members"))
                }
            }
            CommitReason::Remove { users: removed } => {
                if removed.iter().any(|u| users.contains(u.as_str())) {
                    Err(bad("removed user still in members"))
                } else {
                    Ok(())
                }
            }
            CommitReason::Rotate => Ok(()),
        }
    }
}

impl SignedCommit {
    /// The chain hash of this signed commit.
    pub fn hash(&self) -> [u8; 32] {
        let bytes = Transcript::new("herald/commit-hash/v1")
            .bytes(&self.commit.canonical_bytes())
            .str(&self.signer)
            .bytes(&self.signature)
            .finish();
        *blake3::hash(&bytes).as_bytes()
    }

    /// Verifies the signature against `signer` (whose device id must match).
    pub fn verify(&self, signer: &IdentityKeys) -> Result<()> {
        if signer.device_id != self.signer {
            return Err(CryptoError::mismatch("commit signer", &signer.device_id, &self.signer));
        }
        verify_sig("roster commit", &signer.ed25519, &self.commit.canonical_bytes(), &self.signature)
    }
}

/// The verified roster history of one channel, as a client holds it.
#[derive(Clone, Debug)]
pub struct RosterChain {
    channel: String,
    admins: BTreeMap<String, IdentityKeys>,
    head: SignedCommit,
    head_hash: [u8; 32],
    members_by_epoch: BTreeMap<u64, Vec<Member>>,
}

impl RosterChain {
    /// Starts a chain from the genesis commit, trusting the given admin
    /// devices (pinned at channel creation) as the only valid signers.
    pub fn new(admins: &[IdentityKeys], genesis: SignedCommit) -> Result<Self> {
        if admins.is_empty() {
            return Err(CryptoError::Roster { epoch: 0, reason: "no admin pinned".into() });
        }
        let mut map = BTreeMap::new();
        for a in admins {
            a.check()?;
            map.insert(a.device_id.clone(), a.clone());
        }
        if genesis.commit.epoch != 0 || genesis.commit.prev_commit_hash != [0u8; 32] {
            return Err(CryptoError::Roster {
                epoch: genesis.commit.epoch,
                reason: "genesis must be epoch 0 with a zero previous hash".into(),
            });
        }
        genesis.commit.check()?;
        let signer = map
            .get(&genesis.signer)
            .ok_or_else(|| CryptoError::UnauthorizedSigner { signer: genesis.signer.clone() })?;
        genesis.verify(signer)?;
        let mut members_by_epoch = BTreeMap::new();
        members_by_epoch.insert(0, genesis.commit.members.clone());
        Ok(RosterChain {
            channel: genesis.commit.channel.clone(),
            admins: map,
            head_hash: genesis.hash(),
            head: genesis,
            members_by_epoch,
        })
    }

    /// Verifies `next` extends the chain (same channel, epoch + 1, previous
    /// hash, admin signature, well-formed) and makes it the head. On error
    /// the chain is unchanged.
    pub fn apply(&mut self, next: &SignedCommit) -> Result<()> {
        let c = &next.commit;
        if c.channel != self.channel {
            return Err(CryptoError::mismatch("commit channel", &self.channel, &c.channel));
        }
        let expected = self
            .epoch()
            .checked_add(1)
            .ok_or(CryptoError::Roster { epoch: c.epoch, reason: "epoch overflow".into() })?;
        if c.epoch != expected {
            return Err(CryptoError::Roster { epoch: c.epoch, reason: format!("expected epoch {expected}") });
        }
        if c.prev_commit_hash != self.head_hash {
            return Err(CryptoError::Roster {
                epoch: c.epoch,
                reason: "previous commit hash does not match the verified head".into(),
            });
        }
        c.check()?;
        let signer = self
            .admins
            .get(&next.signer)
            .ok_or_else(|| CryptoError::UnauthorizedSigner { signer: next.signer.clone() })?;
        next.verify(signer)?;
        self.members_by_epoch.insert(c.epoch, c.members.clone());
        self.head_hash = next.hash();
        self.head = next.clone();
        Ok(())
    }

    /// The channel id.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The current (newest verified) epoch.
    pub fn epoch(&self) -> u64 {
        self.head.commit.epoch
    }

    /// The newest verified commit.
    pub fn head(&self) -> &SignedCommit {
        &self.head
    }

    /// Hash of the newest verified commit.
    pub fn head_hash(&self) -> [u8; 32] {
        self.head_hash
    }

    /// Members of the current epoch.
    pub fn members(&self) -> &[Member] {
        &self.head.commit.members
    }

    /// Members of `epoch`, if it was verified.
    pub fn members_at(&self, epoch: u64) -> Option<&[Member]> {
        self.members_by_epoch.get(&epoch).map(Vec::as_slice)
    }

    /// Whether `device` belonged to a member at `epoch`.
    pub fn is_member_device(&self, epoch: u64, device: &str) -> bool {
        self.members_at(epoch).is_some_and(|ms| ms.iter().any(|m| m.devices.iter().any(|d| d == device)))
    }

    /// An unsigned commit for the next epoch (for an admin to sign).
    pub fn next_commit(&self, members: Vec<Member>, reason: CommitReason) -> EpochCommit {
        EpochCommit {
            channel: self.channel.clone(),
            epoch: self.epoch().saturating_add(1),
            prev_commit_hash: self.head_hash,
            members,
            reason,
        }
    }
}
