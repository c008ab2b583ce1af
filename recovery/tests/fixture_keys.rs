//! The committed test key pair: the public key file matches the private key,
//! and the pair signs bundles that verify. Regenerate with
//! `cargo test -p intrust-recovery --test fixture_keys -- --ignored`.

use std::path::PathBuf;

use intrust_recovery::bundle::{PublicKey, SigningKey};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn fixture_public_key_matches_private_key() {
    let der = std::fs::read(fixtures().join("test-key.pk8")).unwrap();
    let key = SigningKey::from_pkcs8(&der).unwrap();
    let public = std::fs::read(fixtures().join("test-key.pub")).unwrap();
    assert_eq!(
        PublicKey::from_file_bytes(&public).unwrap(),
        key.public_key()
    );
}

#[test]
#[ignore = "writes new fixture keys; run by hand only"]
fn generate_fixture_keys() {
    let der = SigningKey::generate_pkcs8().unwrap();
    let key = SigningKey::from_pkcs8(&der).unwrap();
    std::fs::write(fixtures().join("test-key.pk8"), &der).unwrap();
    std::fs::write(
        fixtures().join("test-key.pub"),
        format!("{}\n", key.public_key().to_hex()),
    )
    .unwrap();
}
