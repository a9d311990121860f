//! Validated names (PROTOCOL.md §3). Each newtype is constructed once at the edge with
//! `parse`; code past the edge can rely on the rule holding.
//!
//! Request frames carry plain strings so that a malformed name is reported as `invalid_name`
//! rather than as a JSON error; the server parses them into these types.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A name that breaks its rule, with the rule in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {rule}")]
pub struct NameError {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

macro_rules! name_type {
    ($(#[$m:meta])* $name:ident, $what:literal, $rule:literal, $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `s` against the rule and wraps it.
            pub fn parse(s: impl Into<String>) -> Result<Self, NameError> {
                let s: String = s.into();
                let check: fn(&str) -> bool = $check;
                if check(&s) {
                    Ok($name(s))
                } else {
                    // Keep error messages short even when the input is huge.
                    let value: String = s.chars().take(80).collect();
                    Err(NameError { what: $what, value, rule: $rule })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $name::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A user id (`sub` claim): 1–128 chars of `[A-Za-z0-9_.@:-]`.
    UserId,
    "user id",
    "1-128 characters of A-Z a-z 0-9 _ . @ : -",
    |s| (1..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.@:-".contains(&b))
);

name_type!(
    /// A channel name: 2–64 chars of `[a-z0-9_-]`, unique within an app.
    ChannelName,
    "channel name",
    "2-64 characters of a-z 0-9 _ -",
    |s| (2..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
);

name_type!(
    /// A pub/sub subject: 1–256 printable ASCII chars, no spaces.
    Subject,
    "subject",
    "1-256 printable ASCII characters without spaces",
    |s| (1..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
);

name_type!(
    /// An idempotency key of `message.send`: 1–64 chars (any characters but control ones).
    ClientId,
    "client_id",
    "1-64 characters, no control characters",
    |s| (1..=64).contains(&s.chars().count()) && !s.chars().any(char::is_control)
);

name_type!(
    /// A device id (§7): 1–128 chars of `[A-Za-z0-9_.:-]`, unique within an app.
    DeviceId,
    "device id",
    "1-128 characters of A-Z a-z 0-9 _ . : -",
    |s| (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
);

/// The rules above as JSON Schema, for the server's OpenAPI document: each name is a string
/// with the pattern and length bounds of its rule (ECMA-262 regex, as OpenAPI wants).
#[cfg(feature = "openapi")]
mod schema {
    use super::*;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    macro_rules! string_schema {
        ($name:ident, $rule:literal, $pattern:literal, $min:literal, $max:literal) => {
            impl utoipa::PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some($rule))
                        .pattern(Some($pattern))
                        .min_length(Some($min))
                        .max_length(Some($max))
                        .into()
                }
            }
            impl utoipa::ToSchema for $name {}
        };
    }

    string_schema!(
        UserId,
        "A user id: 1-128 characters of A-Z a-z 0-9 _ . @ : -",
        "^[A-Za-z0-9_.@:-]{1,128}$",
        1,
        128
    );
    string_schema!(
        ChannelName,
        "A channel name: 2-64 characters of a-z 0-9 _ -",
        "^[a-z0-9_-]{2,64}$",
        2,
        64
    );
    string_schema!(
        Subject,
        "A subject: 1-256 printable ASCII characters, no spaces",
        "^[!-~]{1,256}$",
        1,
        256
    );
    string_schema!(
        ClientId,
        "An idempotency key: 1-64 characters, no control characters",
        "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,64}$",
        1,
        64
    );
    string_schema!(
        DeviceId,
        "A device id: 1-128 characters of A-Z a-z 0-9 _ . : -",
        "^[A-Za-z0-9_.:-]{1,128}$",
        1,
        128
    );
}

impl Subject {
    /// The user whose private inbox this subject is (`user:<id>`), if it is one.
    pub fn inbox_owner(&self) -> Option<&str> {
        self.0.strip_prefix("user:")
    }
}

/// True when `s` has the shape of a server-assigned id (a UUID string, lowercase hex).
pub fn looks_like_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T>(parse: impl Fn(&str) -> Result<T, NameError>, ok: &[&str], bad: &[&str]) {
        for s in ok {
            assert!(parse(s).is_ok(), "{s:?} should be accepted");
        }
        for s in bad {
            assert!(parse(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn user_ids() {
        let long = "a".repeat(129);
        check(
            |s| UserId::parse(s),
            &["ada", "a", "svc:bot-1", "x@y.z", &"a".repeat(128)],
            &["", "with space", "é", &long, "semi;colon"],
        );
    }

    #[test]
    fn channel_names() {
        check(
            |s| ChannelName::parse(s),
            &["project-x", "ab", "a_1", &"z".repeat(64)],
            &["a", "Project", "has space", &"z".repeat(65), "dot.name", ""],
        );
    }

    #[test]
    fn subjects() {
        check(
            |s| Subject::parse(s),
            &["presence:lobby", "user:ada", "x", &"s".repeat(256)],
            &["", "a b", "tab\t", &"s".repeat(257), "é"],
        );
        assert_eq!(
            Subject::parse("user:ada").ok().and_then(|s| s.inbox_owner().map(str::to_owned)),
            Some("ada".into())
        );
    }

    #[test]
    fn client_ids() {
        check(|s| ClientId::parse(s), &["k1", &"é".repeat(64)], &["", &"k".repeat(65), "a\nb"]);
    }

    #[test]
    fn uuid_shape() {
        assert!(looks_like_uuid("0190f5c2-7a1b-7cc3-9a4e-2b7d8c1e0f11"));
        assert!(!looks_like_uuid("project-x"));
        assert!(!looks_like_uuid("0190f5c2x7a1b-7cc3-9a4e-2b7d8c1e0f11"));
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<UserId>("\"ada\"").is_ok());
        assert!(serde_json::from_str::<UserId>("\"a d a\"").is_err());
    }
}
