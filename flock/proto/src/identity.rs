//! The device's proof of its name: an ECDSA P-256 signature over
//! [`challenge_message`]. Invariant: the signed bytes bind the protocol
//! (context string), flock's fresh nonce and the claimed name, so a
//! signature can neither be replayed on another connection nor moved to
//! another name.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};

use crate::DeviceName;

/// Prefix of every signed challenge.
pub const CHALLENGE_CONTEXT: &[u8] = b"intrust-flock-device-v1\0";
/// Length of a SEC1 uncompressed P-256 public key.
pub const PUBLIC_KEY_LEN: usize = 65;

/// `CHALLENGE_CONTEXT || nonce || name`.
pub fn challenge_message(nonce: &[u8; 32], name: &DeviceName) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHALLENGE_CONTEXT.len() + 32 + name.as_str().len());
    m.extend_from_slice(CHALLENGE_CONTEXT);
    m.extend_from_slice(nonce);
    m.extend_from_slice(name.as_str().as_bytes());
    m
}

/// Why a key could not be made or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("public key must be a {PUBLIC_KEY_LEN}-byte SEC1 uncompressed P-256 point")]
    PublicKeyShape,
    #[error("signature does not verify for this key, nonce and name")]
    BadSignature,
    #[error("not a P-256 PKCS#8 private key")]
    BadPrivateKey,
    #[error("the crypto library failed to generate or sign")]
    Crypto,
}

/// A device's P-256 signing key.
pub struct DeviceKey(EcdsaKeyPair);

impl DeviceKey {
    /// A fresh random key (tests, first start).
    pub fn generate() -> Result<Self, IdentityError> {
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
            .map(Self)
            .map_err(|_| IdentityError::Crypto)
    }

    /// Loads a PKCS#8 (DER) P-256 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, IdentityError> {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der)
            .map(Self)
            .map_err(|_| IdentityError::BadPrivateKey)
    }

    /// The PKCS#8 (DER) form, for storing the key.
    pub fn to_pkcs8(&self) -> Result<Vec<u8>, IdentityError> {
        self.0
            .to_pkcs8v1()
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| IdentityError::Crypto)
    }

    /// SEC1 uncompressed public key (65 bytes), as sent in `Hello`.
    pub fn public_key(&self) -> Vec<u8> {
        self.0.public_key().as_ref().to_vec()
    }

    /// Signs the challenge for `name` (ASN.1 DER signature).
    pub fn sign_challenge(
        &self,
        nonce: &[u8; 32],
        name: &DeviceName,
    ) -> Result<Vec<u8>, IdentityError> {
        self.0
            .sign(&SystemRandom::new(), &challenge_message(nonce, name))
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| IdentityError::Crypto)
    }
}

/// Checks a `Hello`'s signature.
pub fn verify_challenge(
    public_key: &[u8],
    nonce: &[u8; 32],
    name: &DeviceName,
    signature: &[u8],
) -> Result<(), IdentityError> {
    if public_key.len() != PUBLIC_KEY_LEN || public_key[0] != 0x04 {
        return Err(IdentityError::PublicKeyShape);
    }
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key)
        .verify(&challenge_message(nonce, name), signature)
        .map_err(|_| IdentityError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = DeviceKey::generate().unwrap();
        let name = DeviceName::new("box-1").unwrap();
        let nonce = [7u8; 32];
        let sig = key.sign_challenge(&nonce, &name).unwrap();
        let pk = key.public_key();
        assert_eq!(pk.len(), PUBLIC_KEY_LEN);
        verify_challenge(&pk, &nonce, &name, &sig).unwrap();
        // Another nonce, another name, another key: refused.
        assert_eq!(
            verify_challenge(&pk, &[8u8; 32], &name, &sig),
            Err(IdentityError::BadSignature)
        );
        let other = DeviceName::new("box-2").unwrap();
        assert_eq!(
            verify_challenge(&pk, &nonce, &other, &sig),
            Err(IdentityError::BadSignature)
        );
        let key2 = DeviceKey::generate().unwrap();
        assert_eq!(
            verify_challenge(&key2.public_key(), &nonce, &name, &sig),
            Err(IdentityError::BadSignature)
        );
        // Garbage keys and signatures.
        assert_eq!(
            verify_challenge(&pk[..64], &nonce, &name, &sig),
            Err(IdentityError::PublicKeyShape)
        );
        assert_eq!(
            verify_challenge(&[4u8; 65], &nonce, &name, &sig),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            verify_challenge(&pk, &nonce, &name, b"junk"),
            Err(IdentityError::BadSignature)
        );
    }

    #[test]
    fn pkcs8_round_trip() {
        let key = DeviceKey::generate().unwrap();
        let again = DeviceKey::from_pkcs8(&key.to_pkcs8().unwrap()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        assert!(DeviceKey::from_pkcs8(b"nope").is_err());
    }

    #[test]
    fn message_layout() {
        let m = challenge_message(&[1; 32], &DeviceName::new("abc").unwrap());
        assert_eq!(&m[..24], b"intrust-flock-device-v1\0");
        assert_eq!(&m[24..56], &[1; 32]);
        assert_eq!(&m[56..], b"abc");
    }
}
