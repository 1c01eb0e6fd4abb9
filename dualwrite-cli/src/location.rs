//! Where a queue or a stage source is: the URLs the tool accepts.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A store the tool can be pointed at, parsed from a URL.
///
/// | URL | meaning |
/// |---|---|
/// | `sqlite:/var/lib/orders/queue.db`, `sqlite://relative.db`, `sqlite:///absolute.db` | a SQLite file |
/// | `postgres://..`, `postgresql://..` | PostgreSQL: a record store of `backfill`, `verify`, `repair`, or the database of a shared queue and its stage (feature `postgres`) |
/// | `mysql://..`, `mariadb://..` | MySQL or MariaDB: the same (feature `mysql`) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(String),
    /// A MySQL or MariaDB database.
    Mysql(String),
}

/// A URL the tool does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{url}` is not a store URL: {problem}")]
pub struct LocationError {
    /// The text given.
    pub url: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let error = |problem| LocationError {
            url: url.to_owned(),
            problem,
        };
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(error(
                "expected a scheme, as in `sqlite:/var/lib/app/dualwrite.db`",
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                // `sqlite://x` is relative (as sqlx reads it), `sqlite:///x`
                // absolute, `sqlite:x` whatever `x` is.
                let path = rest.strip_prefix("//").unwrap_or(rest);
                let path = path.split_once('?').map_or(path, |(path, _)| path);
                if path.is_empty() || path == ":memory:" {
                    return Err(error(
                        "a SQLite URL needs the path of a file, as in `sqlite:/var/lib/app/dualwrite.db`",
                    ));
                }
                Ok(Location::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" => Ok(Location::Postgres(url.to_owned())),
            "mysql" | "mariadb" => Ok(Location::Mysql(url.to_owned())),
            _ => Err(error(
                "unknown scheme; expected `sqlite:`, `postgres://` or `mysql://`",
            )),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Location::Postgres(url) | Location::Mysql(url) => f.write_str(&redacted(url)),
        }
    }
}

/// `url` without the password of its user-info part, for messages.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_a_path() {
        assert_eq!(
            "sqlite:/var/q.db".parse(),
            Ok(Location::Sqlite("/var/q.db".into()))
        );
        assert_eq!(
            "sqlite:///var/q.db".parse(),
            Ok(Location::Sqlite("/var/q.db".into()))
        );
        assert_eq!(
            "sqlite://q.db?mode=rwc".parse(),
            Ok(Location::Sqlite("q.db".into()))
        );
        assert_eq!("SQLite:q.db".parse(), Ok(Location::Sqlite("q.db".into())));
    }

    #[test]
    fn malformed_urls_say_what_is_expected() {
        let error = "queue.db".parse::<Location>().unwrap_err();
        assert!(error.to_string().contains("expected a scheme"), "{error}");
        let error = "sqlite:".parse::<Location>().unwrap_err();
        assert!(error.to_string().contains("needs the path"), "{error}");
        let error = "redis://x".parse::<Location>().unwrap_err();
        assert!(error.to_string().contains("unknown scheme"), "{error}");
    }

    #[test]
    fn passwords_never_reach_messages() {
        let location: Location = "postgres://app:secret@db:5432/orders".parse().unwrap();
        assert_eq!(location.to_string(), "postgres://app:***@db:5432/orders");
    }
}
