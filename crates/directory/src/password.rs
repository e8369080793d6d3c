//! Password hashing with argon2id (PHC strings), for the local account database and the
//! password records of `passwd-file`.
//!
//! A login's argon2 hash is most of its CPU (m = 19 MiB, t = 2), so hashes go through a
//! [`HashingGate`]: at most one per core at a time, first come first served, each in a memory
//! area kept for the next one. Sixteen hashes at once on two cores would all finish late (and
//! thrash the cache with 300 MiB of working memory); taking turns lets the first finish first,
//! and reusing the area saves allocating and zeroing 19 MiB per login.

use std::sync::{Condvar, Mutex, OnceLock};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{self, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use dirmail_proto::names::Secret;

/// The most memory a stored hash may ask for (256 MiB). A `passwd-file` record written
/// elsewhere could ask for terabytes; such a record never matches.
const MAX_MEMORY_KIB: u32 = 256 * 1024;

pub fn hash(password: &Secret) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    let _turn = gate().enter();
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// True when `password` matches `stored`. A stored hash that cannot be checked (malformed, or
/// asking for too much memory) never matches, and costs a check of the dummy record, as an
/// account that exists would.
pub fn verify(password: &Secret, stored: &str) -> bool {
    check(password, stored).unwrap_or_else(|| {
        check_against_dummy(password);
        false
    })
}

/// Checks `password` against a dummy record, for nothing: what an unknown user costs, so a
/// refusal takes as long whether the user exists or not. The dummy is made once, at first
/// need, by [`hash`] (the parameters of every record this server writes) from a random
/// password no client knows.
pub fn check_against_dummy(password: &Secret) {
    if let Some(dummy) = dummy_record() {
        std::hint::black_box(check(password, dummy));
    }
}

fn dummy_record() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let mut random = [0u8; 32];
            OsRng.fill_bytes(&mut random);
            let unknowable: String = random.iter().map(|b| format!("{b:02x}")).collect();
            hash(&Secret::new(unknowable)).ok()
        })
        .as_deref()
}

/// `Some(matches)`, or `None` when `stored` cannot be checked.
fn check(password: &Secret, stored: &str) -> Option<bool> {
    let parsed = PasswordHash::new(stored).ok()?;
    let check = Check::of(&parsed)?;
    let mut turn = gate().enter();
    Some(check.matches(password, turn.memory()))
}

/// What a stored hash says to compute again.
struct Check {
    argon2: Argon2<'static>,
    blocks: usize,
    salt: [u8; 64],
    salt_len: usize,
    expected: password_hash::Output,
}

impl Check {
    fn of(parsed: &PasswordHash<'_>) -> Option<Check> {
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(parsed).ok()?;
        if params.m_cost() > MAX_MEMORY_KIB {
            return None;
        }
        let expected = parsed.hash?;
        let mut salt = [0u8; 64];
        let salt_len = parsed.salt?.decode_b64(&mut salt).ok()?.len();
        let blocks = params.block_count();
        Some(Check {
            argon2: Argon2::new(algorithm, version, params),
            blocks,
            salt,
            salt_len,
            expected,
        })
    }

    fn matches(&self, password: &Secret, memory: &mut Vec<Block>) -> bool {
        if memory.len() < self.blocks {
            memory.resize(self.blocks, Block::default());
        }
        let mut out = vec![0u8; self.expected.len()];
        let computed = self.argon2.hash_password_into_with_memory(
            password.expose().as_bytes(),
            &self.salt[..self.salt_len],
            &mut out,
            &mut memory[..self.blocks],
        );
        // `Output`'s equality is constant-time.
        computed.is_ok() && password_hash::Output::new(&out).is_ok_and(|o| o == self.expected)
    }
}

/// Turns at hashing: at most `permits` at once, in the order they asked.
struct HashingGate {
    state: Mutex<GateState>,
    turn: Condvar,
    permits: u64,
}

struct GateState {
    issued: u64,
    finished: u64,
    /// Memory areas of finished hashes, for the next ones.
    spare: Vec<Vec<Block>>,
}

