//! The verified-credential cache (docs/spec.md, "The login cache"): a login whose password was
//! checked a moment ago is not hashed (or bound to AD) again while nothing has changed.
//!
//! What is kept, in memory only: for an account (a mailbox), an HMAC-SHA256 of the password last
//! found right, under a key made at start and never written anywhere; for a recently failed
//! (login name, password), the HMAC of both and the refusal's reason; for an AD account, that
//! it was found enabled and in the mail group (R23). A password is answered from the cache as
//! right only when its HMAC matches the remembered one, so a wrong password is never accepted
//! from here. A failure is remembered for its exact password only, so it never stands in the
//! way of the right one.
//!
//! Every entry belongs to the store's credential generation it was made under
//! ([`dirmail_store::credential_generation`]); the caller reads the generation before it asks
//! or checks, and a newer one empties the cache. An entry made from a check that started under
//! an older generation is not kept.
//!
//! Each table holds at most `size` entries; the oldest is dropped for a new one.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ring::hmac;
use ring::rand::SystemRandom;

use super::RefusalReason;
use dirmail_proto::names::Secret;

/// How long entries live and how many there may be (`[auth]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a verified password (and an AD account's standing) is trusted.
    pub ttl: Duration,
    /// How long a failed password is answered as failed without a check; zero: never.
    pub negative_ttl: Duration,
    /// The most entries of each kind.
    pub size: usize,
}

/// A keyed hash of a proof: what the cache holds instead of the proof.
type Mac = [u8; 32];

