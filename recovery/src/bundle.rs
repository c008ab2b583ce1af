//! Signed update bundles (format: `recovery/BUNDLE.md`): a fixed header, a
//! JSON manifest, an ed25519 signature over both, then the images.
//!
//! Invariants: [`Bundle::open`] returns only after the signature has been
//! checked against the keyring and the manifest parsed and validated, so no
//! payload byte is ever handed out from an unverified bundle; each image's
//! bytes are hashed as they are read, and [`ImageReader::finish`] is the only
//! way to learn an image was whole and matched its SHA-256.

use std::fmt;
use std::io::{self, Read, Write};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

/// First bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"INTRBNDL";

/// The one format version this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;

/// Header length: magic, format version, flags, manifest length, signer key.
pub const HEADER_LEN: usize = 48;

/// Largest manifest accepted (and written).
pub const MAX_MANIFEST_LEN: u32 = 64 * 1024;

/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Length of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// An ed25519 public key trusted to sign bundles.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = hex_decode(text.trim()).ok_or(KeyError::PublicHex)?;
        let key: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::PublicHex)?;
        Ok(PublicKey(key))
    }

    /// Reads a public key file: 32 raw bytes or 64 hex digits.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        if let Ok(raw) = <[u8; PUBLIC_KEY_LEN]>::try_from(bytes) {
            return Ok(PublicKey(raw));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| KeyError::PublicHex)?;
        PublicKey::from_hex(text)
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A key that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not 64 hex digits (or 32 raw bytes, for a file).
    #[error("public key must be 64 hex digits or 32 raw bytes")]
    PublicHex,
    /// The private key is not an ed25519 PKCS#8 document.
    #[error("private key is not an ed25519 PKCS#8 (DER) document: {0}")]
    Pkcs8(String),
    /// Key generation failed.
    #[error("cannot generate an ed25519 key")]
    Generate,
}

/// A signing key (ed25519, from PKCS#8 DER).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Parses a PKCS#8 v1 or v2 DER document.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| KeyError::Pkcs8(e.to_string()))?;
        Ok(SigningKey { pair })
    }

    /// Generates a fresh key; returns its PKCS#8 v2 DER document.
    pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        Ok(doc.as_ref().to_vec())
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let mut key = [0u8; PUBLIC_KEY_LEN];
        key.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(key)
    }
}

/// Which part of a slot an image is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The root file system.
    Rootfs,
    /// The kernel (and device tree) partition.
    Kernel,
}

impl Part {
    /// `"rootfs"` or `"kernel"`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Rootfs => "rootfs",
            Part::Kernel => "kernel",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One image in the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// Where it goes.
    pub part: Part,
    /// Its length in bytes.
    pub size: u64,
    /// SHA-256 of its bytes, 64 lower-case hex digits.
    pub sha256: String,
}

/// What a bundle holds, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The software version inside (free text, shown to people).
    pub version: String,
    /// The board this bundle is for (the recovery config's `board`).
    pub compatible: String,
    /// The images, in payload order.
    pub images: Vec<ImageEntry>,
}

impl Manifest {
    /// Total payload length in bytes.
    pub fn payload_len(&self) -> u64 {
        self.images
            .iter()
            .map(|i| i.size)
            .fold(0, u64::saturating_add)
    }

    /// Checks what the types cannot: at least one image, no part twice,
    /// well-formed hashes, short printable strings.
    pub fn validate(&self) -> Result<(), BundleError> {
        let bad = |why: String| Err(BundleError::BadManifest(why));
        if self.version.is_empty() || self.version.len() > 128 || !printable(&self.version) {
            return bad("version must be 1 to 128 printable characters".into());
        }
        if self.compatible.is_empty() || self.compatible.len() > 128 || !printable(&self.compatible)
        {
            return bad("compatible must be 1 to 128 printable characters".into());
        }
        if self.images.is_empty() {
            return bad("no images".into());
        }
        for (i, image) in self.images.iter().enumerate() {
            if self.images[..i].iter().any(|o| o.part == image.part) {
                return bad(format!("image {} appears twice", image.part));
            }
            if image.sha256.len() != 64
                || !image
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return bad(format!(
                    "sha256 of image {} is not 64 lower-case hex digits",
                    image.part
                ));
            }
        }
        if self
            .images
            .iter()
            .try_fold(0u64, |acc, i| acc.checked_add(i.size))
            .is_none()
        {
            return bad("image sizes overflow".into());
        }
        Ok(())
    }
}

