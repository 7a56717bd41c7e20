//! The archive: finished sagas past their retention (and dead letters no
//! saga holds), as gzip-compressed JSON lines, one file per day, in a
//! folder or an S3-compatible bucket.
//!
//! A saga's day is the UTC day its id was drawn (ids are UUIDv7), so the id
//! alone names the file that holds it. A day is written whole, then its
//! rows are deleted; a run that stops between the two, or a saga of that
//! day that finishes later, writes the next part of the day
//! (`2026-01-31.2.jsonl.gz`), never rewrites an earlier one. So a record
//! may be in two parts of its day, always with the same content, and a
//! reader takes the first.
//!
//! Files are written through a multipart upload: a folder's file appears
//! under its name only once complete (a rename), a bucket's object only
//! once the upload completes, so a reader never sees half a day.

use std::io::{BufRead, Write};
use std::sync::Arc;

use chrono::NaiveDate;
use flate2::write::GzEncoder;
use flate2::Compression;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, WriteMultipart};
use saga_protocol::saga_id::drawn_at;
use saga_shared::config::{ConfigError, Source};
use uuid::Uuid;

/// Parts of a day a reader looks through before it gives up: far more than
/// crashes and late finishers ever add.
const MAX_PARTS: u32 = 1_000;
/// Compressed bytes handed to the upload at a time.
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive {location}: {error}")]
    Store {
        location: String,
        error: object_store::Error,
    },
    #[error("archive {location}: {error}")]
    Io {
        location: String,
        error: std::io::Error,
    },
    #[error("{0} is not a checkout id: checkout ids are UUIDv7")]
    NotAnId(Uuid),
    #[error("archive {location}: {path} has every part up to {MAX_PARTS} already")]
    TooManyParts { location: String, path: String },
}

/// What is archived, each in a folder of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sagas,
    DeadLetters,
}

impl Kind {
    fn folder(self) -> &'static str {
        match self {
            Kind::Sagas => "sagas",
            Kind::DeadLetters => "dead_letters",
        }
    }
}

/// `ARCHIVE`: a folder (the default, `archive` under the working
/// directory) or `s3://bucket/prefix`, whose credentials, region and
/// endpoint come from the usual `AWS_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveLocation {
    Folder(std::path::PathBuf),
    Bucket(String),
}

impl ArchiveLocation {
    pub const DEFAULT_FOLDER: &'static str = "archive";

    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let text = source.get("ARCHIVE").unwrap_or_default();
        let text = text.trim();
        if text.is_empty() {
            return Ok(ArchiveLocation::Folder(Self::DEFAULT_FOLDER.into()));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            if rest.split('/').next().unwrap_or("").is_empty() {
                return Err(ConfigError::Invalid {
                    name: "ARCHIVE",
                    reason: format!("`{text}` names no bucket: s3://BUCKET[/PREFIX]"),
                });
            }
            return Ok(ArchiveLocation::Bucket(text.to_owned()));
        }
        if text.contains("://") {
            return Err(ConfigError::Invalid {
                name: "ARCHIVE",
                reason: format!("`{text}`: a folder, or s3://BUCKET[/PREFIX]"),
            });
        }
        Ok(ArchiveLocation::Folder(text.into()))
    }
}

impl std::fmt::Display for ArchiveLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveLocation::Folder(folder) => write!(f, "{}", folder.display()),
            ArchiveLocation::Bucket(url) => f.write_str(url),
        }
    }
}

#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    root: Path,
    location: String,
    /// How a stored path reads for a person: `/` or `s3://BUCKET/`.
    scheme: String,
}

impl Archive {
    /// Opens the archive. A folder is made only when the first file is
    /// written, so an instance with nothing to archive leaves none behind.
    pub fn open(location: &ArchiveLocation) -> Result<Self, ArchiveError> {
        Self::open_with(location, &[])
    }