/// The verified-credential cache a server's logins share.
pub struct CredentialCache {
    key: hmac::Key,
    settings: CacheSettings,
    state: Mutex<State>,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key nor the entries.
        f.debug_struct("CredentialCache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

struct State {
    /// The store's credential generation the entries belong to.
    generation: u64,
    /// Mailbox id → the MAC of its password last found right, and when.
    passwords: Bounded<i64, (Mac, Instant)>,
    /// Mailbox id → when its AD user was last found enabled and in the mail group.
    standing: Bounded<i64, Instant>,
    /// MAC of (login name, password) → why it failed, and when.
    failures: Bounded<Mac, (RefusalReason, Instant)>,
}

/// Why a cache could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make the login cache's key: the system's random source failed")]
pub struct CacheKeyError;

impl CredentialCache {
    /// A cache with a fresh random key; `None` when `settings.ttl` is zero (the cache is off).
    pub fn new(settings: CacheSettings) -> Result<Option<CredentialCache>, CacheKeyError> {
        if settings.ttl.is_zero() || settings.size == 0 {
            return Ok(None);
        }
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| CacheKeyError)?;
        Ok(Some(CredentialCache {
            key,
            settings,
            state: Mutex::new(State {
                generation: 0,
                passwords: Bounded::new(settings.size),
                standing: Bounded::new(settings.size),
                failures: Bounded::new(settings.size),
            }),
        }))
    }

    pub fn settings(&self) -> CacheSettings {
        self.settings
    }

    /// `Some(reason)` when `login` failed with this very `password` within `negative_ttl`
    /// under `generation`.
    pub fn recent_failure(
        &self,
        generation: u64,
        login: &str,
        password: &Secret,
    ) -> Option<RefusalReason> {
        if self.settings.negative_ttl.is_zero() {
            return None;
        }
        let mac = self.failure_mac(login, password);
        let mut state = self.state(generation)?;
        match state.failures.get(&mac) {
            Some(&(reason, at)) if at.elapsed() < self.settings.negative_ttl => Some(reason),
            Some(_) => {
                state.failures.remove(&mac);
                None
            }
            None => None,
        }
    }

    /// Remembers that `login` failed with `password` for `reason`, if the reason is one a
    /// password check (or the lookup before it) gives; the account's state (disabled, locked
    /// out in AD, outside the mail group) is asked again every time.
    pub fn remember_failure(
        &self,
        generation: u64,
        login: &str,
        password: &Secret,
        reason: RefusalReason,
    ) {
        let remembered = matches!(
            reason,
            RefusalReason::BadPassword
                | RefusalReason::UnknownUser
                | RefusalReason::NoAccount
                | RefusalReason::AmbiguousBareName
        );
        if !remembered || self.settings.negative_ttl.is_zero() {
            return;
        }
        let mac = self.failure_mac(login, password);
        if let Some(mut state) = self.state(generation) {
            state.failures.insert(mac, (reason, Instant::now()));
        }
    }

    /// True when `password` is the one last found right for the mailbox, within `ttl`, under
    /// `generation`. A different password is a miss (never a refusal): it is checked.
    pub fn password_verified(
        &self,
        generation: u64,
        mailbox_id: i64,
        address: &str,
        password: &Secret,
    ) -> bool {
        let Some(mut state) = self.state(generation) else {
            return false;
        };
        let Some(&(mac, at)) = state.passwords.get(&mailbox_id) else {
            return false;
        };
        if at.elapsed() >= self.settings.ttl {
            state.passwords.remove(&mailbox_id);
            return false;
        }
        drop(state);
        // `verify` compares in constant time.
        hmac::verify(
            &self.key,
            &password_message(mailbox_id, address, password),
            &mac,
        )
        .is_ok()
    }

    /// Remembers `password` as right for the mailbox, found by a check that began under
    /// `generation`.
    pub fn remember_password(
        &self,
        generation: u64,
        mailbox_id: i64,
        address: &str,
        password: &Secret,
    ) {
        let mac = self.mac(&password_message(mailbox_id, address, password));
        if let Some(mut state) = self.state(generation) {
            state.passwords.insert(mailbox_id, (mac, Instant::now()));
        }
    }

    /// True when the mailbox's AD user was found enabled and in the mail group (R23) within
    /// `ttl`, under `generation`.
    pub fn standing(&self, generation: u64, mailbox_id: i64) -> bool {
        let Some(mut state) = self.state(generation) else {
            return false;
        };
        match state.standing.get(&mailbox_id) {
            Some(at) if at.elapsed() < self.settings.ttl => true,
            Some(_) => {
                state.standing.remove(&mailbox_id);
                false
            }
            None => false,
        }
    }

    /// Remembers that the mailbox's AD user may log in, as found by a check that began under
    /// `generation`.
    pub fn remember_standing(&self, generation: u64, mailbox_id: i64) {
        if let Some(mut state) = self.state(generation) {
            state.standing.insert(mailbox_id, Instant::now());
        }
    }

    /// Entries held: verified passwords, AD standings, failures (for tests and the log).
    pub fn len(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (
            state.passwords.len(),
            state.standing.len(),
            state.failures.len(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0, 0)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a cache: whatever a panicking holder left is still entries to trust or
        // drop by their own checks.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, when `generation` is the one its entries belong to. A newer generation
    /// empties the cache first; an older one (read before a change another login has already
    /// seen) may neither read nor add.
    fn state(&self, generation: u64) -> Option<MutexGuard<'_, State>> {
        let mut state = self.lock();
        if generation > state.generation {
            state.passwords.clear();
            state.standing.clear();
            state.failures.clear();
            state.generation = generation;
        }
        (generation == state.generation).then_some(state)
    }

    fn failure_mac(&self, login: &str, password: &Secret) -> Mac {
        // Login names are compared as the store compares them: ASCII case does not matter.
        let login = login.to_ascii_lowercase();
        let mut message = Vec::with_capacity(16 + login.len() + password.expose().len());
        message.extend_from_slice(b"failed\0");
        // Lengths first, so no (login, password) pair reads as another.
        message.extend_from_slice(&(login.len() as u64).to_be_bytes());
        message.extend_from_slice(login.as_bytes());
        message.extend_from_slice(password.expose().as_bytes());
        self.mac(&message)
    }

    fn mac(&self, message: &[u8]) -> Mac {
        let tag = hmac::sign(&self.key, message);
        let mut mac = [0u8; 32];
        mac.copy_from_slice(tag.as_ref());
        mac
    }
}

/// What a verified password's MAC is taken over: the account and the password, so the same
/// password of two accounts does not give the same MAC.
fn password_message(mailbox_id: i64, address: &str, password: &Secret) -> Vec<u8> {
    let mut message = Vec::with_capacity(24 + address.len() + password.expose().len());
    message.extend_from_slice(b"verified\0");
    message.extend_from_slice(&mailbox_id.to_be_bytes());
    message.extend_from_slice(&(address.len() as u64).to_be_bytes());
    message.extend_from_slice(address.to_ascii_lowercase().as_bytes());
    message.extend_from_slice(password.expose().as_bytes());
    message
}

/// A map of at most `capacity` entries that drops the one inserted longest ago.
struct Bounded<K, V> {
    capacity: usize,
    entries: HashMap<K, (V, u64)>,
    /// Keys in insertion order, with the insertion's number; a key inserted again leaves a
    /// stale record behind, skipped when it comes up and swept when they pile up.
    order: VecDeque<(K, u64)>,
    next: u64,
}

impl<K: Clone + Eq + Hash, V> Bounded<K, V> {
    fn new(capacity: usize) -> Self {
        Bounded {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    fn insert(&mut self, key: K, value: V) {
        let number = self.next;
        self.next += 1;
        self.entries.insert(key.clone(), (value, number));
        self.order.push_back((key, number));
        while self.entries.len() > self.capacity {
            let Some((oldest, n)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&oldest).is_some_and(|(_, m)| *m == n) {
                self.entries.remove(&oldest);
            }
        }
        if self.order.len() > 2 * self.capacity + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(k, n)| entries.get(k).is_some_and(|(_, m)| m == n));
        }
    }

    fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl: Duration, negative_ttl: Duration, size: usize) -> CredentialCache {
        CredentialCache::new(CacheSettings {
            ttl,
            negative_ttl,
            size,
        })
        .unwrap()
        .unwrap()
    }

    fn hour() -> CredentialCache {
        cache(Duration::from_secs(3600), Duration::from_secs(30), 100)
    }

    const BOB: &str = "bob@example.jp";

    #[test]
    fn a_zero_ttl_turns_the_cache_off() {
        let off = CredentialCache::new(CacheSettings {
            ttl: Duration::ZERO,
            negative_ttl: Duration::from_secs(30),
            size: 100,
        })
        .unwrap();
        assert!(off.is_none());
    }

    #[test]
    fn only_the_remembered_password_is_answered_as_right() {
        let c = hour();
        let right = Secret::new("Bob-pw1-secret");
        assert!(!c.password_verified(1, 7, BOB, &right));
        c.remember_password(1, 7, BOB, &right);
        assert!(c.password_verified(1, 7, BOB, &right));
        for wrong in ["Bob-pw1-secreT", "Bob-pw1-secre", "Bob-pw1-secret ", ""] {
            assert!(
                !c.password_verified(1, 7, BOB, &Secret::new(wrong)),
                "{wrong:?}"
            );
        }
        // Another mailbox with the same password is not answered from bob's entry.
        assert!(!c.password_verified(1, 8, "carol@example.jp", &right));
        // Nor is bob's id under another address (an id used again after a delete).
        assert!(!c.password_verified(1, 7, "bob@other.example", &right));
    }

    #[test]
    fn a_newer_generation_empties_the_cache_and_an_older_one_may_not_add() {
        let c = hour();
        let right = Secret::new("Bob-pw1-secret");
        c.remember_password(1, 7, BOB, &right);
        c.remember_standing(1, 7);
        c.remember_failure(1, BOB, &Secret::new("guess"), RefusalReason::BadPassword);
        assert_eq!(c.len(), (1, 1, 1));
        assert!(!c.password_verified(2, 7, BOB, &right));
        assert!(c.is_empty());
        // A check that began before the change finishes after it: not kept.
        c.remember_password(1, 7, BOB, &right);
        c.remember_standing(1, 7);
        c.remember_failure(1, BOB, &Secret::new("guess"), RefusalReason::BadPassword);
        assert!(c.is_empty());
        assert!(!c.password_verified(1, 7, BOB, &right));
        c.remember_password(2, 7, BOB, &right);
        assert!(c.password_verified(2, 7, BOB, &right));
    }

    #[test]
    fn entries_expire() {
        let c = cache(Duration::from_millis(1), Duration::from_millis(1), 10);
        let right = Secret::new("Bob-pw1-secret");
        c.remember_password(1, 7, BOB, &right);
        c.remember_standing(1, 7);
        c.remember_failure(1, BOB, &Secret::new("guess"), RefusalReason::BadPassword);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!c.password_verified(1, 7, BOB, &right));
        assert!(!c.standing(1, 7));
        assert_eq!(c.recent_failure(1, BOB, &Secret::new("guess")), None);
        assert!(c.is_empty());
    }