fn printable(s: &str) -> bool {
    s.chars().all(|c| !c.is_control())
}

/// Why a bundle was rejected.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading the bundle failed.
    #[error("reading the bundle: {0}")]
    Io(#[source] io::Error),
    /// The bundle ended early.
    #[error("bundle is truncated: it ended inside the {0}")]
    Truncated(&'static str),
    /// The first bytes are not the bundle magic.
    #[error("not an intrust bundle (bad magic)")]
    BadMagic,
    /// A format version this code does not read.
    #[error(
        "unsupported bundle format version {0} (this recovery reads version {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u16),
    /// Reserved flag bits set.
    #[error("bundle header has unknown flags {0:#06x}")]
    UnknownFlags(u16),
    /// Manifest length outside 1..=MAX_MANIFEST_LEN.
    #[error("manifest length {0} is outside 1..={MAX_MANIFEST_LEN}")]
    ManifestLength(u32),
    /// The signer's key is not in the keyring.
    #[error("bundle is signed by unknown key {0}; trusted keys are listed in the recovery config")]
    UnknownKey(PublicKey),
    /// The signature does not verify with the signer's key.
    #[error("bad signature: header and manifest were not signed by key {0} (bundle modified or corrupt)")]
    BadSignature(PublicKey),
    /// The signed manifest is not valid JSON of the expected shape.
    #[error("manifest is malformed: {0}")]
    BadManifest(String),
    /// More bytes after the last image.
    #[error("bundle has data after the last image")]
    TrailingData,
    /// An image's bytes do not hash to the manifest's SHA-256.
    #[error("image {part}: SHA-256 mismatch (manifest {expected}, payload {actual})")]
    HashMismatch {
        /// The image.
        part: Part,
        /// From the manifest.
        expected: String,
        /// Of the bytes read.
        actual: String,
    },
    /// [`ImageReader::finish`] before all of the image was read.
    #[error("image {part} finished after {read} of {size} bytes")]
    ImageNotRead {
        /// The image.
        part: Part,
        /// Bytes read.
        read: u64,
        /// Its size.
        size: u64,
    },
}

/// A verified bundle positioned at the start of its payload.
#[derive(Debug)]
pub struct Bundle<R> {
    manifest: Manifest,
    signer: PublicKey,
    input: R,
    next_image: usize,
}

impl<R: Read> Bundle<R> {
    /// Reads and checks the header, manifest and signature; reads nothing
    /// past the signature. The signer must be in `keyring`.
    pub fn open(mut input: R, keyring: &[PublicKey]) -> Result<Bundle<R>, BundleError> {
        let mut header = [0u8; HEADER_LEN];
        read_full(&mut input, &mut header, "header")?;
        if header[0..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = u16::from_be_bytes([header[8], header[9]]);
        if version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedVersion(version));
        }
        let flags = u16::from_be_bytes([header[10], header[11]]);
        if flags != 0 {
            return Err(BundleError::UnknownFlags(flags));
        }
        let manifest_len = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
        if manifest_len == 0 || manifest_len > MAX_MANIFEST_LEN {
            return Err(BundleError::ManifestLength(manifest_len));
        }
        let mut signer = [0u8; PUBLIC_KEY_LEN];
        signer.copy_from_slice(&header[16..48]);
        let signer = PublicKey(signer);
        if !keyring.contains(&signer) {
            return Err(BundleError::UnknownKey(signer));
        }
        // Bounded by MAX_MANIFEST_LEN above.
        let mut signed = header.to_vec();
        signed.resize(HEADER_LEN + manifest_len as usize, 0);
        read_full(&mut input, &mut signed[HEADER_LEN..], "manifest")?;
        let mut signature = [0u8; SIGNATURE_LEN];
        read_full(&mut input, &mut signature, "signature")?;
        UnparsedPublicKey::new(&ED25519, &signer.0)
            .verify(&signed, &signature)
            .map_err(|_| BundleError::BadSignature(signer))?;
        // Signed, so written by a trusted key; still parsed strictly.
        let manifest: Manifest = serde_json::from_slice(&signed[HEADER_LEN..])
            .map_err(|e| BundleError::BadManifest(e.to_string()))?;
        manifest.validate()?;
        Ok(Bundle {
            manifest,
            signer,
            input,
            next_image: 0,
        })
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The key that signed it.
    pub fn signer(&self) -> PublicKey {
        self.signer
    }

    /// The next image in payload order, or `None` after the last. Each
    /// reader must be read to its end and finished before the next.
    pub fn next_image(&mut self) -> Option<ImageReader<'_, R>> {
        let entry = self.manifest.images.get(self.next_image)?.clone();
        self.next_image += 1;
        Some(ImageReader {
            input: &mut self.input,
            entry,
            read: 0,
            hash: digest::Context::new(&digest::SHA256),
        })
    }

    /// Checks that every image was handed out and nothing follows the last.
    pub fn finish(mut self) -> Result<(), BundleError> {
        if self.next_image < self.manifest.images.len() {
            let entry = &self.manifest.images[self.next_image];
            return Err(BundleError::ImageNotRead {
                part: entry.part,
                read: 0,
                size: entry.size,
            });
        }
        let mut byte = [0u8; 1];
        loop {
            match self.input.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(BundleError::TrailingData),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BundleError::Io(e)),
            }
        }
    }
}

