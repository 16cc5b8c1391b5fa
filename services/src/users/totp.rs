//! Admins' second factor: time-based one-time passwords (RFC 6238: HMAC-SHA1, 30-second steps,
//! 6 digits, what every authenticator app makes), enrolled in the console. A code is good for
//! its step and the ones either side (clocks drift), and once only: the step of the last
//! accepted code is kept, and a code of that step or an older one is refused as replayed, so a
//! code seen over a shoulder or in a log is worth nothing.
//!
//! Guessing is bounded: after [`FREE_FAILURES`] wrong codes in a row, every further attempt
//! (right or wrong) waits, the wait doubling from [`FIRST_WAIT_MS`] up to [`MAX_WAIT_MS`]
//! (`429 M_LIMIT_EXCEEDED` with `retry_after_ms`). Three codes are good at any moment, so one
//! guess wins with odds of 3 in a million: at most one guess an hour, once the wait is at its
//! longest, leaves a year of guessing at 3 %. The count is kept with the secret, so a restart
//! does not reset it.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use ruma::UserId;

pub use super::tables::TotpRecord;
use crate::{
    db::{codec::Json, Batch, Database},
    error::{Error, Result},
    time::now_ms,
};

const STEP_SECS: u64 = 30;
const DIGITS: u32 = 6;
/// Steps accepted either side of the current one.
const DRIFT: u64 = 1;
/// Wrong codes in a row before attempts have to wait.
const FREE_FAILURES: u32 = 5;
/// The wait after the first wrong code past [`FREE_FAILURES`], doubled by each further one.
const FIRST_WAIT_MS: u64 = 30_000;
const MAX_WAIT_MS: u64 = 3_600_000;

/// How long `record`'s owner must still wait before trying a code at `now`, if at all.
fn wait_of(record: &TotpRecord, now: u64) -> Option<std::time::Duration> {
    if record.failures < FREE_FAILURES {
        return None;
    }
    let wait = FIRST_WAIT_MS.saturating_mul(1 << (record.failures - FREE_FAILURES).min(10)).min(MAX_WAIT_MS);
    let elapsed = now.saturating_sub(record.failed_ms);
    (elapsed < wait).then(|| std::time::Duration::from_millis(wait - elapsed))
}

/// The code of `secret` at time step `step` (RFC 4226 dynamic truncation).
pub fn code_at(secret: &[u8], step: u64, digits: u32) -> u32 {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&step.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[hash.len() - 1] & 0x0f) as usize;
    let value = u32::from_be_bytes([hash[offset] & 0x7f, hash[offset + 1], hash[offset + 2], hash[offset + 3]]);
    value % 10u32.pow(digits)
}

/// RFC 4648 base32 without padding, as authenticator apps take secrets.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The step a code typed at `now_ms` matches, among the current one and [`DRIFT`] either side.
fn matching_step(secret: &[u8], code: &str, now_ms: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let typed: u32 = code.parse().ok()?;
    let current = now_ms / 1000 / STEP_SECS;
    (current.saturating_sub(DRIFT)..=current + DRIFT).find(|step| code_at(secret, *step, DIGITS) == typed)
}

pub struct Totp {
    db: Arc<Database>,
    /// Checks and enrolments one at a time, so one code cannot be accepted twice by two
    /// requests racing.
    lock: std::sync::Mutex<()>,
}