    #[test]
    fn a_failure_is_remembered_for_its_password_only() {
        let c = hour();
        let guess = Secret::new("Guess-1");
        c.remember_failure(1, BOB, &guess, RefusalReason::BadPassword);
        assert_eq!(
            c.recent_failure(1, BOB, &guess),
            Some(RefusalReason::BadPassword)
        );
        // The login name's case does not matter, as in the store.
        assert_eq!(
            c.recent_failure(1, "BOB@Example.JP", &guess),
            Some(RefusalReason::BadPassword)
        );
        assert_eq!(c.recent_failure(1, BOB, &Secret::new("Guess-2")), None);
        assert_eq!(c.recent_failure(1, "carol@example.jp", &guess), None);
        // (login, password) pairs do not run into each other.
        c.remember_failure(1, "ab", &Secret::new("c"), RefusalReason::UnknownUser);
        assert_eq!(c.recent_failure(1, "a", &Secret::new("bc")), None);
    }

    #[test]
    fn the_accounts_state_is_not_remembered_as_a_failure() {
        let c = hour();
        let pw = Secret::new("Bob-pw1-secret");
        for reason in [
            RefusalReason::Disabled,
            RefusalReason::LockedOut,
            RefusalReason::NotInMailGroup,
            RefusalReason::PasswordExpired,
            RefusalReason::MustChangePassword,
            RefusalReason::AccountExpired,
            RefusalReason::SpaRequired,
            RefusalReason::OtherIdentity,
            RefusalReason::NoMailSecret,
        ] {
            c.remember_failure(1, BOB, &pw, reason);
            assert_eq!(c.recent_failure(1, BOB, &pw), None, "{reason:?}");
        }
    }

