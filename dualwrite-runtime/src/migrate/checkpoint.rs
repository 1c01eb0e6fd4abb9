//! Where a backfill or verify records how far it got, so that a killed run
//! resumes there: a small JSON file, replaced atomically.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::MigrateError;

#[derive(Serialize, Deserialize)]
struct Stored<T> {
    /// `backfill` or `verify`.
    task: String,
    /// The stores the task runs between; a checkpoint of another job is
    /// refused rather than resumed.
    job: String,
    finished: bool,
    state: T,
}

/// One task's checkpoint file, written at most once per `every`.
pub(crate) struct Checkpoint {
    path: Option<PathBuf>,
    task: &'static str,
    job: String,
    every: Duration,
    saved: Instant,
}

impl Checkpoint {
    pub(crate) fn new(
        path: Option<&Path>,
        task: &'static str,
        job: String,
        every: Duration,
    ) -> Self {
        Checkpoint {
            path: path.map(Path::to_path_buf),
            task,
            job,
            every,
            saved: Instant::now(),
        }
    }

    fn error(&self, path: &Path, message: impl Into<String>) -> MigrateError {
        let _ = self;
        MigrateError::Checkpoint {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// The state of an unfinished run of the same job, if the file holds one.
    ///
    /// # Errors
    ///
    /// The file cannot be read or parsed, or belongs to another task or job.
    pub(crate) fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, MigrateError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.error(path, format!("cannot be read: {error}"))),
        };
        let stored: Stored<T> = serde_json::from_slice(&text).map_err(|error| {
            self.error(
                path,
                format!("is not a dualwrite checkpoint ({error}); remove it or name another file"),
            )
        })?;
        if stored.task != self.task || stored.job != self.job {
            return Err(self.error(
                path,
                format!(
                    "belongs to a {} of {}, not this {} of {}; remove it or name another file",
                    stored.task, stored.job, self.task, self.job
                ),
            ));
        }
        Ok((!stored.finished).then_some(stored.state))
    }

    /// [`load`](Self::load), unless the caller asked to start over.
    pub(crate) fn resume<T: DeserializeOwned>(
        &self,
        restart: bool,
    ) -> Result<Option<T>, MigrateError> {
        if restart {
            Ok(None)
        } else {
            self.load()
        }
    }

    /// Whether a [`save`](Self::save) now would write the file.
    pub(crate) fn is_due(&self) -> bool {
        self.path.is_some() && self.saved.elapsed() >= self.every
    }

    /// Saves `state` if `every` has passed since the last save (always when
    /// `finished`).
    pub(crate) fn save<T: Serialize>(
        &mut self,
        state: &T,
        finished: bool,
    ) -> Result<(), MigrateError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        if !finished && self.saved.elapsed() < self.every {
            return Ok(());
        }
        let stored = Stored {
            task: self.task.to_owned(),
            job: self.job.clone(),
            finished,
            state,
        };
        let text = serde_json::to_vec_pretty(&stored)
            .map_err(|error| self.error(&path, format!("cannot be encoded: {error}")))?;
        write_atomically(&path, &text)
            .map_err(|error| self.error(&path, format!("cannot be written: {error}")))?;
        self.saved = Instant::now();
        Ok(())
    }
}

/// Writes a sibling file, syncs it, and renames it over `path`, so that a
/// crash leaves either the old checkpoint or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    if let Some(directory) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        // Makes the rename durable; not every platform can open a directory.
        if let Ok(directory) = std::fs::File::open(directory) {
            let _ = directory.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "dualwrite-checkpoint-{}-{name}.json",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn an_unfinished_run_resumes_and_a_finished_one_starts_over() {
        let path = scratch("resume");
        let mut checkpoint =
            Checkpoint::new(Some(&path), "backfill", "a -> b".into(), Duration::ZERO);
        checkpoint.save(&41u64, false).unwrap();
        assert_eq!(checkpoint.load::<u64>().unwrap(), Some(41));
        checkpoint.save(&42u64, true).unwrap();
        assert_eq!(checkpoint.load::<u64>().unwrap(), None);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_checkpoint_of_another_job_is_refused_by_name() {
        let path = scratch("other-job");
        let mut checkpoint =
            Checkpoint::new(Some(&path), "backfill", "a -> b".into(), Duration::ZERO);
        checkpoint.save(&1u64, false).unwrap();
        let other = Checkpoint::new(Some(&path), "verify", "a <-> c".into(), Duration::ZERO);
        let error = other.load::<u64>().unwrap_err().to_string();
        assert!(error.contains("belongs to a backfill of a -> b"), "{error}");
        std::fs::write(&path, "not json").unwrap();
        let error = other.load::<u64>().unwrap_err().to_string();
        assert!(error.contains("is not a dualwrite checkpoint"), "{error}");
        let _ = std::fs::remove_file(&path);
    }
}