/// The bytes of one image, hashed as they are read.
pub struct ImageReader<'a, R> {
    input: &'a mut R,
    entry: ImageEntry,
    read: u64,
    hash: digest::Context,
}

impl<R: Read> ImageReader<'_, R> {
    /// The manifest entry.
    pub fn entry(&self) -> &ImageEntry {
        &self.entry
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.entry.size - self.read
    }

    /// Reads the next chunk (at most `buf.len()` bytes, filled fully unless
    /// the image ends); an empty slice means the image is done. The bytes
    /// are hashed before they are returned.
    pub fn read_chunk<'b>(&mut self, buf: &'b mut [u8]) -> Result<&'b [u8], BundleError> {
        let want = usize::try_from(self.remaining())
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = &mut buf[..want];
        read_full(self.input, chunk, "payload")?;
        self.hash.update(chunk);
        self.read += want as u64;
        Ok(chunk)
    }

    /// Checks that all bytes were read and their SHA-256 matches.
    pub fn finish(self) -> Result<ImageEntry, BundleError> {
        if self.read != self.entry.size {
            return Err(BundleError::ImageNotRead {
                part: self.entry.part,
                read: self.read,
                size: self.entry.size,
            });
        }
        let actual = hex_encode(self.hash.finish().as_ref());
        if actual != self.entry.sha256 {
            return Err(BundleError::HashMismatch {
                part: self.entry.part,
                expected: self.entry.sha256.clone(),
                actual,
            });
        }
        Ok(self.entry)
    }
}

fn read_full(input: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), BundleError> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => return Err(BundleError::Truncated(what)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BundleError::Io(e)),
        }
    }
    Ok(())
}

/// An image to put into a new bundle: its part and a source read twice
/// (once to hash, once to copy).
pub struct ImageSource<'a> {
    /// Where it goes.
    pub part: Part,
    /// Opens the image's bytes from the start (called twice).
    pub open: Box<dyn FnMut() -> io::Result<Box<dyn Read>> + 'a>,
}

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Reading an image or writing the bundle failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// An image changed between hashing and copying.
    #[error("image {0} changed while the bundle was being written")]
    ImageChanged(Part),
    /// The manifest would be invalid.
    #[error(transparent)]
    Manifest(#[from] BundleError),
}