impl Totp {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db, lock: Default::default() }
    }

    pub fn record(&self, user: &UserId) -> Result<Option<TotpRecord>> {
        Ok(self.db.tables.users.userid_totp.get(&user.to_owned())?.map(|Json(r)| r))
    }

    /// Whether `user` has a confirmed second factor.
    pub fn enrolled(&self, user: &UserId) -> Result<bool> {
        Ok(self.record(user)?.is_some_and(|r| r.confirmed))
    }

    /// Starts (or restarts) an enrolment: a new pending secret, answered in base32. A confirmed
    /// secret is not replaced this way: [`Totp::remove`] first, with a code.
    pub fn begin(&self, user: &UserId) -> Result<String> {
        let _guard = self.lock.lock().expect("totp lock");
        if self.record(user)?.is_some_and(|r| r.confirmed) {
            return Err(Error::forbidden("a second factor is already enrolled: remove it first, with a code"));
        }
        let mut secret = vec![0u8; 20];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
        let record = TotpRecord { secret: secret.clone(), confirmed: false, last_step: 0, failures: 0, failed_ms: 0 };
        self.write(user, &record)?;
        Ok(base32(&secret))
    }

    /// Confirms a pending enrolment with a code made from it.
    pub fn confirm(&self, user: &UserId, code: &str) -> Result<()> {
        let _guard = self.lock.lock().expect("totp lock");
        let mut record = self.record(user)?.ok_or_else(|| Error::forbidden("no enrolment is under way"))?;
        if record.confirmed {
            return Err(Error::forbidden("the second factor is already enrolled"));
        }
        let step = matching_step(&record.secret, code, now_ms())
            .ok_or_else(|| Error::forbidden("the code does not match: check the authenticator's clock"))?;
        record.confirmed = true;
        record.last_step = step;
        self.write(user, &record)
    }

    /// Checks a code of `user`'s confirmed second factor and spends it: a wrong code, a code of
    /// a step already used (replayed) and a user without a second factor are all refused (403),
    /// and so is any code while too many wrong ones wait out their time (429).
    pub fn check(&self, user: &UserId, code: &str) -> Result<()> {
        self.check_at(user, code, now_ms())
    }

    fn check_at(&self, user: &UserId, code: &str, now: u64) -> Result<()> {
        let _guard = self.lock.lock().expect("totp lock");
        let mut record = self
            .record(user)?
            .filter(|r| r.confirmed)
            .ok_or_else(|| Error::forbidden("this needs a second factor: enrol one in the console first"))?;
        if let Some(retry_after) = wait_of(&record, now) {
            return Err(Error::LimitExceeded { retry_after });
        }
        let refusal = match matching_step(&record.secret, code, now) {
            None => "the one-time code is wrong",
            Some(step) if step <= record.last_step => "this one-time code was used already: wait for the next one",
            Some(step) => {
                record.last_step = step;
                record.failures = 0;
                return self.write(user, &record);
            }
        };
        record.failures = record.failures.saturating_add(1);
        record.failed_ms = now;
        self.write(user, &record)?;
        Err(Error::forbidden(refusal))
    }

    /// Removes `user`'s second factor.
    pub fn remove(&self, user: &UserId) -> Result<()> {
        let mut batch = Batch::new();
        self.db.tables.users.userid_totp.remove(&mut batch, &user.to_owned());
        self.db.commit(batch)?;
        Ok(())
    }

    fn write(&self, user: &UserId, record: &TotpRecord) -> Result<()> {
        let mut batch = Batch::new();
        self.db.tables.users.userid_totp.insert(&mut batch, &user.to_owned(), &Json(record.clone()));
        self.db.commit(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_test_vectors() {
        // Appendix B, SHA-1, secret "12345678901234567890", 8 digits.
        let secret = b"12345678901234567890";
        for (time, expected) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_234_567_890, 89_005_924),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(code_at(secret, time / 30, 8), expected, "at {time}");
        }
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn a_code_is_good_once_and_a_wrong_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).unwrap());
        let totp = Totp::new(db);
        let user = ruma::user_id!("@root:example.org");
        assert!(totp.check(user, "123456").is_err(), "nothing enrolled");
        totp.begin(user).unwrap();
        let secret = totp.record(user).unwrap().unwrap().secret;
        let now = now_ms();
        let code = |at: u64| format!("{:06}", code_at(&secret, at / 1000 / STEP_SECS, DIGITS));
        assert!(totp.check(user, &code(now)).is_err(), "a pending enrolment guards nothing");
        totp.confirm(user, &code(now)).unwrap();
        assert!(totp.check_at(user, &code(now), now).is_err(), "the confirming code is spent");
        let later = now + 30_000;
        totp.check_at(user, &code(later), later).unwrap();
        let replayed = totp.check_at(user, &code(later), later).unwrap_err();
        assert!(replayed.to_string().contains("used already"), "{replayed}");
        let later = later + 30_000;
        let step = later / 1000 / STEP_SECS;
        let near: Vec<u32> = (step - 1..=step + 1).map(|s| code_at(&secret, s, DIGITS)).collect();
        let wrong = (0..).map(|n| (near[1] + 1 + n) % 1_000_000).find(|c| !near.contains(c)).unwrap();
        let refused = totp.check_at(user, &format!("{wrong:06}"), later).unwrap_err();
        assert!(refused.to_string().contains("wrong"), "{refused}");
        assert!(totp.check_at(user, "12345", later).is_err(), "five digits");
        totp.check_at(user, &code(later), later).unwrap();
    }

    #[test]
    fn wrong_codes_in_a_row_make_every_attempt_wait() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).unwrap());
        let totp = Totp::new(db.clone());
        let user = ruma::user_id!("@root:example.org");
        totp.begin(user).unwrap();
        let secret = totp.record(user).unwrap().unwrap().secret;
        let code = |at: u64| format!("{:06}", code_at(&secret, at / 1000 / STEP_SECS, DIGITS));
        let now = now_ms();
        totp.confirm(user, &code(now)).unwrap();
        let at = now + 30_000;
        let wrong = (0..1_000_000)
            .map(|n| format!("{n:06}"))
            .find(|c| (0..5).all(|d| *c != code(at - 30_000 + d * 30_000)))
            .unwrap();
        for _ in 0..FREE_FAILURES {
            assert!(matches!(totp.check_at(user, &wrong, at), Err(Error::Forbidden(_))));
        }
        // Now even the right code waits, and a restart (a new service on the same store) keeps it.
        let totp = Totp::new(db);
        match totp.check_at(user, &code(at), at + 1_000) {
            Err(Error::LimitExceeded { retry_after }) => assert_eq!(retry_after.as_millis(), 29_000),
            other => panic!("{other:?}"),
        }
        // After the wait one attempt is tried; a wrong one doubles the next wait.
        let later = at + 30_000;
        assert!(matches!(totp.check_at(user, &wrong, later), Err(Error::Forbidden(_))));
        match totp.check_at(user, &code(later), later + 30_000) {
            Err(Error::LimitExceeded { retry_after }) => assert_eq!(retry_after.as_millis(), 30_000),
            other => panic!("{other:?}"),
        }
        let last = later + 60_000;
        totp.check_at(user, &code(last), last).unwrap();
        assert_eq!(totp.record(user).unwrap().unwrap().failures, 0, "a good code starts the count again");
    }
}
