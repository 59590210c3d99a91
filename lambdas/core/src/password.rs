//! Passwords: a redacting holder and a CSPRNG generator with a policy.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::seq::IndexedRandom;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::errors::RotationError;

/// A database password. `Debug` prints a redaction marker (via `secrecy`),
/// and there is no `Display` or `Serialize`: the plaintext is reachable only
/// through [`Password::expose`], which is called where the value is handed to
/// Secrets Manager or used for a login.
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    pub fn new(value: String) -> Self {
        Self(SecretString::from(value))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The SCRAM-SHA-256 verifier of this password (4096 iterations, as
    /// `postgres-protocol` and PostgreSQL before 16 make it), computed here so
    /// that the plaintext never reaches the database server or its logs.
    pub fn scram_verifier(&self) -> String {
        postgres_protocol::password::scram_sha_256(self.expose().as_bytes())
    }

    /// The verifier of this password for `role`, of the given kind, as
    /// `pg_authid.rolpassword` stores it:
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802
    /// and 7677, base64, a random 16-byte salt) or `md5` + hex(md5(password ‖
    /// role)). Only base64, hex, `$`, `:` and the prefix: safe in a literal.
    pub fn verifier(&self, kind: Verifier, role: &str) -> String {
        match kind {
            Verifier::Md5 => postgres_protocol::password::md5(self.expose().as_bytes(), role),
            Verifier::ScramSha256 { iterations } => {
                let mut salt = [0u8; 16];
                rand::rng().fill_bytes(&mut salt);
                scram_sha_256(self.expose(), &salt, iterations)
            }
        }
    }
}

/// The kind of stored password verifier (what PostgreSQL's
/// `password_encryption` chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verifier {
    /// `scram-sha-256`, with the server's `scram_iterations` (PostgreSQL 16
    /// and later; 4096 before, and by default).
    ScramSha256 { iterations: u32 },
    /// `md5`: for servers whose `pg_hba.conf` or clients still use md5.
    Md5,
}

/// The iteration count of SCRAM verifiers before PostgreSQL 16 made it a setting.
pub const SCRAM_DEFAULT_ITERATIONS: u32 = 4096;

/// A SCRAM-SHA-256 verifier with a given salt and iteration count, computed
/// the way PostgreSQL's `scram_build_secret` does: SASLprep the password
/// (kept as it is where SASLprep refuses it, as libpq does), `SaltedPassword =
/// PBKDF2-HMAC-SHA-256(password, salt, i)`, `StoredKey = SHA-256(HMAC(Salted,
/// "Client Key"))`, `ServerKey = HMAC(Salted, "Server Key")`.
fn scram_sha_256(password: &str, salt: &[u8], iterations: u32) -> String {
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, &mut salted);
    let hmac = |key: &[u8], message: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(message);
        mac.finalize().into_bytes()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Characters left out by default: every ASCII punctuation character but
/// the four that no URI, JDBC URL, conninfo string, `.pgpass` or env file
/// treats specially (`-`, `.`, `_`, `~`, RFC 3986's unreserved marks).
/// Whitespace is always left out. What is left (letters, digits, `-._~`)
/// round-trips unencoded through a libpq URI, a JDBC URL (which decodes
/// `+` and `%`), Python's `urllib.parse` (which splits on `?`, `#`, `[`),
/// key=value conninfo (quotes, backslash), `.pgpass` (`:`, backslash),
/// env files and shells (`$`, backtick, quotes, `#`, `;`, `&`, …).
pub const DEFAULT_EXCLUDED: &str = "!\"#$%&'()*+,/:;<=>?@[\\]^`{|}";

pub const MIN_LENGTH: usize = 16;
pub const MAX_LENGTH: usize = 128;

/// How new passwords are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    length: usize,
    alphabet: Vec<char>,
    classes: Vec<Vec<char>>,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self::new(32, DEFAULT_EXCLUDED).expect("the default policy is valid")
    }
}

