//! Throwaway databases for tests, here and in other crates (three-node tests): each test makes
//! its own uniquely named database on a PostgreSQL server and drops it when done.
//!
//! [`PrivateCluster`] is a whole PostgreSQL server of a test's own, for tests that stop and
//! start the database under traffic.
//!
//! Always compiled (it is small and has no dependency of its own beyond `tempfile`) so that
//! other crates' tests can use it without a feature. Test support only: nothing in Herald's
//! own code paths calls it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The admin URL of the test server: `HERALD_TEST_PG`, else
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn admin_url() -> String {
    std::env::var("HERALD_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether tests must fail rather than skip when PostgreSQL is unreachable
/// (`HERALD_REQUIRE_SERVICES=1`, set by CI).
pub fn services_required() -> bool {
    std::env::var("HERALD_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A database that exists for as long as this value does (dropped with `WITH (FORCE)`, so
/// connections left open do not keep it).
#[derive(Debug)]
pub struct ScratchDb {
    admin_url: String,
    name: String,
    url: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs one admin statement on a private runtime in its own thread, so it works from sync
/// code, from `Drop`, and from inside any tokio runtime alike.
fn admin(admin_url: &str, sql: String) -> Result<(), String> {
    let url = admin_url.to_owned();
    let run = move || -> Result<(), String> {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| format!("admin url: {e}"))?;
            cfg.connect_timeout(std::time::Duration::from_secs(3));
            let (client, conn) =
                cfg.connect(tokio_postgres::NoTls).await.map_err(|e| format!("postgres at {url}: {e}"))?;
            let driver = tokio::spawn(conn);
            let r = client.batch_execute(&sql).await.map_err(|e| format!("{sql}: {e}"));
            drop(client);
            let _ = driver.await;
            r
        })
    };
    std::thread::spawn(run).join().map_err(|_| "admin thread panicked".to_string())?
}

impl ScratchDb {
    /// Creates a uniquely named database on the server of `admin_url` (a `postgres://` URL
    /// whose user may create databases).
    pub fn create(admin_url: &str) -> Result<ScratchDb, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000_000)
            .unwrap_or(0);
        let name = format!(
            "herald_test_{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let url = with_database(admin_url, &name)?;
        admin(admin_url, format!("CREATE DATABASE \"{name}\""))?;
        Ok(ScratchDb { admin_url: admin_url.to_owned(), name, url })
    }

    /// [`ScratchDb::create`] on [`admin_url`]; `None` (after printing why) when PostgreSQL is
    /// unreachable, unless [`services_required`], then it panics: a test calls this and returns
    /// on `None`.
    #[allow(clippy::panic)]
    pub fn or_skip(test: &str) -> Option<ScratchDb> {
        match ScratchDb::create(&admin_url()) {
            Ok(db) => Some(db),
            Err(e) if services_required() => panic!("{test}: PostgreSQL is required but unusable: {e}"),
            Err(e) => {
                eprintln!("{test}: skipped, PostgreSQL unusable: {e}");
                None
            }
        }
    }

    /// The URL of this database.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if let Err(e) =
            admin(&self.admin_url, format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
        {
            eprintln!("scratch database {}: {e}", self.name);
        }
    }
}

/// A PostgreSQL cluster of a test's own: `initdb` in a temporary directory, served by
/// `pg_ctl` on a free port of 127.0.0.1 (as the `postgres` OS user when the test runs as root,
/// since PostgreSQL refuses to run as root), so that a test can crash it and start it again.
/// Dropping it stops the server and removes the directory.
#[derive(Debug)]
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivateCluster {
    /// Creates and starts the cluster. `Err` says why it cannot (no `initdb` under
    /// `/usr/lib/postgresql/*/bin`, or a tool failed, with its output): a test skips on it,
    /// or fails when [`services_required`].
    pub fn start() -> Result<PrivateCluster, String> {
        let bin = pg_bin().ok_or("no initdb under /usr/lib/postgresql/*/bin")?;
        let uid = Command::new("id").arg("-u").output().map_err(|e| format!("id -u: {e}"))?;
        let as_postgres = uid.stdout.trim_ascii() == b"0";
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        if as_postgres {
            let st = Command::new("chown").arg("postgres").arg(dir.path()).status();
            if !st.is_ok_and(|s| s.success()) {
                return Err(format!("chown postgres {} failed", dir.path().display()));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let c = PrivateCluster { dir, bin, port, as_postgres };
        let data = c.data();
        c.run("initdb", &[path_str(&data)?, "-A", "trust", "-U", "postgres", "--no-sync"], &["-D"])?;
        c.start_again()?;
        Ok(c)
    }

    /// The `postgres://` URL of its `postgres` database as the superuser, for [`ScratchDb`].
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`), and waits until it is
    /// down.
    pub fn stop_immediate(&self) -> Result<(), String> {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"])
    }

    /// Starts the server (again) on the same port and data, and waits until it accepts
    /// connections.
    pub fn start_again(&self) -> Result<(), String> {
        let log = self.dir.path().join("log");
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        self.pg_ctl(&["-l", path_str(&log)?, "-o", &opts, "-w", "start"])
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.data();
        self.run("pg_ctl", args, &["-D", path_str(&data)?])
    }

    /// Runs `tool` of the PostgreSQL binaries with `first` then `args`; `Err` with its output.
    fn run(&self, tool: &str, args: &[&str], first: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(first).args(args).output().map_err(|e| format!("{tool} {args:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
    }
}

/// The newest installed PostgreSQL's `bin` directory that has `initdb`.
fn pg_bin() -> Option<PathBuf> {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    // By major version as a number, so that 9 does not sort after 15.
    bins.sort_by_key(|b| {
        b.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    bins.pop()
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str().ok_or_else(|| format!("path {} is not UTF-8", p.display()))
}

/// `url` with its database (the path) replaced by `name`, its query kept.
fn with_database(url: &str, name: &str) -> Result<String, String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end =
        base.find("://").ok_or_else(|| format!("admin url {url:?} is not a postgres:// URL"))? + 3;
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    Ok(match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            super::with_database("postgres://u@h:5/postgres", "x").as_deref(),
            Ok("postgres://u@h:5/x")
        );
        assert_eq!(super::with_database("postgres://u@h", "x").as_deref(), Ok("postgres://u@h/x"));
        assert_eq!(
            super::with_database("postgresql://u@h/db?sslmode=disable", "x").as_deref(),
            Ok("postgresql://u@h/x?sslmode=disable")
        );
    }
}