    #[test]
    fn a_zero_negative_ttl_remembers_no_failure() {
        let c = cache(Duration::from_secs(60), Duration::ZERO, 10);
        let guess = Secret::new("Guess-1");
        c.remember_failure(1, BOB, &guess, RefusalReason::BadPassword);
        assert_eq!(c.recent_failure(1, BOB, &guess), None);
        assert!(c.is_empty());
    }

    #[test]
    fn the_oldest_entry_makes_room() {
        let c = cache(Duration::from_secs(60), Duration::from_secs(60), 3);
        let pw = Secret::new("pw");
        for id in 1..=3 {
            c.remember_password(1, id, BOB, &pw);
        }
        // Inserting 1 again makes 2 the oldest.
        c.remember_password(1, 1, BOB, &pw);
        c.remember_password(1, 4, BOB, &pw);
        assert_eq!(c.len().0, 3);
        assert!(!c.password_verified(1, 2, BOB, &pw));
        for id in [1, 3, 4] {
            assert!(c.password_verified(1, id, BOB, &pw), "{id}");
        }
        // Many guesses keep the failures at the bound, and the order's records too.
        for i in 0..1000 {
            c.remember_failure(
                1,
                BOB,
                &Secret::new(format!("guess {i}")),
                RefusalReason::BadPassword,
            );
        }
        assert_eq!(c.len().2, 3);
        assert!(c.state(1).unwrap().failures.order.len() <= 2 * 3 + 16);
    }

    #[test]
    fn the_debug_form_shows_no_key_and_no_entry() {
        let c = hour();
        c.remember_password(1, 7, BOB, &Secret::new("Bob-pw1-secret"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("Bob-pw1"), "{shown}");
        assert!(shown.contains("CredentialCache"));
    }
}