    /// [`Archive::open`], a bucket's `AWS_*` settings taken from `aws` where
    /// given there, from the environment otherwise.
    pub fn open_with(
        location: &ArchiveLocation,
        aws: &[(&str, String)],
    ) -> Result<Self, ArchiveError> {
        let described = location.to_string();
        let (store, root): (Arc<dyn ObjectStore>, Path) = match location {
            ArchiveLocation::Folder(folder) => {
                let absolute = std::path::absolute(folder).map_err(|error| ArchiveError::Io {
                    location: described.clone(),
                    error,
                })?;
                // Rooted at `/` with the folder as the path: the store makes
                // the folders a file needs as it writes it.
                let root = Path::from(absolute.to_string_lossy().as_ref());
                (Arc::new(LocalFileSystem::new()), root)
            }
            ArchiveLocation::Bucket(url) => {
                let mut builder = AmazonS3Builder::from_env().with_url(url);
                for (name, value) in aws {
                    let key =
                        name.to_ascii_lowercase()
                            .parse()
                            .map_err(|error| ArchiveError::Store {
                                location: described.clone(),
                                error,
                            })?;
                    builder = builder.with_config(key, value);
                }
                let store = builder.build().map_err(|error| ArchiveError::Store {
                    location: described.clone(),
                    error,
                })?;
                let prefix = url
                    .trim_start_matches("s3://")
                    .split_once('/')
                    .map(|(_, prefix)| prefix)
                    .unwrap_or("");
                (Arc::new(store), Path::from(prefix))
            }
        };
        let scheme = match location {
            ArchiveLocation::Folder(_) => "/".to_owned(),
            ArchiveLocation::Bucket(url) => {
                let bucket = url.trim_start_matches("s3://").split('/').next();
                format!("s3://{}/", bucket.unwrap_or_default())
            }
        };
        Ok(Archive {
            store,
            root,
            location: described,
            scheme,
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn part(&self, kind: Kind, day: NaiveDate, part: u32) -> Path {
        let name = match part {
            1 => format!("{day}.jsonl.gz"),
            n => format!("{day}.{n}.jsonl.gz"),
        };
        self.root.child(kind.folder()).child(name)
    }

    fn store_error(&self, error: object_store::Error) -> ArchiveError {
        ArchiveError::Store {
            location: self.location.clone(),
            error,
        }
    }

    /// A writer for the first part of `day` not written yet.
    pub async fn writer(&self, kind: Kind, day: NaiveDate) -> Result<DayWriter, ArchiveError> {
        for part in 1..=MAX_PARTS {
            let path = self.part(kind, day, part);
            match self.store.head(&path).await {
                Ok(_) => continue,
                Err(object_store::Error::NotFound { .. }) => {
                    let upload = self
                        .store
                        .put_multipart(&path)
                        .await
                        .map_err(|e| self.store_error(e))?;
                    return Ok(DayWriter {
                        upload: WriteMultipart::new_with_chunk_size(upload, CHUNK),
                        // The fastest level: a fifth larger than the default, several times
                        // cheaper, and retention shares the cores with checkouts.
                        encoder: GzEncoder::new(Vec::with_capacity(CHUNK), Compression::fast()),
                        path,
                        archive: self.clone(),
                    });
                }
                Err(error) => return Err(self.store_error(error)),
            }
        }
        Err(ArchiveError::TooManyParts {
            location: self.location.clone(),
            path: self.part(kind, day, MAX_PARTS).to_string(),
        })
    }

    /// The archived record of saga `id`, if any part of its day holds it.
    pub async fn find_saga(&self, id: Uuid) -> Result<Option<serde_json::Value>, ArchiveError> {
        let day = saga_day(id).ok_or(ArchiveError::NotAnId(id))?;
        let wanted = id.to_string();
        for part in 1..=MAX_PARTS {
            let path = self.part(Kind::Sagas, day, part);
            let bytes = match self.store.get(&path).await {
                Ok(found) => found.bytes().await.map_err(|e| self.store_error(e))?,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(error) => return Err(self.store_error(error)),
            };
            let io = |error| ArchiveError::Io {
                location: format!("{}/{path}", self.location),
                error,
            };
            let lines = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(&bytes[..]));
            for line in lines.lines() {
                let line = line.map_err(io)?;
                // Most lines are someone else's: parse only a likely one.
                if !line.contains(&wanted) {
                    continue;
                }
                let record: serde_json::Value = serde_json::from_str(&line)
                    .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
                if record["saga"]["id"].as_str() == Some(wanted.as_str()) {
                    return Ok(Some(record));
                }
            }
        }
        Ok(None)
    }
}

/// One part of one day, written as it is filled; nothing is visible under
/// its name until [`DayWriter::finish`].
pub struct DayWriter {
    upload: WriteMultipart,
    encoder: GzEncoder<Vec<u8>>,
    path: Path,
    archive: Archive,
}

impl DayWriter {
    /// Adds one record, a JSON object on one line.
    pub async fn push(&mut self, line: &str) -> Result<(), ArchiveError> {
        let io = |error| ArchiveError::Io {
            location: self.archive.location.clone(),
            error,
        };
        self.encoder.write_all(line.as_bytes()).map_err(io)?;
        self.encoder.write_all(b"\n").map_err(io)?;
        if self.encoder.get_ref().len() >= CHUNK {
            // Bounded memory: at most a couple of chunks in flight.
            self.upload
                .wait_for_capacity(2)
                .await
                .map_err(|e| self.archive.store_error(e))?;
            let compressed = std::mem::take(self.encoder.get_mut());
            self.upload.write(&compressed);
        }
        Ok(())
    }

    /// Completes the part: once this returns, it is stored durably. Its
    /// name, as a path or an `s3://` URL.
    pub async fn finish(mut self) -> Result<String, ArchiveError> {
        let rest = self.encoder.finish().map_err(|error| ArchiveError::Io {
            location: self.archive.location.clone(),
            error,
        })?;
        self.upload.write(&rest);
        self.upload
            .finish()
            .await
            .map_err(|e| self.archive.store_error(e))?;
        Ok(format!("{}{}", self.archive.scheme, self.path))
    }

    /// Drops what was written: nothing appears under the part's name.
    pub async fn abort(self) {
        if let Err(error) = self.upload.abort().await {
            tracing::warn!(%error, path = %self.path, "an unfinished archive part was not cleaned up");
        }
    }
}

/// The UTC day a UUIDv7 was drawn.
pub fn saga_day(id: Uuid) -> Option<NaiveDate> {
    Some(drawn_at(id)?.date_naive())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use saga_shared::config::variables;

    use super::*;

    #[test]
    fn a_saga_is_filed_under_the_day_its_id_was_drawn() {
        use chrono::{DateTime, Utc};
        let at = DateTime::parse_from_rfc3339("2026-01-31T23:59:59.900Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = crate::store::id_time::uuid_v7_floor(SystemTime::from(at));
        assert_eq!(saga_day(id), NaiveDate::from_ymd_opt(2026, 1, 31));
        assert_eq!(saga_day(Uuid::new_v4()), None);
    }

    #[test]
    fn the_location_is_a_folder_or_a_bucket_and_names_a_bad_one() {
        let location =
            |value: &str| ArchiveLocation::from_source(&variables(&[("ARCHIVE", value)]));
        assert_eq!(
            location("").unwrap(),
            ArchiveLocation::Folder("archive".into())
        );
        assert_eq!(
            location("/var/lib/sagas/archive").unwrap(),
            ArchiveLocation::Folder("/var/lib/sagas/archive".into())
        );
        assert_eq!(
            location("s3://books/sagas").unwrap(),
            ArchiveLocation::Bucket("s3://books/sagas".into())
        );
        for bad in ["s3://", "gs://bucket", "http://x"] {
            let error = location(bad).unwrap_err().to_string();
            assert!(error.contains("ARCHIVE"), "{bad}: {error}");
        }
    }

    #[tokio::test]
    async fn a_day_written_twice_keeps_both_parts_and_finds_either() {
        let folder = std::env::temp_dir().join(format!("archive-test-{}", Uuid::new_v4()));
        let archive = Archive::open(&ArchiveLocation::Folder(folder.clone())).unwrap();
        let first = Uuid::now_v7();
        let second = Uuid::now_v7();
        let day = saga_day(first).unwrap();
        for id in [first, second] {
            let mut writer = archive.writer(Kind::Sagas, day).await.unwrap();
            writer
                .push(&serde_json::json!({"saga": {"id": id}}).to_string())
                .await
                .unwrap();
            writer.finish().await.unwrap();
        }
        assert!(folder.join(format!("sagas/{day}.jsonl.gz")).exists());
        assert!(folder.join(format!("sagas/{day}.2.jsonl.gz")).exists());
        for id in [first, second] {
            let found = archive.find_saga(id).await.unwrap().unwrap();
            assert_eq!(found["saga"]["id"], id.to_string());
        }
        assert!(archive.find_saga(Uuid::now_v7()).await.unwrap().is_none());
        // An aborted part leaves nothing under its name.
        let mut writer = archive.writer(Kind::Sagas, day).await.unwrap();
        writer.push("{}").await.unwrap();
        writer.abort().await;
        assert!(!folder.join(format!("sagas/{day}.3.jsonl.gz")).exists());
        std::fs::remove_dir_all(folder).unwrap();
    }
}
