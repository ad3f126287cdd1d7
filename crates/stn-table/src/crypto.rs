//! Encrypted image tables: Parquet modular encryption (PME) as pyarrow and Spark write it.
//!
//! Keys come from a key management service through [`Kms`] (a user implements it for their
//! KMS); [`LocalKms`] is the built-in one: a JSON object of master-key ID to base64 key, from
//! a file (`--keys FILE`) or the `STN_KEYS` environment variable, whose wrapped data keys are
//! unwrapped with AES-GCM as parquet-java's in-memory KMS does (the one Spark's documentation
//! uses), or as pyarrow's test client does ([`Wrapping::PyarrowTest`], base64 concatenation,
//! not a cipher: for tests and trials only).
//!
//! Reading: the data keys of a file are unwrapped from the key material it holds (`PKMT1`,
//! single or double wrapping, "internal storage"), footer and columns alike, so any layout
//! pyarrow writes opens: encrypted or plaintext footer, per-column or uniform keys, 128- or
//! 256-bit AES-GCM. What arrow-rs cannot read (AES_GCM_CTR_V1, 192-bit keys) is an error
//! naming it.
//!
//! Writing: an output is **never less protected than its inputs**. When an input is encrypted
//! (or `--encrypt ID` asks for it), every output file gets an encrypted footer and every column
//! encrypted with a fresh 256-bit data key, wrapped by the KMS under the master key (the
//! input's footer master key unless `--encrypt` names one), no bloom filters; the file is
//! reopened after writing and the write fails, leaving nothing, if it is not so protected.
//!
//! Key material is held in [`Secret`]s: their `Debug` says only the length and they are zeroed
//! when dropped. No error message, log line or `Debug` output of this module holds key bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// The environment variable holding the local KMS's keys (the JSON itself, or the path of a
/// file holding it) when no `--keys` file is given.
pub const KEYS_ENV: &str = "STN_KEYS";

/// Bytes of the data key of every encrypted output (AES-256).
pub const OUTPUT_KEY_BYTES: usize = 32;

/// Key bytes: `Debug` shows only the length, and the bytes are zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes `bytes` as a secret.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    /// The key bytes (keep them out of anything printed).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Bytes in the key.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(redacted, {} bytes)", self.0.len())
    }
}

/// An error of keys or encryption; its message never holds key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// A key management service: wraps and unwraps data keys with master keys it holds (the
/// interface of pyarrow's and parquet-java's `KmsClient`). Implement it for your KMS.
pub trait Kms: Send + Sync {
    /// `key` wrapped with the master key `master_key_id`, as the text stored in a file.
    fn wrap_key(&self, key: &Secret, master_key_id: &str) -> Result<String, KeyError>;
    /// The key `wrapped` holds, unwrapped with the master key `master_key_id`.
    fn unwrap_key(&self, wrapped: &str, master_key_id: &str) -> Result<Secret, KeyError>;
    /// What the KMS is, in words, for messages (never keys).
    fn describe(&self) -> String;
}

/// How [`LocalKms`] wraps data keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wrapping {
    /// AES-GCM with the master key, the master-key ID as associated data, stored as
    /// base64(nonce ‖ ciphertext ‖ tag): parquet-java's `InMemoryKMS` (Spark's documented
    /// example), the C++ test KMS and parquet-key-management's.
    #[default]
    AesGcm,
    /// pyarrow's test client: base64(master key ‖ key). Not a cipher: anyone with the file
    /// and the master key's length reads the data key. For tests and trials only.
    PyarrowTest,
}

impl std::str::FromStr for Wrapping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "aes-gcm" => Ok(Wrapping::AesGcm),
            "pyarrow-test" => Ok(Wrapping::PyarrowTest),
            _ => Err(format!("unknown key wrapping `{s}` (aes-gcm or pyarrow-test)")),
        }
    }
}

/// The command-line flags of the keys of encrypted tables (the built-in local KMS), the same in
/// `stn` and in `stn-executor`.
#[cfg(feature = "cli")]
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct KeyArgs {
    /// Keys of encrypted tables: a JSON file of master-key ID to base64 key (16 or 32 bytes).
    /// Default: the STN_KEYS environment variable, holding that JSON itself or the path of
    /// such a file.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<std::path::PathBuf>,
    /// How the files' data keys are wrapped by the master keys: aes-gcm (parquet-java's
    /// in-memory KMS, as in Spark's documentation) or pyarrow-test (pyarrow's test KMS, not a
    /// cipher: for trials only).
    #[arg(long, value_name = "SCHEME", default_value = "aes-gcm")]
    pub key_wrapping: Wrapping,
}

