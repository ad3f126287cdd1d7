//! Encrypted tables in SQL: a session that reads encrypted Parquet files with a run's keys and
//! writes every Parquet output of `COPY ... TO` encrypted (the keys of [`stn_table::crypto`],
//! through DataFusion's encryption factory: only the factory's ID is in the session's options,
//! never a key, so no plan, EXPLAIN or error can show one).
//!
//! On a cluster, Ballista 55 drops encryption settings when it sends plans to executors (an
//! encrypted `COPY` would silently write plaintext). There, a job carries only
//! [`CryptoSettings`] (`stn_crypto.*`: whether the client reads with keys, the master key ID of
//! the outputs, whether plaintext outputs are allowed), and each executor, with keys of its own
//! (`stn-executor --keys`), re-attaches them to the plan it was sent ([`protect_plan`]): every
//! Parquet scan decrypts, every Parquet output is encrypted, and an output that would be
//! plaintext fails the task instead.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::EncryptionFactoryOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::parquet_encryption::EncryptionFactory;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use parquet::encryption::decrypt::FileDecryptionProperties;
use parquet::encryption::encrypt::FileEncryptionProperties;
use stn_table::crypto::{check_protected, output_encryption, Keys};

/// The ID the key factory is registered under.
pub const FACTORY_ID: &str = "stn-keys";

/// The factory option that names the master key of an output (a key ID, never a key).
pub const MASTER_KEY_OPTION: &str = "master_key_id";

/// What a session asks of encryption, sent with its jobs to a cluster's executors as
/// `stn_crypto.*` settings: key IDs and flags only, never a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CryptoSettings {
    /// The client reads with keys (its tables may be encrypted): every output of its jobs must
    /// be protected.
    pub keys: bool,
    /// The master key ID that Parquet outputs are encrypted under ("": none named).
    pub encrypt: String,
    /// Plaintext outputs (CSV, JSON, Arrow) are written anyway.
    pub allow_plaintext_output: bool,
}

impl datafusion::config::ConfigExtension for CryptoSettings {
    const PREFIX: &'static str = "stn_crypto";
}

// By hand rather than with DataFusion's macro: a session's entries must carry the prefix
// (`stn_crypto.encrypt`), as they travel to the cluster under their full names.
impl datafusion::config::ExtensionOptions for CryptoSettings {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn datafusion::config::ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let flag = |v: &str| {
            v.parse::<bool>().map_err(|_| {
                DataFusionError::Configuration(format!("stn_crypto.{key}: true or false, got `{v}`"))
            })
        };
        match key {
            "keys" => self.keys = flag(value)?,
            "encrypt" => self.encrypt = value.to_string(),
            "allow_plaintext_output" => self.allow_plaintext_output = flag(value)?,
            _ => return Err(DataFusionError::Configuration(format!("unknown setting stn_crypto.{key}"))),
        }
        Ok(())
    }

    fn entries(&self) -> Vec<datafusion::config::ConfigEntry> {
        use datafusion::config::{ConfigEntry, ConfigExtension};
        let entry = |name: &str, value: String, description: &'static str| ConfigEntry {
            key: format!("{}.{name}", Self::PREFIX),
            value: Some(value),
            description,
        };
        vec![
            entry("keys", self.keys.to_string(), "the client reads with keys: every output is protected"),
            entry("encrypt", self.encrypt.clone(), "the master key ID of the Parquet outputs"),
            entry(
                "allow_plaintext_output",
                self.allow_plaintext_output.to_string(),
                "plaintext outputs are written anyway",
            ),
        ]
    }
}

/// `config` able to hold [`CryptoSettings`] (every process of a cluster needs them registered
/// for the settings to travel).
pub fn with_settings(mut config: SessionConfig) -> SessionConfig {
    if config.options().extensions.get::<CryptoSettings>().is_none() {
        config.options_mut().extensions.insert(CryptoSettings::default());
    }
    config
}

/// The [`CryptoSettings`] of `config` (the defaults when it has none).
pub fn settings(config: &SessionConfig) -> CryptoSettings {
    config.options().extensions.get::<CryptoSettings>().cloned().unwrap_or_default()
}

