//! SHA-512 crypt (`$6$`, Ulrich Drepper's "Unix crypt using SHA-256 and
//! SHA-512", the default of glibc's `crypt(3)`), so a rebuild can hand
//! snf-image the new password as `img_passwd_hash` (a hash for the guest's
//! `/etc/shadow`) instead of the password itself.
//!
//! Ganeti 3.0's `POST /2/instances/NAME/reinstall` takes `osparams` only
//! (`_ParseInstanceReinstallRequest` reads `os`, `start`, `osparams`), and
//! `OP_INSTANCE_REINSTALL` stores the `osparams` it is given in the
//! instance's configuration: a secret OS parameter cannot reach a
//! reinstall through RAPI. The hash is what may be written there.

use rand::Rng;
use sha2::{Digest, Sha512};

/// crypt's base-64 alphabet.
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The default number of rounds (the hash does not name it then).
const ROUNDS: usize = 5000;

/// `password` hashed with a fresh random 16-character salt:
/// `$6$SALT$HASH`.
pub fn sha512_crypt(password: &str) -> String {
    let mut rng = rand::thread_rng();
    let salt: String = (0..16)
        .map(|_| ITOA64[rng.gen_range(0..64)] as char)
        .collect();
    sha512_crypt_with_salt(password, &salt)
}

/// `password` hashed with `salt` (at most its first 16 bytes are used, as
/// crypt does).
pub fn sha512_crypt_with_salt(password: &str, salt: &str) -> String {
    let pw = password.as_bytes();
    let salt = &salt.as_bytes()[..salt.len().min(16)];

    let b = Sha512::new()
        .chain_update(pw)
        .chain_update(salt)
        .chain_update(pw)
        .finalize();
    let mut a = Sha512::new().chain_update(pw).chain_update(salt);
    a.update(repeat_to(&b, pw.len()));
    let mut n = pw.len();
    while n > 0 {
        if n & 1 == 1 {
            a.update(b);
        } else {
            a.update(pw);
        }
        n >>= 1;
    }
    let a = a.finalize();

    let mut dp = Sha512::new();
    for _ in 0..pw.len() {
        dp.update(pw);
    }
    let p = repeat_to(&dp.finalize(), pw.len());
    let mut ds = Sha512::new();
    for _ in 0..16 + usize::from(a[0]) {
        ds.update(salt);
    }
    let s = repeat_to(&ds.finalize(), salt.len());

    let mut c = a;
    for i in 0..ROUNDS {
        let mut h = Sha512::new();
        if i & 1 == 1 {
            h.update(&p);
        } else {
            h.update(c);
        }
        if i % 3 != 0 {
            h.update(&s);
        }
        if i % 7 != 0 {
            h.update(&p);
        }
        if i & 1 == 1 {
            h.update(c);
        } else {
            h.update(&p);
        }
        c = h.finalize();
    }

    const ORDER: [(usize, usize, usize); 21] = [
        (0, 21, 42),
        (22, 43, 1),
        (44, 2, 23),
        (3, 24, 45),
        (25, 46, 4),
        (47, 5, 26),
        (6, 27, 48),
        (28, 49, 7),
        (50, 8, 29),
        (9, 30, 51),
        (31, 52, 10),
        (53, 11, 32),
        (12, 33, 54),
        (34, 55, 13),
        (56, 14, 35),
        (15, 36, 57),
        (37, 58, 16),
        (59, 17, 38),
        (18, 39, 60),
        (40, 61, 19),
        (62, 20, 41),
    ];
    let mut out = format!("$6${}$", String::from_utf8_lossy(salt));
    for (x, y, z) in ORDER {
        encode(
            &mut out,
            u32::from(c[x]),
            u32::from(c[y]),
            u32::from(c[z]),
            4,
        );
    }
    encode(&mut out, 0, 0, u32::from(c[63]), 2);
    out
}

/// `digest` repeated and cut to `len` bytes.
fn repeat_to(digest: &[u8], len: usize) -> Vec<u8> {
    digest.iter().copied().cycle().take(len).collect()
}

fn encode(out: &mut String, b2: u32, b1: u32, b0: u32, n: usize) {
    let mut w = (b2 << 16) | (b1 << 8) | b0;
    for _ in 0..n {
        out.push(ITOA64[(w & 0x3f) as usize] as char);
        w >>= 6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_crypt_3() {
        // `openssl passwd -6 -salt saltstring 'Hello world!'` and glibc's
        // crypt(3) give this (the specification's first test vector).
        assert_eq!(
            sha512_crypt_with_salt("Hello world!", "saltstring"),
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
        // a long password and an over-long salt (cut to 16 bytes)
        assert_eq!(
            sha512_crypt_with_salt(
                "we have a short salt string but not a short password",
                "toolongsaltstring"
            ),
            "$6$toolongsaltstrin$CsXGH/Hv7LfzV7cz4e5PZ25Frby4INJn6I9bBUm6PHYCfL3ryXe64vEUIDqe.2fTY/Xn2QWl570cYoUZo3uIR1"
        );
        assert_eq!(
            sha512_crypt_with_salt(
                "we have a short salt string but not a short password",
                "toolongsaltstringXXXX"
            ),
            sha512_crypt_with_salt(
                "we have a short salt string but not a short password",
                "toolongsaltstrin"
            )
        );
    }

    #[test]
    fn fresh_salts_differ() {
        let (a, b) = (sha512_crypt("pw"), sha512_crypt("pw"));
        assert_ne!(a, b);
        assert!(a.starts_with("$6$") && a.len() == 3 + 16 + 1 + 86, "{a}");
        let salt = &a[3..19];
        assert_eq!(sha512_crypt_with_salt("pw", salt), a);
    }
}