/// Writes a bundle of `images` to `out`, signed with `key`. Each image is
/// read twice: hashed first (the manifest precedes the payload), then
/// copied and hashed again, and a change in between is an error.
pub fn create(
    key: &SigningKey,
    version: &str,
    compatible: &str,
    images: &mut [ImageSource<'_>],
    out: &mut impl Write,
) -> Result<Manifest, CreateError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut entries = Vec::new();
    for image in images.iter_mut() {
        let (size, sha256) = hash_source(image, &mut buf, &mut |_| Ok(()))?;
        entries.push(ImageEntry {
            part: image.part,
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        version: version.to_owned(),
        compatible: compatible.to_owned(),
        images: entries,
    };
    manifest.validate()?;
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BundleError::BadManifest(e.to_string()))?;
    let manifest_len = u32::try_from(json.len())
        .ok()
        .filter(|n| *n <= MAX_MANIFEST_LEN)
        .ok_or(BundleError::ManifestLength(u32::MAX))?;
    let mut signed = Vec::with_capacity(HEADER_LEN + json.len());
    signed.extend_from_slice(&MAGIC);
    signed.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    signed.extend_from_slice(&0u16.to_be_bytes());
    signed.extend_from_slice(&manifest_len.to_be_bytes());
    signed.extend_from_slice(&key.public_key().0);
    signed.extend_from_slice(&json);
    let signature = key.pair.sign(&signed);
    let write_err = |source| CreateError::Io {
        what: "writing the bundle".into(),
        source,
    };
    out.write_all(&signed).map_err(write_err)?;
    out.write_all(signature.as_ref()).map_err(write_err)?;
    for (image, entry) in images.iter_mut().zip(&manifest.images) {
        let (size, sha256) = hash_source(image, &mut buf, &mut |chunk| out.write_all(chunk))?;
        if size != entry.size || sha256 != entry.sha256 {
            return Err(CreateError::ImageChanged(image.part));
        }
    }
    out.flush().map_err(write_err)?;
    Ok(manifest)
}

fn hash_source(
    image: &mut ImageSource<'_>,
    buf: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<(u64, String), CreateError> {
    let part = image.part;
    let io_err = |source| CreateError::Io {
        what: format!("reading image {part}"),
        source,
    };
    let mut input = (image.open)().map_err(io_err)?;
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut size = 0u64;
    loop {
        let n = match input.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        hash.update(&buf[..n]);
        sink(&buf[..n]).map_err(|source| CreateError::Io {
            what: "writing the bundle".into(),
            source,
        })?;
        size += n as u64;
    }
    Ok((size, hex_encode(hash.finish().as_ref())))
}

/// SHA-256 of `data` as lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex_encode(digest::digest(&digest::SHA256, data).as_ref())
}

pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    text.as_bytes()
        .chunks(2)
        .map(|p| Some((digit(p[0])? << 4 | digit(p[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap()
    }

    fn source(part: Part, data: Vec<u8>) -> ImageSource<'static> {
        ImageSource {
            part,
            open: Box::new(move || Ok(Box::new(io::Cursor::new(data.clone())) as Box<dyn Read>)),
        }
    }

    fn make(key: &SigningKey, rootfs: &[u8], kernel: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        create(
            key,
            "1.0",
            "sim",
            &mut [
                source(Part::Rootfs, rootfs.to_vec()),
                source(Part::Kernel, kernel.to_vec()),
            ],
            &mut out,
        )
        .unwrap();
        out
    }

    fn read_all(bytes: &[u8], keyring: &[PublicKey]) -> Result<Vec<Vec<u8>>, BundleError> {
        let mut bundle = Bundle::open(bytes, keyring)?;
        let mut images = Vec::new();
        let mut buf = [0u8; 3];
        while let Some(mut r) = bundle.next_image() {
            let mut data = Vec::new();
            loop {
                let chunk = r.read_chunk(&mut buf)?;
                if chunk.is_empty() {
                    break;
                }
                data.extend_from_slice(chunk);
            }
            r.finish()?;
            images.push(data);
        }
        bundle.finish()?;
        Ok(images)
    }

    #[test]
    fn round_trip() {
        let k = key();
        let bytes = make(&k, b"root file system", b"kern");
        assert_eq!(&bytes[..8], b"INTRBNDL");
        let images = read_all(&bytes, &[k.public_key()]).unwrap();
        assert_eq!(images, vec![b"root file system".to_vec(), b"kern".to_vec()]);
        let b = Bundle::open(&bytes[..], &[k.public_key()]).unwrap();
        assert_eq!(b.manifest().compatible, "sim");
        assert_eq!(
            b.manifest().images[0].sha256,
            sha256_hex(b"root file system")
        );
        assert_eq!(b.manifest().payload_len(), 20);
    }

    #[test]
    fn rejects_unknown_key_bad_signature_and_trailing_data() {
        let k = key();
        let bytes = make(&k, b"abc", b"de");
        let other = key().public_key();
        assert!(matches!(
            Bundle::open(&bytes[..], &[other]),
            Err(BundleError::UnknownKey(_))
        ));
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 5] ^= 1;
        assert!(matches!(
            Bundle::open(&flipped[..], &[k.public_key()]),
            Err(BundleError::BadSignature(_))
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            read_all(&long, &[k.public_key()]),
            Err(BundleError::TrailingData)
        ));
        let last = bytes.len() - 1;
        let mut payload = bytes.clone();
        payload[last] ^= 0x80;
        assert!(matches!(
            read_all(&payload, &[k.public_key()]),
            Err(BundleError::HashMismatch {
                part: Part::Kernel,
                ..
            })
        ));
        assert!(matches!(
            read_all(&bytes[..last], &[k.public_key()]),
            Err(BundleError::Truncated("payload"))
        ));
    }

    #[test]
    fn header_checks_come_first() {
        let k = key();
        let bytes = make(&k, b"abc", b"de");
        let ring = [k.public_key()];
        let mut b = bytes.clone();
        b[0] = b'X';
        assert!(matches!(
            Bundle::open(&b[..], &ring),
            Err(BundleError::BadMagic)
        ));
        let mut b = bytes.clone();
        b[9] = 2;
        assert!(matches!(
            Bundle::open(&b[..], &ring),
            Err(BundleError::UnsupportedVersion(2))
        ));
        let mut b = bytes.clone();
        b[12] = 0xff;
        assert!(matches!(
            Bundle::open(&b[..], &ring),
            Err(BundleError::ManifestLength(_))
        ));
        assert!(matches!(
            Bundle::open(&bytes[..10], &ring),
            Err(BundleError::Truncated("header"))
        ));
    }

    #[test]
    fn manifest_validation() {
        let m = |images: Vec<ImageEntry>| Manifest {
            version: "1".into(),
            compatible: "sim".into(),
            images,
        };
        let e = |part, sha: &str| ImageEntry {
            part,
            size: 1,
            sha256: sha.into(),
        };
        let good = sha256_hex(b"x");
        assert!(m(vec![e(Part::Rootfs, &good)]).validate().is_ok());
        assert!(m(vec![]).validate().is_err());
        assert!(m(vec![e(Part::Rootfs, &good), e(Part::Rootfs, &good)])
            .validate()
            .is_err());
        assert!(m(vec![e(Part::Rootfs, &good.to_uppercase())])
            .validate()
            .is_err());
        let json = r#"{"version":"1","compatible":"x","images":[],"extra":1}"#;
        assert!(serde_json::from_str::<Manifest>(json).is_err());
    }

    #[test]
    fn public_key_forms() {
        let k = key().public_key();
        assert_eq!(PublicKey::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(PublicKey::from_file_bytes(&k.0).unwrap(), k);
        let text = format!("{}\n", k.to_hex());
        assert_eq!(PublicKey::from_file_bytes(text.as_bytes()).unwrap(), k);
        assert!(PublicKey::from_hex("abc").is_err());
        assert!(PublicKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(SigningKey::from_pkcs8(b"not a key").is_err());
    }
}