#[cfg(feature = "cli")]
impl KeyArgs {
    /// The keys given (--keys, else STN_KEYS), or None; `encrypt` is the master key that
    /// outputs of plaintext inputs are encrypted with (`--encrypt`). With pyarrow-test
    /// wrapping, says on stderr that it is not a cipher.
    pub fn keys(&self, encrypt: Option<&str>) -> Result<Option<Keys>, KeyError> {
        let kms = LocalKms::from_file_or_env(self.keys.as_deref(), self.key_wrapping)?;
        if kms.is_some() && self.key_wrapping == Wrapping::PyarrowTest {
            eprintln!(
                "warning: --key-wrapping pyarrow-test is not a cipher: anyone with an output file and the \
                 length of its master key reads its data key; use it for trials only"
            );
        }
        match (kms, encrypt) {
            (Some(kms), e) => Ok(Some(Keys::new(Arc::new(kms)).encrypting(e.map(str::to_string)))),
            (None, Some(_)) => Err(KeyError(
                "--encrypt needs the master keys: --keys FILE or the STN_KEYS environment variable".into(),
            )),
            (None, None) => Ok(None),
        }
    }
}

/// The built-in KMS: master keys held locally (see the module's documentation).
pub struct LocalKms {
    keys: BTreeMap<String, Secret>,
    wrapping: Wrapping,
    from: String,
}

impl std::fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKms")
            .field("master_keys", &self.keys.keys().collect::<Vec<_>>())
            .field("wrapping", &self.wrapping)
            .field("from", &self.from)
            .finish()
    }
}

impl LocalKms {
    /// The keys of a JSON object of master-key ID to base64 key (16 or 32 bytes); `from` says
    /// where the text came from, for messages. A message never quotes the text.
    pub fn from_json(text: &str, wrapping: Wrapping, from: &str) -> Result<LocalKms, KeyError> {
        let bad = |m: String| KeyError(format!("{from}: {m}"));
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            bad(format!(
                "not a JSON object of master-key ID to base64 key (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let object = value
            .as_object()
            .ok_or_else(|| bad("not a JSON object of master-key ID to base64 key".into()))?;
        if object.is_empty() {
            return Err(bad("holds no keys".into()));
        }
        let mut keys = BTreeMap::new();
        for (id, v) in object {
            let text = v.as_str().ok_or_else(|| bad(format!("the key `{id}` is not a base64 string")))?;
            let key = Secret::new(
                B64.decode(text.trim()).map_err(|_| bad(format!("the key `{id}` is not valid base64")))?,
            );
            if key.len() != 16 && key.len() != 32 {
                return Err(bad(format!(
                    "the key `{id}` has {} bytes; a master key has 16 or 32 (AES-128 or AES-256)",
                    key.len()
                )));
            }
            keys.insert(id.clone(), key);
        }
        Ok(LocalKms { keys, wrapping, from: from.to_string() })
    }

    /// The keys of the file `path` (see [`LocalKms::from_json`]).
    pub fn from_file(path: &Path, wrapping: Wrapping) -> Result<LocalKms, KeyError> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| KeyError(format!("{}: cannot read the keys: {e}", path.display())))?,
        );
        LocalKms::from_json(&text, wrapping, &path.display().to_string())
    }

    /// The keys of `file`, or else of the `STN_KEYS` environment variable (the JSON itself,
    /// or the path of a file holding it), or None when neither is given.
    pub fn from_file_or_env(file: Option<&Path>, wrapping: Wrapping) -> Result<Option<LocalKms>, KeyError> {
        if let Some(f) = file {
            return LocalKms::from_file(f, wrapping).map(Some);
        }
        match std::env::var(KEYS_ENV) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                if text.trim_start().starts_with('{') {
                    LocalKms::from_json(&text, wrapping, KEYS_ENV).map(Some)
                } else if text.trim().is_empty() {
                    Err(KeyError(format!("{KEYS_ENV} is empty")))
                } else {
                    LocalKms::from_file(Path::new(text.trim()), wrapping).map(Some)
                }
            }
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(KeyError(format!("{KEYS_ENV} is not UTF-8"))),
        }
    }

    fn master(&self, id: &str) -> Result<&Secret, KeyError> {
        self.keys.get(id).ok_or_else(|| {
            KeyError(format!("no master key `{id}` in {} (it has {})", self.from, self.ids().join(", ")))
        })
    }

    fn ids(&self) -> Vec<String> {
        self.keys.keys().map(|k| format!("`{k}`")).collect()
    }
}

