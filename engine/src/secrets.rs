//! Named secrets (`keys:` at the top of a pipeline) and the expression functions that protect
//! sensitive fields with them.
//!
//! ```yaml
//! keys:
//!   card_key: {file: secrets/card.key}      # the file's bytes, exactly as read
//!   audit_key: {env: RILL_AUDIT_KEY}        # the variable's bytes
//! ```
//!
//! A pipeline names a key; its bytes never appear in the pipeline, in `validate` or `graph`
//! output, in logs, checkpoints or error messages ([`Secret`]'s `Debug` shows the name only).
//! Expressions take the key by name as a string literal: `hmac_sha256(card, "card_key")`,
//! `encrypt(card, "card_key")`, `decrypt(field, "card_key")`.
//!
//! `encrypt` is AES-256-GCM with a key of SHA-256 of the secret's bytes and a random 96-bit
//! nonce per value; its result is the standard base64 (padded) of nonce ‖ ciphertext ‖ tag, so
//! two encryptions of one value differ, and `decrypt` refuses a value that was changed or made
//! with another key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hmac::Mac;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, Node, NodeKind};

/// One named secret.
pub struct Secret {
    name: String,
    bytes: Vec<u8>,
    cipher: Aes256Gcm,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?}, {} bytes)", self.name, self.bytes.len())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Not a guarantee (copies may exist), but the bytes do not outlive the job here.
        self.bytes.iter_mut().for_each(|b| *b = 0);
    }
}

