//! Encrypted tables in SQL: a session that reads encrypted Parquet files with a run's keys and
//! writes every Parquet output of `COPY ... TO` encrypted (the keys of [`stn_table::crypto`],
//! through DataFusion's encryption factory: only the factory's ID is in the session's options,
//! never a key, so no plan, EXPLAIN or error can show one).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::EncryptionFactoryOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::parquet_encryption::EncryptionFactory;
use datafusion::prelude::SessionContext;
use parquet::encryption::decrypt::FileDecryptionProperties;
use parquet::encryption::encrypt::FileEncryptionProperties;
use stn_table::crypto::{check_protected, output_encryption, Keys};

/// The ID the key factory is registered under.
pub const FACTORY_ID: &str = "stn-keys";

/// DataFusion's encryption factory over a run's [`Keys`]: every file read gets their
/// decryption properties (a plaintext file is read as it is); every Parquet file written gets
/// a fresh 256-bit data key wrapped under `keys.encrypt()`, the master key of the outputs.
#[derive(Debug)]
pub struct KeyFactory {
    keys: Keys,
}

#[async_trait::async_trait]
impl EncryptionFactory for KeyFactory {
    async fn get_file_encryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _schema: &SchemaRef,
        file_path: &datafusion::object_store::path::Path,
    ) -> Result<Option<Arc<FileEncryptionProperties>>> {
        let id = self.keys.encrypt().ok_or_else(|| {
            DataFusionError::Execution(format!(
                "{file_path}: with --keys every Parquet output is encrypted: name its master key with --encrypt \
                 MASTER_KEY_ID"
            ))
        })?;
        output_encryption(self.keys.kms().as_ref(), id)
            .map(Some)
            .map_err(|e| DataFusionError::Execution(format!("{file_path}: cannot encrypt: {e}")))
    }

    async fn get_file_decryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _file_path: &datafusion::object_store::path::Path,
    ) -> Result<Option<Arc<FileDecryptionProperties>>> {
        Ok(Some(self.keys.decryption().0))
    }
}

/// The keys of a session, kept in its configuration.
#[derive(Debug)]
struct SessionKeys(Keys);

/// Makes `ctx` read encrypted Parquet files with `keys` and write every Parquet output
/// encrypted under `keys.encrypt()` ([`KeyFactory`]).
pub fn use_keys(ctx: &SessionContext, keys: Keys) {
    ctx.runtime_env()
        .register_parquet_encryption_factory(FACTORY_ID, Arc::new(KeyFactory { keys: keys.clone() }));
    let state = ctx.state_ref();
    let mut state = state.write();
    let parquet = &mut state.table_options_mut().parquet;
    parquet.crypto.factory_id = Some(FACTORY_ID.to_string());
    // arrow-rs writes bloom filters in plaintext.
    parquet.global.bloom_filter_on_write = false;
    state.config_mut().set_extension(Arc::new(SessionKeys(keys)));
}

/// The keys `ctx` was given ([`use_keys`]), if any.
pub fn session_keys(ctx: &SessionContext) -> Option<Keys> {
    ctx.state_ref().read().config().get_extension::<SessionKeys>().map(|k| k.0.clone())
}

/// The files under a local `COPY` target (a file or a folder) with their modification times.
pub(crate) fn snapshot(output_url: &str) -> BTreeMap<PathBuf, Option<SystemTime>> {
    let path = PathBuf::from(output_url.strip_prefix("file://").unwrap_or(output_url));
    let mut out = BTreeMap::new();
    let mut stack = vec![path];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else {
            out.insert(p, meta.modified().ok());
        }
    }
    out
}

/// After a `COPY` in a session with keys: every file it wrote (new or changed since `before`)
/// must be protected ([`check_protected`]); otherwise they are all removed and the statement
/// fails, naming the first.
pub(crate) fn check_copy_outputs(
    output_url: &str,
    before: &BTreeMap<PathBuf, Option<SystemTime>>,
    keys: &Keys,
) -> Result<()> {
    let written: Vec<PathBuf> =
        snapshot(output_url).into_iter().filter(|(p, t)| before.get(p) != Some(t)).map(|(p, _)| p).collect();
    let bad = written.iter().find_map(|p| check_protected(p, keys).err().map(|e| (p.clone(), e)));
    if let Some((p, why)) = bad {
        for f in &written {
            let _ = std::fs::remove_file(f);
        }
        return Err(DataFusionError::Execution(format!(
            "{}: the written file is not protected as it must be ({why}); the statement's outputs were removed",
            p.display()
        )));
    }
    Ok(())
}

/// Whether `path` is a local path (not an object store URL).
pub(crate) fn is_local(output_url: &str) -> bool {
    output_url.starts_with("file://") || !output_url.contains("://")
}
