//! HTTP basic authentication of the agent's endpoints, as the Prometheus exporter-toolkit does
//! it: `basic_auth_users` maps each user to a bcrypt hash of its password.
//!
//! bcrypt costs 50-250 ms a check, and Prometheus sends the same credentials every scrape, so
//! a check that passed is remembered: by an HMAC of the user and password under a key drawn
//! at start, never the password itself, and looked up by that tag, which a client cannot
//! predict, so the lookup's timing says nothing. A failed check is not remembered: every
//! wrong guess costs a full bcrypt run. Runs are made one at a time, off the serving thread,
//! and an unknown user is checked against a configured hash all the same, so that only
//! bcrypt's own time (compared in constant time inside the bcrypt crate) is ever spent.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use hyper::header::HeaderValue;
use ring::hmac;
use tokio::sync::Semaphore;

/// Passed checks remembered; at this many the memory is cleared (a handful of scrapers and
/// people use an agent, so it is never reached in use).
const REMEMBERED: usize = 64;

/// The users allowed in, and the checks that passed.
pub struct BasicAuth {
    /// User name to bcrypt hash.
    users: BTreeMap<String, String>,
    /// The hash an unknown user's password is checked against: the costliest configured.
    decoy: String,
    /// Keys the tags of passed checks; drawn at start, never shown.
    key: hmac::Key,
    /// Tags of (user, password) pairs that passed.
    passed: Mutex<HashSet<[u8; 32]>>,
    /// One bcrypt run at a time: a client guessing passwords takes at most one core.
    one_at_a_time: Semaphore,
}

/// Why `basic_auth_users` cannot be used: the user whose hash is wrong, and bcrypt's words.
#[derive(Debug)]
pub struct BadHash {
    /// The user.
    pub user: String,
    /// What bcrypt said of its hash.
    pub reason: String,
}

impl BasicAuth {
    /// Checks that every hash is bcrypt's, as the exporter-toolkit does at start. `None` when
    /// there are no users: no authentication, as in the toolkit.
    pub fn new(users: BTreeMap<String, String>) -> Result<Option<Self>, BadHash> {
        let mut decoy: Option<(u32, &String)> = None;
        for (user, hash) in &users {
            let parts: bcrypt::HashParts =
                hash.parse().map_err(|e: bcrypt::BcryptError| BadHash {
                    user: user.clone(),
                    reason: format!("not a bcrypt hash ({e})"),
                })?;
            let cost = parts.get_cost();
            if decoy.is_none_or(|(costliest, _)| cost > costliest) {
                decoy = Some((cost, hash));
            }
        }
        let Some((_, decoy)) = decoy else {
            return Ok(None);
        };
        let decoy = decoy.clone();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| BadHash {
                user: String::new(),
                reason: "the system gave no random key".into(),
            })?;
        Ok(Some(Self {
            users,
            decoy,
            key,
            passed: Mutex::new(HashSet::new()),
            one_at_a_time: Semaphore::new(1),
        }))
    }

    /// How many users may log in.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Whether a request with this `Authorization` header is let in.
    pub async fn admits(self: &Arc<Self>, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let tag = self.tag(&user, &password);
        if self.remembered().contains(&tag) {
            return true;
        }
        let known = self.users.get(&user);
        let hash = known.unwrap_or(&self.decoy).clone();
        let Ok(_turn) = self.one_at_a_time.acquire().await else {
            return false;
        };
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|verified| verified.unwrap_or(false));
        let admitted = matches && known.is_some();
        if admitted {
            let mut passed = self.remembered();
            if passed.len() >= REMEMBERED {
                passed.clear();
            }
            passed.insert(tag);
        }
        admitted
    }

    /// The tag of a user and password: unambiguous, since the user's length comes first.
    fn tag(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(&(user.len() as u64).to_le_bytes());
        context.update(user.as_bytes());
        context.update(password);
        let mut tag = [0; 32];
        tag.copy_from_slice(context.sign().as_ref());
        tag
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.passed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The user and password of a `Basic` Authorization header (the scheme in any case, as
/// RFC 7617 and Go's `Request.BasicAuth` take it).
fn credentials(header: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let text = header.to_str().ok()?;
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn auth() -> Arc<BasicAuth> {
        // The least cost, so the tests stay fast.
        let secret = bcrypt::hash("secret", 4).unwrap();
        let users = BTreeMap::from([("alice".to_owned(), secret)]);
        Arc::new(BasicAuth::new(users).unwrap().unwrap())
    }

    #[tokio::test]
    async fn the_right_password_passes_and_is_remembered_and_nothing_else_passes() {
        let auth = auth();
        assert!(auth.admits(Some(&header("alice", "secret"))).await);
        assert_eq!(auth.remembered().len(), 1);
        assert!(auth.admits(Some(&header("alice", "secret"))).await);
        assert_eq!(auth.remembered().len(), 1);
        assert!(!auth.admits(Some(&header("alice", "Secret"))).await);
        assert!(!auth.admits(Some(&header("bob", "secret"))).await);
        assert!(!auth.admits(None).await);
        let bearer = HeaderValue::from_static("Bearer abc");
        assert!(!auth.admits(Some(&bearer)).await);
        // Failures are not remembered.
        assert_eq!(auth.remembered().len(), 1);
    }

    #[test]
    fn a_hash_that_is_not_bcrypts_is_refused_with_its_user() {
        let users = BTreeMap::from([("alice".to_owned(), "plain".to_owned())]);
        let bad = BasicAuth::new(users).err().unwrap();
        assert_eq!(bad.user, "alice");
        assert!(
            bad.reason.starts_with("not a bcrypt hash"),
            "{}",
            bad.reason
        );
        assert!(BasicAuth::new(BTreeMap::new()).unwrap().is_none());
    }

    #[test]
    fn credentials_are_split_at_the_first_colon() {
        let value = header("alice", "a:b");
        assert_eq!(
            credentials(&value),
            Some(("alice".to_owned(), b"a:b".to_vec()))
        );
        let lower = HeaderValue::from_static("basic YWxpY2U6eA==");
        assert_eq!(
            credentials(&lower),
            Some(("alice".to_owned(), b"x".to_vec()))
        );
    }
}
