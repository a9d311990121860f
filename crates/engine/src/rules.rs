//! Who may do what: every authorisation rule of a write, in one place, expressed as the
//! [`Guard`] the store checks atomically with the write (membership can change between a read
//! and a write; a guard cannot be raced). A backend evaluates guards and knows no rule, so
//! every backend enforces exactly these.
//!
//! Grants (PROTOCOL.md §2): `channels:admin` manages any channel of its app (joins invite-only
//! channels, adds and removes anyone, deletes any channel); `server` posts, reacts and edits
//! without being a member (as the author it names). Nobody edits or deletes another's message
//! or reaction.

use crate::Principal;
use herald_store::Guard;

/// `channel.join`: an invite-only channel needs `channels:admin` (or an earlier add).
pub fn join(who: &Principal) -> Guard {
    Guard { open: !who.grants.channels_admin, ..Guard::none() }
}

/// `channel.add_member`: members add members; admins anyone.
pub fn add_member(who: &Principal) -> Guard {
    if who.grants.channels_admin { Guard::none() } else { Guard::member(&who.user.id) }
}

/// `channel.leave` / `channel.remove_member` / `channel.kick`: yourself, or anyone if you
/// created the channel or hold `channels:admin` or `server` (the app's backend moderates).
pub fn remove_member(who: &Principal, user: &str) -> Guard {
    if user == who.user.id || who.grants.channels_admin || who.grants.server {
        Guard::none()
    } else {
        Guard { creator: Some(who.user.id.clone()), ..Guard::none() }
    }
}

/// `channel.delete`: its creator, or `channels:admin`.
pub fn delete_channel(who: &Principal) -> Guard {
    if who.grants.channels_admin {
        Guard::none()
    } else {
        Guard { creator: Some(who.user.id.clone()), ..Guard::none() }
    }
}

/// `message.send` and `reaction.add`: members; a `server` token posts as anyone, member or not.
pub fn write(who: &Principal) -> Guard {
    if who.grants.server { Guard::none() } else { Guard::member(&who.user.id) }
}

/// `message.edit`, `message.delete`, `reaction.remove`: the author only (a member, unless
/// `server`).
pub fn own(who: &Principal) -> Guard {
    Guard { author: Some(who.user.id.clone()), ..write(who) }
}

/// `message.delete`: the author, or a `channels:admin` moderator deleting anyone's message
/// (the tombstone's author, and the event's `by`, is the moderator).
pub fn delete_message(who: &Principal) -> Guard {
    if who.grants.channels_admin { Guard::none() } else { own(who) }
}

/// `channel.ban` / `channel.unban`: the channel's creator, `channels:admin` or `server`.
pub fn ban(who: &Principal) -> Guard {
    if who.grants.channels_admin || who.grants.server {
        Guard::none()
    } else {
        Guard { creator: Some(who.user.id.clone()), ..Guard::none() }
    }
}

/// Adds to `guard` that `user` must not be banned at `now` (every join and add).
pub fn unbanned(guard: Guard, user: &str, now: i64) -> Guard {
    Guard { not_banned: Some((user.to_owned(), now)), ..guard }
}

/// `read`: a read marker belongs to a member, whatever the grants.
pub fn read(who: &Principal) -> Guard {
    Guard::member(&who.user.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Grants;
    use herald_proto::model::UserInfo;

    fn who(grants: &[&str]) -> Principal {
        let grants: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
        Principal {
            app: "a".into(),
            user: UserInfo { id: "ada".into(), name: None, kind: Default::default() },
            grants: Grants::from_claim(Some(&grants)),
        }
    }

    #[test]
    fn grants_lift_exactly_their_conditions() {
        let user = who(&["channels:create"]);
        let admin = who(&["channels:admin"]);
        let server = who(&["server"]);
        assert_eq!(join(&user), Guard { open: true, ..Guard::none() });
        assert_eq!(join(&admin), Guard::none());
        assert_eq!(add_member(&user), Guard::member("ada"));
        assert_eq!(add_member(&admin), Guard::none());
        assert_eq!(remove_member(&user, "ada"), Guard::none(), "leaving needs nothing");
        assert_eq!(remove_member(&user, "bob").creator.as_deref(), Some("ada"));
        assert_eq!(remove_member(&admin, "bob"), Guard::none());
        assert_eq!(remove_member(&server, "bob"), Guard::none(), "the backend moderates");
        assert_eq!(delete_message(&admin), Guard::none(), "moderators delete anyone's message");
        assert_eq!(delete_message(&user), own(&user));
        assert_eq!(delete_message(&server), own(&server), "server deletes only its own");
        assert_eq!(ban(&user).creator.as_deref(), Some("ada"));
        assert_eq!((ban(&admin), ban(&server)), (Guard::none(), Guard::none()));
        assert_eq!(unbanned(join(&user), "ada", 5).not_banned, Some(("ada".to_owned(), 5)));
        assert_eq!(delete_channel(&user).creator.as_deref(), Some("ada"));
        assert_eq!(delete_channel(&admin), Guard::none());
        assert_eq!(write(&user), Guard::member("ada"));
        assert_eq!(write(&server), Guard::none());
        assert_eq!(
            own(&server),
            Guard { author: Some("ada".into()), ..Guard::none() },
            "server edits only its own"
        );
        assert_eq!(
            own(&user),
            Guard { author: Some("ada".into()), member: Some("ada".into()), ..Guard::none() }
        );
        assert_eq!(read(&server), Guard::member("ada"));
        // `admin` implies every other grant.
        assert_eq!(write(&who(&["admin"])), Guard::none());
    }
}