impl Kms for LocalKms {
    fn wrap_key(&self, key: &Secret, master_key_id: &str) -> Result<String, KeyError> {
        let master = self.master(master_key_id)?;
        match self.wrapping {
            Wrapping::AesGcm => aes_gcm_wrap(master, master_key_id.as_bytes(), key),
            Wrapping::PyarrowTest => {
                let mut both = Zeroizing::new(master.expose().to_vec());
                both.extend_from_slice(key.expose());
                Ok(B64.encode(&*both))
            }
        }
    }

    fn unwrap_key(&self, wrapped: &str, master_key_id: &str) -> Result<Secret, KeyError> {
        let master = self.master(master_key_id)?;
        let raw = Zeroizing::new(
            B64.decode(wrapped.trim())
                .map_err(|_| KeyError(format!("the key wrapped by `{master_key_id}` is not base64")))?,
        );
        match self.wrapping {
            Wrapping::AesGcm => aes_gcm_unwrap(master, master_key_id.as_bytes(), &raw).map_err(|_| {
                KeyError(format!(
                    "the master key `{master_key_id}` of {} does not unwrap the file's key (another key, \
                     or not AES-GCM wrapping: --key-wrapping)",
                    self.from
                ))
            }),
            Wrapping::PyarrowTest => {
                let m = master.expose();
                if raw.len() <= m.len() || &raw[..m.len()] != m {
                    return Err(KeyError(format!(
                        "the master key `{master_key_id}` of {} does not unwrap the file's key (another \
                         key, or not pyarrow-test wrapping: --key-wrapping)",
                        self.from
                    )));
                }
                Ok(Secret::new(raw[m.len()..].to_vec()))
            }
        }
    }

    fn describe(&self) -> String {
        let w = match self.wrapping {
            Wrapping::AesGcm => "AES-GCM",
            Wrapping::PyarrowTest => "pyarrow-test",
        };
        format!("the local keys of {} ({w} wrapping; master keys {})", self.from, self.ids().join(", "))
    }
}

fn cipher(key: &[u8]) -> Result<LessSafeKey, KeyError> {
    let alg = match key.len() {
        16 => &AES_128_GCM,
        32 => &AES_256_GCM,
        n => return Err(KeyError(format!("a {}-bit key: AES-GCM here takes 128 or 256 bits", n * 8))),
    };
    Ok(LessSafeKey::new(UnboundKey::new(alg, key).map_err(|_| KeyError("a bad AES key".into()))?))
}

/// base64(nonce(12) ‖ AES-GCM(`key`, `aad`, plaintext) ‖ tag(16)).
fn aes_gcm_wrap(key: &Secret, aad: &[u8], plaintext: &Secret) -> Result<String, KeyError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| KeyError("no random numbers from the system".into()))?;
    let mut out = Zeroizing::new(plaintext.expose().to_vec());
    cipher(key.expose())?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut *out)
        .map_err(|_| KeyError("AES-GCM failed".into()))?;
    let mut all = nonce.to_vec();
    all.extend_from_slice(&out);
    Ok(B64.encode(all))
}

fn aes_gcm_unwrap(key: &Secret, aad: &[u8], raw: &[u8]) -> Result<Secret, KeyError> {
    if raw.len() < NONCE_LEN + 16 {
        return Err(KeyError("a wrapped key too short for AES-GCM".into()));
    }
    let nonce =
        Nonce::try_assume_unique_for_key(&raw[..NONCE_LEN]).map_err(|_| KeyError("bad nonce".into()))?;
    let mut buf = Zeroizing::new(raw[NONCE_LEN..].to_vec());
    let plain = cipher(key.expose())?
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| KeyError("AES-GCM: the key does not open it".into()))?;
    Ok(Secret::new(plain.to_vec()))
}

/// What the keys of a file said while it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unwrapped {
    /// The master key of the footer's key, when the footer's key material named one.
    pub footer_master_key: Option<String>,
    /// The master keys of the column keys.
    pub column_master_keys: Vec<String>,
}

