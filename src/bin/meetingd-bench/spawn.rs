//! Processes the bench starts for a self-contained run: a redis-server
//! (AOF everysec unless told otherwise) and a meetingd on it, each on a
//! Unix socket in a temporary directory, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The meetingd binary the bench starts (`--daemon`); default: the one
/// beside the bench.
static DAEMON: OnceLock<PathBuf> = OnceLock::new();

/// Start `binary` instead of the `meetingd` beside the bench (to compare
/// two builds with one bench).
pub fn use_daemon(binary: PathBuf) {
    let _ = DAEMON.set(binary);
}

/// A redis-server of the bench's own.
pub struct OwnRedis {
    child: Child,
    /// Its directory (socket, AOF); removed at the end.
    _dir: tempfile::TempDir,
    /// `redis+unix://...`
    pub url: String,
}

impl OwnRedis {
    /// Start it; `persist` turns on the append-only file (fsync every second).
    pub fn start(persist: bool) -> Result<OwnRedis, String> {
        OwnRedis::start_with(persist, "everysec")
    }

    /// Start it with the append-only file on or off (`persist`), fsynced
    /// as `appendfsync` says (`always`, `everysec`, `no`).
    pub fn start_with(persist: bool, appendfsync: &str) -> Result<OwnRedis, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let socket: PathBuf = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", ""])
            .args([
                "--appendonly",
                if persist { "yes" } else { "no" },
                "--appendfsync",
                appendfsync,
            ])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start redis-server ({e}); apt-get install redis-server")
            })?;
        let url = format!("redis+unix://{}", socket.display());
        wait_for(&socket, "redis-server")?;
        Ok(OwnRedis {
            child,
            _dir: dir,
            url,
        })
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A meetingd of the bench's own: the `meetingd` binary beside this one
/// (or the one `--daemon` names).
pub struct OwnDaemon {
    child: Child,
    _dir: tempfile::TempDir,
    /// Its control socket.
    pub socket: PathBuf,
}

impl OwnDaemon {
    /// Start it on `redis_url`.
    pub fn start(redis_url: &str) -> Result<OwnDaemon, String> {
        OwnDaemon::start_with(redis_url, &[])
    }

    /// Start it on `redis_url` with settings as environment variables.
    pub fn start_with(redis_url: &str, env: &[(&str, &str)]) -> Result<OwnDaemon, String> {
        let binary = match DAEMON.get() {
            Some(binary) => binary.clone(),
            None => std::env::current_exe()
                .map_err(|e| e.to_string())?
                .with_file_name("meetingd"),
        };
        if !binary.exists() {
            return Err(format!(
                "{} is missing: cargo build --release --bins",
                binary.display()
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let socket = dir.path().join("meetingd.sock");
        let child = Command::new(&binary)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--redis")
            .arg(redis_url)
            // no cron tick in the middle of a measurement
            .env("MEETINGD_SCHEDULER__CRON", "0 0 0 1 1 *")
            .env("MEETINGD_LOG__LEVEL", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        wait_for(&socket, "meetingd")?;
        Ok(OwnDaemon {
            child,
            _dir: dir,
            socket,
        })
    }

    /// The daemon's process id (for its memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(socket: &Path, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not start on {}", socket.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