impl Secret {
    pub fn new(name: &str, bytes: Vec<u8>) -> Secret {
        let key = Sha256::digest(&bytes);
        Secret { name: name.into(), cipher: Aes256Gcm::new(&key), bytes }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `text` contains this secret's bytes (for checks that nothing leaked).
    pub fn appears_in(&self, text: &[u8]) -> bool {
        !self.bytes.is_empty() && text.windows(self.bytes.len()).any(|w| w == self.bytes.as_slice())
    }

    /// HMAC-SHA-256 of `data` with the secret's bytes as the key, in lowercase hex.
    pub fn hmac_sha256(&self, data: &[u8]) -> String {
        let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(&self.bytes).expect("HMAC takes any key length");
        mac.update(data);
        hex(&mac.finalize().into_bytes())
    }

    /// AES-256-GCM, base64 of nonce ‖ ciphertext ‖ tag.
    pub fn encrypt(&self, plain: &[u8]) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self.cipher.encrypt(&nonce, plain).expect("AES-GCM encrypts any length a record holds");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// The inverse of [`encrypt`](Self::encrypt); an error for anything it did not make with
    /// this key.
    pub fn decrypt(&self, text: &str) -> Result<Vec<u8>, String> {
        let raw = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|e| format!("not base64 ({e})"))?;
        if raw.len() < 12 + 16 {
            return Err(format!("{} bytes is too short for an encrypted value (nonce and tag alone are 28)", raw.len()));
        }
        let (nonce, sealed) = raw.split_at(12);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| format!("does not decrypt with key `{}` (another key, or the value was changed)", self.name))
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// SHA-256 of `data` in lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The pipeline's named secrets.
#[derive(Clone, Default, Debug)]
pub struct Keys(BTreeMap<String, Arc<Secret>>);

impl Keys {
    pub fn get(&self, name: &str) -> Option<&Arc<Secret>> {
        self.0.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Secret>> {
        self.0.values()
    }

    /// Adds a key (tests, the extension API).
    pub fn insert(&mut self, secret: Secret) {
        self.0.insert(secret.name.clone(), Arc::new(secret));
    }

    /// Reads `keys:` (a map of `NAME: {env: VAR}` or `NAME: {file: PATH}`); every problem is
    /// reported, at its place.
    /// Reads the keys of `keys:`; a relative `file` is taken from `folder` (the pipeline's).
    pub(crate) fn load(node: &Node, folder: &Path, errors: &mut Vec<ConfigError>) -> Keys {
        let mut keys = Keys::default();
        let hint = "write `NAME: {env: VARIABLE}` or `NAME: {file: PATH}`";
        let NodeKind::Map(entries) = &node.kind else {
            errors.push(ConfigError::new(Some(&node.span), "`keys` must be a map of named secrets").hint(hint));
            return keys;
        };
        for (name, spec) in entries {
            let name = name.as_str().unwrap_or_default();
            let (env, file) = (spec.get("env"), spec.get("file"));
            let unknown = match &spec.kind {
                NodeKind::Map(fields) => fields.iter().map(|(k, _)| k).find(|k| !matches!(k.as_str(), Some("env" | "file"))),
                _ => None,
            };
            let read = match (env, file, unknown) {
                (_, _, Some(k)) => Err(ConfigError::new(Some(&k.span), format!("key `{name}`: unknown option `{}`", k.as_str().unwrap_or("?"))).hint(hint)),
                (Some(e), None, None) => match e.as_str() {
                    Some(var) => match std::env::var_os(var) {
                        Some(v) if !v.is_empty() => Ok(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec()),
                        _ => Err(ConfigError::new(Some(&e.span), format!("key `{name}`: the environment variable `{var}` is not set (or empty)"))
                            .hint(format!("set it before running, e.g. `export {var}=...`; its value is the key"))),
                    },
                    None => Err(ConfigError::new(Some(&e.span), format!("key `{name}`: `env` names a variable")).hint(hint)),
                },
                (None, Some(f), None) => match f.as_str() {
                    Some(path) => match std::fs::read(folder.join(path)) {
                        Ok(b) if !b.is_empty() => Ok(b),
                        Ok(_) => Err(ConfigError::new(Some(&f.span), format!("key `{name}`: the file {path} is empty"))),
                        Err(e) => Err(ConfigError::new(Some(&f.span), format!("key `{name}`: cannot read {path}: {e}")).hint("the file's bytes, exactly as read, are the key")),
                    },
                    None => Err(ConfigError::new(Some(&f.span), format!("key `{name}`: `file` is a path")).hint(hint)),
                },
                _ => Err(ConfigError::new(Some(&spec.span), format!("key `{name}` needs one of `env` or `file`")).hint(hint)),
            };
            match read {
                Ok(bytes) => keys.insert(Secret::new(name, bytes)),
                Err(e) => errors.push(e),
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_sha256_match_published_vectors() {
        // RFC 4231, test case 2.
        let k = Secret::new("k", b"Jefe".to_vec());
        assert_eq!(k.hmac_sha256(b"what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // FIPS 180-2, "abc".
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn encrypted_values_decrypt_with_their_key_only_and_never_repeat() {
        let (k, other) = (Secret::new("k", b"one key".to_vec()), Secret::new("o", b"another".to_vec()));
        let (a, b) = (k.encrypt(b"4111 1111 1111 1111"), k.encrypt(b"4111 1111 1111 1111"));
        assert_ne!(a, b, "a fresh nonce each time");
        assert_eq!(k.decrypt(&a).unwrap(), b"4111 1111 1111 1111");
        assert!(other.decrypt(&a).unwrap_err().contains("does not decrypt with key `o`"));
        let mut raw = base64::engine::general_purpose::STANDARD.decode(&a).unwrap();
        raw[14] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(raw);
        assert!(k.decrypt(&tampered).is_err(), "a changed byte is refused");
        assert!(k.decrypt("abc").is_err());
    }

    #[test]
    fn a_secret_shows_its_name_only() {
        let k = Secret::new("card_key", b"s3cr3t-bytes".to_vec());
        let shown = format!("{k:?} {:?}", Keys(BTreeMap::from([("card_key".to_string(), Arc::new(Secret::new("card_key", b"s3cr3t-bytes".to_vec())))])));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("card_key"));
        assert!(k.appears_in(b"xx s3cr3t-bytes yy") && !k.appears_in(b"s3cr3t"));
    }
}