/// arrow-rs's [`KeyRetriever`] over a [`Kms`]: the data keys of `PKMT1` key material.
struct Retriever {
    kms: Arc<dyn Kms>,
    seen: Mutex<Unwrapped>,
    keks: Mutex<BTreeMap<String, Secret>>,
}

impl KeyRetriever for Retriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        self.data_key(key_metadata).map(|s| s.expose().to_vec()).map_err(|e| ParquetError::General(e.0))
    }
}

impl Retriever {
    fn data_key(&self, key_metadata: &[u8]) -> Result<Secret, KeyError> {
        if key_metadata.is_empty() {
            return Err(KeyError(
                "the file's keys are not KMS-wrapped (no key material: it was written with explicit keys)"
                    .into(),
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(key_metadata)
            .map_err(|_| KeyError("the file's key material is not PKMT1 JSON".into()))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str());
        if field("keyMaterialType") != Some("PKMT1") {
            return Err(KeyError("the file's key material is not PKMT1".into()));
        }
        if v.get("internalStorage").and_then(|x| x.as_bool()) != Some(true) {
            return Err(KeyError(
                "the file's key material is stored outside it (external key material) and cannot be read"
                    .into(),
            ));
        }
        let master =
            field("masterKeyID").ok_or_else(|| KeyError("the key material names no master key".into()))?;
        let wrapped_dek =
            field("wrappedDEK").ok_or_else(|| KeyError("the key material has no wrapped key".into()))?;
        let dek = if v.get("doubleWrapping").and_then(|x| x.as_bool()).unwrap_or(false) {
            let kek_id = field("keyEncryptionKeyID")
                .ok_or_else(|| KeyError("double wrapping without a key-encryption key ID".into()))?;
            let kek = {
                let mut cache = self.keks.lock().unwrap_or_else(|p| p.into_inner());
                let cache_key = format!("{master}\u{0}{kek_id}");
                match cache.get(&cache_key) {
                    Some(k) => k.clone(),
                    None => {
                        let wrapped_kek = field("wrappedKEK")
                            .ok_or_else(|| KeyError("double wrapping without a wrapped KEK".into()))?;
                        let k = self.kms.unwrap_key(wrapped_kek, master)?;
                        cache.insert(cache_key, k.clone());
                        k
                    }
                }
            };
            let aad = B64
                .decode(kek_id)
                .map_err(|_| KeyError("a key-encryption key ID that is not base64".into()))?;
            let raw = Zeroizing::new(
                B64.decode(wrapped_dek)
                    .map_err(|_| KeyError("a wrapped data key that is not base64".into()))?,
            );
            aes_gcm_unwrap(&kek, &aad, &raw).map_err(|_| {
                KeyError(format!("the key-encryption key of `{master}` does not open the data key"))
            })?
        } else {
            self.kms.unwrap_key(wrapped_dek, master)?
        };
        if dek.len() != 16 && dek.len() != 32 {
            return Err(KeyError(format!(
                "a {}-bit data key (master key `{master}`): arrow-rs reads AES-128 and AES-256 only",
                dek.len() * 8
            )));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if v.get("isFooterKey").and_then(|x| x.as_bool()) == Some(true) {
            seen.footer_master_key = Some(master.to_string());
        } else if !seen.column_master_keys.iter().any(|m| m == master) {
            seen.column_master_keys.push(master.to_string());
        }
        Ok(dek)
    }
}

/// The keys of a run: a KMS and, optionally, the master key that protects the outputs of
/// plaintext inputs (`--encrypt ID`).
#[derive(Clone)]
pub struct Keys {
    kms: Arc<dyn Kms>,
    encrypt: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("kms", &self.kms.describe()).field("encrypt", &self.encrypt).finish()
    }
}

impl Keys {
    /// Keys from `kms`; outputs of plaintext inputs stay plaintext.
    pub fn new(kms: Arc<dyn Kms>) -> Keys {
        Keys { kms, encrypt: None }
    }

    /// Also encrypt the outputs of plaintext inputs, under the master key `master_key_id`.
    pub fn encrypting(mut self, master_key_id: Option<String>) -> Keys {
        self.encrypt = master_key_id;
        self
    }

    /// The master key outputs of plaintext inputs are encrypted with (None: they are not).
    pub fn encrypt(&self) -> Option<&str> {
        self.encrypt.as_deref()
    }

    /// The KMS.
    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.kms
    }

    /// Decryption properties for opening one file, and what its keys said once it is open.
    pub fn decryption(&self) -> (Arc<FileDecryptionProperties>, KeyLog) {
        let r = Arc::new(Retriever {
            kms: self.kms.clone(),
            seen: Mutex::new(Unwrapped::default()),
            keks: Mutex::new(BTreeMap::new()),
        });
        let props = FileDecryptionProperties::with_key_retriever(r.clone())
            .build()
            .expect("decryption properties with a key retriever always build");
        (props, KeyLog(r))
    }
}

/// What the keys of one opened file said ([`Keys::decryption`]).
pub struct KeyLog(Arc<Retriever>);

impl KeyLog {
    /// The master keys seen so far.
    pub fn unwrapped(&self) -> Unwrapped {
        self.0.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How an input file is protected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protection {
    /// Its footer is encrypted (magic `PARE`).
    pub encrypted_footer: bool,
    /// Columns whose chunks are encrypted (in the first row group).
    pub encrypted_columns: Vec<String>,
    /// The master key of its footer key, when known.
    pub footer_master_key: Option<String>,
}

impl Protection {
    /// Whether anything in the file is encrypted.
    pub fn encrypted(&self) -> bool {
        self.encrypted_footer || !self.encrypted_columns.is_empty()
    }
}

/// Whether the file ends with the magic of an encrypted footer (`PARE`).
pub fn has_encrypted_footer(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if crate::remote::is_remote(path) {
        let f = crate::remote::RemoteFile::open(path)?;
        let len = parquet::file::reader::Length::len(&f);
        return Ok(len >= 8 && f.range(len - 4, 4)?.as_ref() == b"PARE");
    }
    let mut f = std::fs::File::open(path)?;
    if f.metadata()?.len() < 8 {
        return Ok(false);
    }
    f.seek(SeekFrom::End(-4))?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)?;
    Ok(&magic == b"PARE")
}

/// How the file at `path`, whose footer is `meta`, is protected; `log` is what its keys said.
pub fn protection(path: &Path, meta: &ParquetMetaData, log: Option<&KeyLog>) -> std::io::Result<Protection> {
    let encrypted_columns = meta
        .row_groups()
        .first()
        .map(|rg| {
            rg.columns()
                .iter()
                .filter(|c| c.crypto_metadata().is_some())
                .map(|c| c.column_path().string())
                .collect()
        })
        .unwrap_or_default();
    Ok(Protection {
        encrypted_footer: has_encrypted_footer(path)?,
        encrypted_columns,
        footer_master_key: log.and_then(|l| l.unwrapped().footer_master_key),
    })
}

/// The master key the outputs of inputs protected as `inputs` are encrypted with, or None when
/// they may be plaintext: `keys.encrypt()` when set, else the footer master key of the first
/// encrypted input. An encrypted input with no known master key and no `--encrypt` is an error.
pub fn output_master_key(
    keys: Option<&Keys>,
    inputs: &[(PathBuf, Protection)],
) -> Result<Option<String>, KeyError> {
    if let Some(id) = keys.and_then(|k| k.encrypt()) {
        return Ok(Some(id.to_string()));
    }
    for (path, p) in inputs {
        if p.encrypted() {
            return match &p.footer_master_key {
                Some(m) => Ok(Some(m.clone())),
                None => Err(KeyError(format!(
                    "{} is encrypted, so its outputs will be, but its footer names no master key: say which \
                     with --encrypt MASTER_KEY_ID",
                    path.display()
                ))),
            };
        }
    }
    Ok(None)
}

/// Encryption of one output file: a fresh 256-bit data key, wrapped by `kms` under
/// `master_key_id` (single wrapping, the key material stored in the file as `PKMT1`),
/// an encrypted footer and every column encrypted with it.
pub fn output_encryption(
    kms: &dyn Kms,
    master_key_id: &str,
) -> Result<Arc<FileEncryptionProperties>, KeyError> {
    let mut dek = Zeroizing::new(vec![0u8; OUTPUT_KEY_BYTES]);
    SystemRandom::new().fill(&mut dek).map_err(|_| KeyError("no random numbers from the system".into()))?;
    let dek = Secret::new(dek.to_vec());
    let wrapped = kms.wrap_key(&dek, master_key_id)?;
    let material = serde_json::json!({
        "keyMaterialType": "PKMT1",
        "internalStorage": true,
        "isFooterKey": true,
        "kmsInstanceID": "DEFAULT",
        "kmsInstanceURL": "DEFAULT",
        "masterKeyID": master_key_id,
        "doubleWrapping": false,
        "wrappedDEK": wrapped,
    });
    FileEncryptionProperties::builder(dek.expose().to_vec())
        .with_footer_key_metadata(material.to_string().into_bytes())
        .build()
        .map_err(|e| KeyError(format!("cannot encrypt: {e}")))
}

/// Checks that the Parquet file at `path` is protected as an output must be: an encrypted
/// footer, that `keys` open, every column chunk encrypted, no bloom filter.
pub fn check_protected(path: &Path, keys: &Keys) -> Result<(), String> {
    if !has_encrypted_footer(path).map_err(|e| format!("cannot reread it: {e}"))? {
        return Err("its footer is not encrypted".into());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot reread it: {e}"))?;
    let (props, _) = keys.decryption();
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .with_decryption_properties(Some(props))
        .parse_and_finish(&file)
        .map_err(|e| format!("its keys do not open it: {e}"))?;
    for (g, rg) in meta.row_groups().iter().enumerate() {
        for c in rg.columns() {
            if c.crypto_metadata().is_none() {
                return Err(format!(
                    "column `{}` of row group {g} is not encrypted",
                    c.column_path().string()
                ));
            }
            if c.bloom_filter_offset().is_some() {
                return Err(format!(
                    "column `{}` has a bloom filter (arrow-rs writes them in plaintext)",
                    c.column_path().string()
                ));
            }
        }
    }
    Ok(())
}

/// The Parquet reader's message for `e`, with what arrow-rs cannot decrypt said plainly.
pub fn reader_message(e: &ParquetError) -> String {
    let m = e.to_string();
    if m.contains("AES_GCM_CTR_V1") {
        format!(
            "{m}: arrow-rs decrypts AES_GCM_V1 only (write the table with encryption_algorithm AES_GCM_V1)"
        )
    } else {
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OTAxMjM0NQ=="; // b"0123456789012345"

    #[test]
    fn debug_and_errors_never_show_key_bytes() {
        let s = Secret::new(b"0123456789012345".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(redacted, 16 bytes)");
        let kms = LocalKms::from_json(&format!("{{\"kf\": \"{KEY}\"}}"), Wrapping::AesGcm, "test").unwrap();
        let keys = Keys::new(Arc::new(kms)).encrypting(Some("kf".into()));
        let shown = format!("{keys:?}");
        assert!(
            !shown.contains(KEY) && !shown.contains("0123456789012345") && shown.contains("kf"),
            "{shown}"
        );
        // A bad key is named by its ID, never quoted.
        for bad in [r#"{"kf": "not*base64*0123456789"}"#, r#"{"kf": "MDEyMzQ1"}"#, r#"{"kf": 0123456789}"#] {
            let e = LocalKms::from_json(bad, Wrapping::AesGcm, "test").unwrap_err().0;
            assert!(!e.contains("0123456789") && !e.contains("MDEyMzQ1"), "{e}");
        }
    }

    #[test]
    fn wrapped_keys_unwrap_only_with_their_master_key() {
        let two = format!("{{\"a\": \"{KEY}\", \"b\": \"{}\"}}", B64.encode([7u8; 32]));
        for w in [Wrapping::AesGcm, Wrapping::PyarrowTest] {
            let kms = LocalKms::from_json(&two, w, "test").unwrap();
            let dek = Secret::new(vec![9u8; 32]);
            let wrapped = kms.wrap_key(&dek, "a").unwrap();
            assert_eq!(kms.unwrap_key(&wrapped, "a").unwrap(), dek);
            assert!(kms.unwrap_key(&wrapped, "b").is_err(), "{w:?}: another master key");
            assert!(kms.unwrap_key(&wrapped, "c").unwrap_err().0.contains("no master key `c`"));
        }
        // AES-GCM: the master-key ID is bound in (associated data), and each wrap is fresh.
        let kms = LocalKms::from_json(&two, Wrapping::AesGcm, "test").unwrap();
        let dek = Secret::new(vec![1u8; 16]);
        assert_ne!(kms.wrap_key(&dek, "a").unwrap(), kms.wrap_key(&dek, "a").unwrap());
    }
}