fn gate() -> &'static HashingGate {
    static GATE: OnceLock<HashingGate> = OnceLock::new();
    GATE.get_or_init(|| HashingGate {
        state: Mutex::new(GateState {
            issued: 0,
            finished: 0,
            spare: Vec::new(),
        }),
        turn: Condvar::new(),
        permits: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
    })
}

impl HashingGate {
    fn enter(&self) -> Turn<'_> {
        let asked = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = state.issued;
        state.issued += 1;
        // Ticket t may start once all but `permits - 1` of the tickets before it have finished.
        while ticket >= state.finished + self.permits {
            state = self.turn.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        let memory = state.spare.pop().unwrap_or_default();
        drop(state);
        crate::timing::hash_gate_waits().observe(asked.elapsed());
        Turn { gate: self, memory }
    }
}

/// One hash's turn; the next may start when it is dropped.
struct Turn<'a> {
    gate: &'a HashingGate,
    memory: Vec<Block>,
}

impl Turn<'_> {
    fn memory(&mut self) -> &mut Vec<Block> {
        &mut self.memory
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        state.finished += 1;
        state.spare.push(std::mem::take(&mut self.memory));
        drop(state);
        self.gate.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash(&Secret::new("Passw0rd!")).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&Secret::new("Passw0rd!"), &h));
        assert!(!verify(&Secret::new("passw0rd!"), &h));
        assert!(!verify(&Secret::new("x"), "not a hash"));
    }

    #[test]
    fn hashes_with_other_parameters_and_algorithms_verify_too() {
        // Records written by other tools (a passwd-file from Dovecot's doveadm, say) carry
        // their own parameters; a reused memory area of another size must not matter.
        let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
        for (algorithm, m, t, p) in [
            (Algorithm::Argon2id, 8, 1, 1),
            (Algorithm::Argon2i, 64, 3, 2),
            (Algorithm::Argon2d, 32, 2, 4),
            (Algorithm::Argon2id, 19_456, 2, 1),
        ] {
            let params = Params::new(m, t, p, None).unwrap();
            let stored = Argon2::new(algorithm, Version::V0x13, params)
                .hash_password(b"Other-tool-pw1", &salt)
                .unwrap()
                .to_string();
            assert!(verify(&Secret::new("Other-tool-pw1"), &stored), "{stored}");
            assert!(!verify(&Secret::new("Other-tool-pw2"), &stored), "{stored}");
        }
    }

    #[test]
    fn the_dummy_is_made_once_with_the_servers_own_parameters() {
        check_against_dummy(&Secret::new("Passw0rd!"));
        assert_eq!(
            check(&Secret::new("Passw0rd!"), dummy_record().unwrap()),
            Some(false)
        );
        // Made once, with the parameters of the records this server writes.
        let dummy = dummy_record().unwrap();
        assert_eq!(dummy_record(), Some(dummy));
        let params = |h: &str| h.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(params(dummy), params(&hash(&Secret::new("x")).unwrap()));
        assert!(params(dummy).starts_with("$argon2id$v=19$m="), "{dummy}");
    }

    #[test]
    fn a_record_asking_for_too_much_memory_never_matches() {
        let stored = "$argon2id$v=19$m=4294967295,t=1,p=1$c2l4dGVlbiBieXRlIHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(!verify(&Secret::new("anything"), stored));
    }

    #[test]
    fn many_threads_share_the_gate_and_all_get_their_answer() {
        let h = hash(&Secret::new("Passw0rd!")).unwrap();
        let answers: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let h = &h;
                    s.spawn(move || {
                        let guess = if i % 2 == 0 { "Passw0rd!" } else { "wrong" };
                        verify(&Secret::new(guess), h)
                    })
                })
                .collect();
            handles.into_iter().map(|j| j.join().unwrap()).collect()
        });
        assert_eq!(
            answers,
            [true, false, true, false, true, false, true, false]
        );
    }
}