/// The decryption and encryption of `keys` through DataFusion's encryption factory trait.
pub fn factory(keys: Keys) -> Arc<KeyFactory> {
    Arc::new(KeyFactory { keys })
}

/// `plan` (as an executor received it) with encryption re-attached: every Parquet scan reads
/// with `keys` (a plaintext file as it is; no bloom filters read), every Parquet output is
/// written through the key factory (registered as [`FACTORY_ID`] in the task's runtime) under
/// the job's master key (`settings.encrypt`), without bloom filters. A job of a client with keys
/// on an executor without (`keys` None) cannot write: its outputs would be plaintext. Other
/// outputs (CSV, JSON, Arrow) are plaintext: refused where keys are in play unless
/// `settings.allow_plaintext_output`.
pub fn protect_plan(
    plan: Arc<dyn ExecutionPlan>,
    keys: Option<&Keys>,
    settings: &CryptoSettings,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::datasource::file_format::parquet::ParquetSink;
    use datafusion::datasource::physical_plan::{FileScanConfigBuilder, FileSink, ParquetSource};
    use datafusion::datasource::sink::DataSinkExec;
    use datafusion::datasource::source::DataSourceExec;

    let protected = keys.is_some() || settings.keys;
    plan.transform_up(|node| {
        if let (Some(keys), Some(scan)) = (keys, node.downcast_ref::<DataSourceExec>()) {
            if let Some((config, parquet)) = scan.downcast_to_file_source::<ParquetSource>() {
                let mut options = parquet.table_parquet_options().clone();
                options.global.bloom_filter_on_read = false;
                let source = parquet.clone().with_table_parquet_options(options).with_encryption_factory(factory(keys.clone()));
                let config = FileScanConfigBuilder::from(config.clone()).with_source(Arc::new(source)).build();
                return Ok(Transformed::yes(DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>));
            }
        }
        let Some(sink) = node.downcast_ref::<DataSinkExec>() else { return Ok(Transformed::no(node)) };
        if !protected {
            return Ok(Transformed::no(node));
        }
        let Some(parquet) = sink.sink().downcast_ref::<ParquetSink>() else {
            if settings.allow_plaintext_output {
                return Ok(Transformed::no(node));
            }
            return Err(DataFusionError::Execution(
                "this job would write its rows in plaintext (not Parquet) where encrypted tables are read: refused \
                 (--allow-plaintext-output writes it anyway)"
                    .into(),
            ));
        };
        if keys.is_none() {
            return Err(DataFusionError::Execution(
                "this executor has no keys (stn-executor --keys), and the job's Parquet outputs must be encrypted: \
                 refused rather than written in plaintext"
                    .into(),
            ));
        }
        if settings.encrypt.is_empty() {
            return Err(DataFusionError::Execution(
                "every Parquet output of a job with keys is encrypted: name its master key with --encrypt \
                 MASTER_KEY_ID"
                    .into(),
            ));
        }
        let mut options = parquet.parquet_options().clone();
        options.crypto.file_encryption = None;
        options.crypto.factory_id = Some(FACTORY_ID.to_string());
        options.crypto.factory_options.options.insert(MASTER_KEY_OPTION.to_string(), settings.encrypt.clone());
        options.global.bloom_filter_on_write = false;
        let written = ParquetSink::new(parquet.config().clone(), options);
        let exec = DataSinkExec::new(sink.input().clone(), Arc::new(written), sink.sort_order().clone());
        Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

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
        // A job's master key ID travels in the factory's options (see `protect_plan`); a
        // session's own keys name it otherwise.
        let named = _config.options.get(MASTER_KEY_OPTION).map(String::as_str).filter(|s| !s.is_empty());
        let id = named.or(self.keys.encrypt()).ok_or_else(|| {
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
    let config = state.config_mut();
    let mut settings = settings(config);
    settings.keys = true;
    settings.encrypt = keys.encrypt().unwrap_or_default().to_string();
    config.options_mut().extensions.insert(settings);
    config.set_extension(Arc::new(SessionKeys(keys)));
}

/// Lets `ctx`'s jobs write plaintext outputs (CSV, JSON, Arrow) although it has keys, on a
/// cluster as here (`--allow-plaintext-output`).
pub fn allow_plaintext_output(ctx: &SessionContext) {
    let state = ctx.state_ref();
    let mut state = state.write();
    let config = state.config_mut();
    let mut settings = settings(config);
    settings.allow_plaintext_output = true;
    config.options_mut().extensions.insert(settings);
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

/// The checks around a `COPY ... TO` of a session with keys ([`CopyCheck::before`] and
/// [`CopyCheck::after`]), here or on a cluster.
#[derive(Debug)]
pub struct CopyCheck {
    url: String,
    before: BTreeMap<PathBuf, Option<SystemTime>>,
    keys: Keys,
}

impl CopyCheck {
    /// Before running `plan` with `keys` (None: nothing to check): a `COPY` with encryption
    /// options in its SQL is refused (keys never go in SQL), and so is one to a plaintext
    /// format (CSV, JSON, Arrow) unless `allow_plaintext_output`, or to a place that cannot be
    /// checked after (not a local path). For a Parquet `COPY`, what to check after it.
    pub fn before(
        plan: &datafusion::logical_expr::LogicalPlan,
        keys: Option<&Keys>,
        allow_plaintext_output: bool,
    ) -> Result<Option<CopyCheck>> {
        let (datafusion::logical_expr::LogicalPlan::Copy(c), Some(keys)) = (plan, keys) else {
            return Ok(None);
        };
        if c.options.keys().any(|k| k.contains("crypto")) {
            return Err(DataFusionError::Plan(
                "encryption options in a statement are refused: the keys come from --keys, and a key in SQL text \
                 would be in plans and logs"
                    .into(),
            ));
        }
        let format = c.file_type.get_ext().to_ascii_lowercase();
        if format != "parquet" {
            if allow_plaintext_output {
                return Ok(None);
            }
            return Err(DataFusionError::Plan(format!(
                "COPY ... TO {format} would write the rows in plaintext, and this session reads encrypted tables \
                 (--keys): refused (--allow-plaintext-output writes it anyway)"
            )));
        }
        if !is_local(&c.output_url) {
            return Err(DataFusionError::Plan(format!(
                "{}: encrypted outputs are written to local paths only (each is checked after writing)",
                c.output_url
            )));
        }
        Ok(Some(CopyCheck { url: c.output_url.clone(), before: snapshot(&c.output_url), keys: keys.clone() }))
    }

    /// After the `COPY`: every file it wrote must be protected; otherwise they are all removed
    /// and this is the error naming the first.
    pub fn after(self) -> Result<()> {
        check_copy_outputs(&self.url, &self.before, &self.keys)
    }
}

/// Whether `path` is a local path (not an object store URL).
pub(crate) fn is_local(output_url: &str) -> bool {
    output_url.starts_with("file://") || !output_url.contains("://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_travel_as_key_value_pairs() {
        let mut config = with_settings(SessionConfig::new());
        let mut s = settings(&config);
        (s.keys, s.encrypt) = (true, "ward-7".into());
        config.options_mut().extensions.insert(s);
        let pairs: Vec<(String, Option<String>)> =
            config.options().entries().into_iter().map(|e| (e.key, e.value)).collect();
        assert!(
            pairs.iter().any(|(k, v)| k == "stn_crypto.encrypt" && v.as_deref() == Some("ward-7")),
            "{pairs:?}"
        );
        let mut other = with_settings(SessionConfig::new());
        for (k, v) in pairs.iter().filter(|(k, _)| k.starts_with("stn_crypto.")) {
            other.options_mut().set(k, v.as_deref().unwrap_or_default()).unwrap();
        }
        let got = settings(&other);
        assert!(got.keys && got.encrypt == "ward-7" && !got.allow_plaintext_output, "{got:?}");
        // A process without them registered does not take them.
        assert!(SessionConfig::new().options_mut().set("stn_crypto.encrypt", "x").is_err());
    }
}
