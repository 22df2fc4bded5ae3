//! Real SQL databases for the archive's tests, each started by the test in
//! a temporary directory and stopped when its handle drops: SQLite (a
//! file, read back with the `sqlite3` tool), PostgreSQL (initdb and
//! pg_ctl on a Unix socket, no TCP; run as the `postgres` user when the
//! tests run as root, since PostgreSQL refuses root) and MariaDB
//! (mariadb-install-db and mariadbd on a socket, `--skip-networking`).
//! Rows are read back with each database's own client, as text.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A database the archive can write to.
pub trait ArchiveDb {
    /// `archive.url` for it.
    fn url(&self) -> String;
    /// The rows of `sql`, each as its columns joined by `|`.
    fn rows(&self, sql: &str) -> Vec<String>;
}

/// A database server that can be stopped and started again.
pub trait Server: ArchiveDb {
    /// Stop it.
    fn stop(&mut self);
    /// Start it again.
    fn start_again(&mut self);
}

impl Server for Postgres {
    fn stop(&mut self) {
        Postgres::stop(self);
    }

    fn start_again(&mut self) {
        Postgres::start_again(self);
    }
}

impl Server for Mariadb {
    fn stop(&mut self) {
        Mariadb::stop(self);
    }

    fn start_again(&mut self) {
        Mariadb::start_again(self);
    }
}

fn output(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(text: &str, separator: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.replace(separator, "|"))
        .collect()
}

/// A SQLite archive: a file in a temporary directory.
pub struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    /// A directory for a new file.
    pub fn new() -> Sqlite {
        Sqlite {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("archive.sqlite")
    }
}

impl ArchiveDb for Sqlite {
    fn url(&self) -> String {
        format!("sqlite://{}", self.path().display())
    }

    fn rows(&self, sql: &str) -> Vec<String> {
        let text = output(
            Command::new("sqlite3")
                .arg("-separator")
                .arg("|")
                .arg("-cmd")
                .arg(".timeout 5000")
                .arg(self.path())
                .arg(sql),
            "sqlite3",
        );
        lines(&text, "|")
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as `user` when the tests run as root.
fn as_user(user: &str, program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.arg("-u").arg(user).arg("--").arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A PostgreSQL server of the test's own, on a Unix socket.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    running: bool,
}

impl Postgres {
    /// initdb and start.
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (apt-get install postgresql)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql");
        let dir = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let name = std::ffi::CString::new("postgres").expect("a name");
            // SAFETY: getpwnam reads a NUL-terminated name; the entry is
            // copied out at once.
            let entry = unsafe { libc::getpwnam(name.as_ptr()) };
            assert!(!entry.is_null(), "a postgres user (the package makes it)");
            // SAFETY: checked not null just above.
            let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        output(
            as_user("postgres", &bin.join("initdb"))
                .arg("-D")
                .arg(dir.path().join("data"))
                .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
                .arg("--locale=C"),
            "initdb",
        );
        let mut pg = Postgres {
            bin,
            dir,
            running: false,
        };
        pg.start_again();
        pg
    }

    /// Start the stopped server.
    pub fn start_again(&mut self) {
        let options = format!(
            "-k {} -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.dir.path().display()
        );
        output(
            as_user("postgres", &self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-l")
                .arg(self.dir.path().join("log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
            "pg_ctl start",
        );
        self.running = true;
    }

    /// Stop it (fast: connections are closed).
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let _ = as_user("postgres", &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-w", "-t", "60", "-m", mode, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.running = false;
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
    }
}

impl ArchiveDb for Postgres {
    fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost/postgres?host={}",
            self.dir.path().display()
        )
    }

    fn rows(&self, sql: &str) -> Vec<String> {
        let text = output(
            Command::new(self.bin.join("psql"))
                .arg("-h")
                .arg(self.dir.path())
                .args([
                    "-U", "postgres", "-d", "postgres", "-X", "-A", "-t", "-F", "|",
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-c", sql]),
            "psql",
        );
        lines(&text, "|")
    }
}

/// A MariaDB server of the test's own, on a Unix socket, no networking.
pub struct Mariadb {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mariadb {
    /// mariadb-install-db, start, and create the database `archive`.
    pub fn start() -> Mariadb {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if is_root() {
            install.arg("--user=root");
        }
        output(&mut install, "mariadb-install-db");
        let mut db = Mariadb { dir, child: None };
        db.start_again();
        db.client(&["-e", "CREATE DATABASE IF NOT EXISTS archive"]);
        db
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadb.sock")
    }

    /// Start the stopped server; wait until it answers.
    pub fn start_again(&mut self) {
        let d = self.dir.path();
        let mut command = Command::new("mariadbd");
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", d.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .args([
                "--skip-networking",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=0",
            ]);
        if is_root() {
            command.arg("--user=root");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts (apt-get install mariadb-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("mariadb")
                .args(["--no-defaults", "-u", "root", "-S"])
                .arg(self.socket())
                .args(["-e", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not answer: {}",
                std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop it (SIGTERM, and wait).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a signal to our own child, by its pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    fn client(&self, args: &[&str]) -> String {
        output(
            Command::new("mariadb")
                .args(["--no-defaults", "-u", "root", "-N", "-B", "-S"])
                .arg(self.socket())
                .args(args),
            "mariadb",
        )
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ArchiveDb for Mariadb {
    fn url(&self) -> String {
        format!(
            "mysql://root@localhost/archive?socket={}",
            self.socket().display()
        )
    }

    fn rows(&self, sql: &str) -> Vec<String> {
        let sql = format!("SET time_zone = '+00:00'; {sql}");
        lines(&self.client(&["archive", "-e", &sql]), "\t")
    }
}
