//! Tables in object stores: a statement's `s3://BUCKET/PREFIX` tables (and `COPY ... TO
//! 's3://...'`) are read and written through `object_store`, which DataFusion streams from
//! (ranged GETs of the footers and row groups it needs) and writes to with multipart uploads
//! (an object appears only when its upload completes).
//!
//! Credentials come from the standard chain: the `AWS_*` environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, and `AWS_ENDPOINT_URL` for an
//! S3-compatible server), else the profile (`AWS_PROFILE`, default `default`) of the shared
//! credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) and its
//! region from `~/.aws/config`, else the machine's instance credentials. No credential is ever
//! printed.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

/// The buckets of the `s3://` (or `s3a://`) URLs in `sql`, in order of appearance, once each.
pub fn s3_buckets(sql: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for scheme in ["s3://", "s3a://"] {
        let mut rest = sql;
        while let Some(i) = rest.find(scheme) {
            rest = &rest[i + scheme.len()..];
            let bucket: String =
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect();
            if !bucket.is_empty() && !out.contains(&bucket) {
                out.push(bucket);
            }
        }
    }
    out
}

/// An S3 store for `bucket` with the credential chain of this module's documentation (the one
/// place it is made: [`stn_table::remote::s3_store`]).
pub fn s3_store(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    stn_table::remote::s3_store(bucket).map_err(DataFusionError::Configuration)
}

/// Registers an S3 store on `ctx` for every bucket the statement `sql` names.
pub fn register_for(ctx: &SessionContext, sql: &str) -> Result<()> {
    for bucket in s3_buckets(sql) {
        let url = url::Url::parse(&format!("s3://{bucket}"))
            .map_err(|e| DataFusionError::Configuration(format!("s3://{bucket}: {e}")))?;
        ctx.register_object_store(&url, s3_store(&bucket)?);
    }
    Ok(())
}

/// The `s3://` URLs quoted in `sql` (up to the closing quote).
fn s3_urls(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = sql;
    while let Some(i) = rest.find("'s3://") {
        rest = &rest[i + 1..];
        let url: String = rest.chars().take_while(|c| *c != '\'').collect();
        rest = &rest[url.len()..];
        out.push(url);
    }
    out
}

/// Why a statement's `s3://` table cannot be read, when DataFusion only says "table not found":
/// the first quoted `s3://` URL whose listing fails (a missing bucket, refused credentials, an
/// unreachable server: the store's error) or lists nothing (no such object or prefix).
pub async fn why_unreadable(ctx: &SessionContext, sql: &str) -> Option<DataFusionError> {
    for url in s3_urls(sql) {
        let Ok(parsed) = url::Url::parse(&url) else { continue };
        let Ok(root) =
            datafusion::execution::object_store::ObjectStoreUrl::parse(&parsed[..url::Position::BeforePath])
        else {
            continue;
        };
        let Ok(store) = ctx.runtime_env().object_store(&root) else { continue };
        let Ok(path) = object_store::path::Path::from_url_path(parsed.path()) else { continue };
        match store.list(Some(&path)).next().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                let m = stn_table::remote::store_message(&e.to_string());
                return Some(DataFusionError::Plan(format!("{url}: cannot be read: {m}")));
            }
            None => return Some(DataFusionError::Plan(format!("{url}: no such object or prefix"))),
        }
    }
    None
}

/// Whether `url` names an object store (a `scheme://` URL other than `file://`).
pub fn is_object_store(url: &str) -> bool {
    url.contains("://") && !url.starts_with("file://")
}

/// Before a `COPY ... TO` an object store URL: an existing object is never overwritten, so a
/// target file (a name with an extension) that exists, or a target prefix that holds objects,
/// is an error naming it. (The check comes before the upload; a writer that creates the object
/// between the two is not detected.)
pub async fn refuse_existing(ctx: &SessionContext, url: &str) -> Result<()> {
    let parsed = url::Url::parse(url).map_err(|e| DataFusionError::Plan(format!("{url}: {e}")))?;
    let root =
        datafusion::execution::object_store::ObjectStoreUrl::parse(&parsed[..url::Position::BeforePath])?;
    let store = ctx.runtime_env().object_store(&root)?;
    let path = object_store::path::Path::from_url_path(parsed.path())
        .map_err(|e| DataFusionError::Plan(format!("{url}: {e}")))?;
    let is_file = parsed.path().rsplit('/').next().is_some_and(|name| name.contains('.'));
    if is_file {
        match store.head(&path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(DataFusionError::ObjectStore(Box::new(e))),
        }
    } else {
        match store.list(Some(&path)).next().await {
            None => return Ok(()),
            Some(Err(e)) => return Err(DataFusionError::ObjectStore(Box::new(e))),
            Some(Ok(_)) => {}
        }
    }
    Err(DataFusionError::Plan(format!(
        "{url}: already exists; outputs are never overwritten (write to a new name or prefix, or delete it first)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_found_in_statements() {
        let sql = "COPY (SELECT * FROM 's3://in-bucket/a/' JOIN 's3a://b.2/x.parquet') TO 's3://out-1/o/' -- s3://in-bucket";
        assert_eq!(s3_buckets(sql), ["in-bucket", "out-1", "b.2"]);
        assert!(s3_buckets("SELECT 1 FROM 'local/s3/file.parquet'").is_empty());
    }
}