impl PasswordPolicy {
    /// A policy of `length` printable ASCII characters without `excluded`,
    /// holding at least one lower-case letter, upper-case letter, digit and
    /// (if any is left) punctuation character.
    pub fn new(length: usize, excluded: &str) -> Result<Self, RotationError> {
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
            return Err(RotationError::Configuration(format!(
                "PASSWORD_LENGTH must be between {MIN_LENGTH} and {MAX_LENGTH}, got {length}"
            )));
        }
        let keep = |c: &char| !excluded.contains(*c) && !c.is_whitespace();
        let class = |range: &mut dyn Iterator<Item = char>| range.filter(keep).collect::<Vec<_>>();
        let lower = class(&mut ('a'..='z'));
        let upper = class(&mut ('A'..='Z'));
        let digits = class(&mut ('0'..='9'));
        let punct = class(&mut ('!'..='~').filter(|c| c.is_ascii_punctuation()));
        for (name, set) in [
            ("lower-case", &lower),
            ("upper-case", &upper),
            ("digit", &digits),
        ] {
            if set.is_empty() {
                return Err(RotationError::Configuration(format!(
                    "PASSWORD_EXCLUDE_CHARACTERS removes every {name} character"
                )));
            }
        }
        let mut classes = vec![lower, upper, digits];
        if !punct.is_empty() {
            classes.push(punct);
        }
        let alphabet = classes.concat();
        Ok(Self {
            length,
            alphabet,
            classes,
        })
    }

    pub fn length(&self) -> usize {
        self.length
    }

    /// The characters passwords are drawn from.
    pub fn alphabet(&self) -> &[char] {
        &self.alphabet
    }

    /// The entropy of a generated password, in bits: log2 of how many
    /// passwords the policy accepts (every one is equally likely), counted
    /// by inclusion and exclusion over the required classes.
    pub fn entropy_bits(&self) -> f64 {
        let n = self.alphabet.len() as f64;
        let k = self.classes.len();
        // Fraction of all n^length strings that hold every class.
        let mut fraction = 0.0;
        for subset in 0u32..(1 << k) {
            let missing: usize = (0..k)
                .filter(|i| subset & (1 << i) != 0)
                .map(|i| self.classes[i].len())
                .sum();
            let sign = if subset.count_ones() % 2 == 0 {
                1.0
            } else {
                -1.0
            };
            fraction += sign * ((n - missing as f64) / n).powi(self.length as i32);
        }
        self.length as f64 * n.log2() + fraction.log2()
    }

    /// Whether `candidate` satisfies this policy.
    pub fn accepts(&self, candidate: &str) -> bool {
        candidate.chars().count() == self.length
            && candidate.chars().all(|c| self.alphabet.contains(&c))
            && self
                .classes
                .iter()
                .all(|class| candidate.chars().any(|c| class.contains(&c)))
    }

    /// A new password from the operating system's CSPRNG (via `rand`'s
    /// thread RNG, which is seeded from and periodically reseeded by the OS).
    pub fn generate(&self) -> Password {
        let mut rng = rand::rng();
        loop {
            // Rejection sampling keeps the distribution uniform over all
            // passwords that satisfy the policy.
            let candidate: String = (0..self.length)
                .map(|_| {
                    *self
                        .alphabet
                        .choose(&mut rng)
                        .expect("alphabet is not empty")
                })
                .collect();
            if self.accepts(&candidate) {
                return Password::new(candidate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let p = Password::new("hunter2-very-secret".into());
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"));
        assert_eq!(shown, "Password(***)");
    }

    #[test]
    fn generated_passwords_follow_the_default_policy() {
        let policy = PasswordPolicy::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let p = policy.generate();
            assert!(policy.accepts(p.expose()));
            assert_eq!(p.expose().len(), 32);
            for c in DEFAULT_EXCLUDED.chars() {
                assert!(!p.expose().contains(c));
            }
            assert!(!p.expose().chars().any(char::is_whitespace));
            assert!(seen.insert(p.expose().to_string()), "a password repeated");
        }
    }

    #[test]
    fn every_allowed_character_shows_up() {
        // With 2000 × 32 draws over ~88 characters, a character never drawn
        // would mean the generator is biased or the alphabet is wrong.
        let policy = PasswordPolicy::default();
        let mut counts = std::collections::HashMap::new();
        for _ in 0..2000 {
            for c in policy.generate().expose().chars() {
                *counts.entry(c).or_insert(0u32) += 1;
            }
        }
        assert_eq!(counts.len(), policy.alphabet.len());
    }

    #[test]
    fn length_bounds_are_enforced() {
        assert!(PasswordPolicy::new(15, "").is_err());
        assert!(PasswordPolicy::new(129, "").is_err());
        assert_eq!(
            PasswordPolicy::new(16, "")
                .unwrap()
                .generate()
                .expose()
                .len(),
            16
        );
        assert_eq!(
            PasswordPolicy::new(128, "")
                .unwrap()
                .generate()
                .expose()
                .len(),
            128
        );
    }

    #[test]
    fn excluding_a_whole_class_is_a_configuration_error() {
        let err = PasswordPolicy::new(32, "0123456789").unwrap_err();
        assert_eq!(err.name(), "ConfigurationError");
    }

    #[test]
    fn excluded_punctuation_is_honoured() {
        let all_punct: String = ('!'..='~').filter(|c| c.is_ascii_punctuation()).collect();
        let policy = PasswordPolicy::new(20, &all_punct).unwrap();
        for _ in 0..200 {
            assert!(policy
                .generate()
                .expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric()));
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn punctuation() -> Vec<char> {
            ('!'..='~').filter(|c| c.is_ascii_punctuation()).collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            /// Any valid length and any set of excluded punctuation and
            /// letters: every password has that length, none of the excluded
            /// characters, every required class, and no whitespace.
            #[test]
            fn every_password_follows_its_policy(
                length in MIN_LENGTH..=MAX_LENGTH,
                excluded_punct in proptest::sample::subsequence(punctuation(), 0..=32),
                excluded_letters in "[a-yA-Y0-8]{0,10}",
            ) {
                let excluded: String = excluded_punct.iter().collect::<String>() + &excluded_letters;
                let policy = PasswordPolicy::new(length, &excluded).unwrap();
                for _ in 0..20 {
                    let p = policy.generate();
                    let p = p.expose();
                    prop_assert_eq!(p.chars().count(), length);
                    prop_assert!(p.chars().all(|c| !excluded.contains(c)));
                    prop_assert!(p.chars().all(|c| c.is_ascii_graphic()));
                    prop_assert!(p.chars().any(|c| c.is_ascii_lowercase()));
                    prop_assert!(p.chars().any(|c| c.is_ascii_uppercase()));
                    prop_assert!(p.chars().any(|c| c.is_ascii_digit()));
                    if excluded_punct.len() < punctuation().len() {
                        prop_assert!(p.chars().any(|c| c.is_ascii_punctuation()));
                    }
                    prop_assert!(policy.accepts(p));
                }
            }

            /// Lengths outside the bounds are refused, never clamped.
            #[test]
            fn out_of_bounds_lengths_are_refused(length in prop_oneof![0..MIN_LENGTH, (MAX_LENGTH + 1)..4096]) {
                prop_assert!(PasswordPolicy::new(length, "").is_err());
            }
        }
    }

    /// Our SCRAM verifier (any iteration count) equals postgres-protocol's
    /// for the same salt and 4096 iterations, and md5 is PostgreSQL's
    /// `md5` + hex(md5(password ‖ role)).
    #[test]
    fn verifiers_match_postgres_protocol_and_postgresql() {
        let p = Password::new("Correct-Horse.Battery~9".into());
        let reference = p.scram_verifier();
        let (head, keys) = reference
            .split_once('$')
            .unwrap()
            .1
            .split_once('$')
            .unwrap();
        let (iterations, salt) = head.split_once(':').unwrap();
        assert_eq!(iterations, "4096");
        let salt = STANDARD.decode(salt).unwrap();
        assert_eq!(
            scram_sha_256(p.expose(), &salt, 4096),
            format!("SCRAM-SHA-256$4096:{}${keys}", STANDARD.encode(&salt))
        );
        let ours = p.verifier(Verifier::ScramSha256 { iterations: 10_000 }, "green");
        assert!(ours.starts_with("SCRAM-SHA-256$10000:"), "{ours}");
        assert_ne!(
            ours,
            p.verifier(Verifier::ScramSha256 { iterations: 10_000 }, "green"),
            "salted"
        );
        // printf 'Correct-Horse.Battery~9green' | md5sum
        assert_eq!(
            p.verifier(Verifier::Md5, "green"),
            "md542d80ab6b4fcf68648f7c4b6a46efa87"
        );
    }

    #[test]
    fn scram_verifier_hides_the_plaintext() {
        let p = Password::new("correct-horse-battery".into());
        let v = p.scram_verifier();
        assert!(v.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!v.contains("correct-horse"));
    }
}
