//! The embedded default: with no Redis configured, meetingd runs its own
//! `redis-server` on a private Unix socket in its data directory, with
//! append-only persistence fsynced as `redis.durability` promises (by
//! default before every reply: `appendfsync always`), restarts it if it
//! dies and stops it when the daemon stops. For a laptop or a demo;
//! production points `redis.url` at a Redis of its own.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::config::EmbeddedConfig;

/// Why the embedded Redis could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No redis-server binary.
    #[error(
        "{0} not found: install Redis (Debian: apt-get install redis-server), set embedded.redis_server to its path, or point redis.url at a running Redis"
    )]
    NotInstalled(String),
    /// Another redis-server answers on our socket.
    #[error(
        "a redis-server is already running on {0}; is another meetingd using this data directory?"
    )]
    InUse(PathBuf),
    /// It did not come up.
    #[error("the embedded redis-server did not start: {0}")]
    Start(String),
}

/// The supervised redis-server.
pub struct EmbeddedRedis {
    url: String,
    stop: CancellationToken,
    supervisor: tokio::task::JoinHandle<()>,
}

impl EmbeddedRedis {
    /// Start redis-server in `config.data_dir` and wait until it answers.
    pub async fn start(config: &EmbeddedConfig) -> Result<EmbeddedRedis, EmbeddedError> {
        let binary = find_binary(&config.redis_server).ok_or_else(|| {
            EmbeddedError::NotInstalled(config.redis_server.display().to_string())
        })?;
        std::fs::create_dir_all(&config.data_dir)
            .and_then(|()| {
                std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| {
                EmbeddedError::Start(format!(
                    "cannot make its data directory {}: {e}; set embedded.data_dir \
                     (MEETINGD_EMBEDDED__DATA_DIR) to a directory this user may write, or point \
                     redis.url at a running Redis",
                    config.data_dir.display()
                ))
            })?;
        let socket = config.data_dir.join("redis.sock");
        if socket.exists() {
            if answers(&socket) {
                return Err(EmbeddedError::InUse(socket));
            }
            let _ = std::fs::remove_file(&socket);
        }
        let spawner = Spawner {
            binary,
            dir: config.data_dir.clone(),
            socket: socket.clone(),
            appendfsync: config.durability.appendfsync(),
        };
        let child = spawner
            .spawn()
            .map_err(|e| EmbeddedError::Start(e.to_string()))?;
        wait_until_ready(&socket, Duration::from_secs(60))
            .await
            .map_err(EmbeddedError::Start)?;
        tracing::info!(dir = %config.data_dir.display(), "the embedded redis-server is up");
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(spawner, child, stop.clone()));
        Ok(EmbeddedRedis {
            url: format!("redis+unix://{}", socket.display()),
            stop,
            supervisor,
        })
    }

    /// The URL the store connects to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stop redis-server (SIGTERM: it finishes its AOF) and wait for it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.supervisor.await;
    }
}

/// How to start the server, again and again.
struct Spawner {
    binary: PathBuf,
    dir: PathBuf,
    socket: PathBuf,
    /// Its `appendfsync`, from the promise it keeps.
    appendfsync: &'static str,
}

impl Spawner {
    fn spawn(&self) -> std::io::Result<Child> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&self.socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
            ])
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to
        // send SIGTERM to the child if meetingd dies (even by SIGKILL), so
        // no redis-server is left behind.
        unsafe {
            command.as_std_mut().pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        command.spawn()
    }
}

/// Restart the server whenever it exits, until told to stop.
async fn supervise(spawner: Spawner, mut child: Child, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            status = child.wait() => {
                let how = match &status {
                    Ok(status) => status.to_string(),
                    Err(err) => err.to_string(),
                };
                tracing::error!("the embedded redis-server exited ({how}); restarting it");
                let _ = std::fs::remove_file(&spawner.socket);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                match spawner.spawn() {
                    Ok(new) => {
                        child = new;
                        if wait_until_ready(&spawner.socket, Duration::from_secs(60)).await.is_ok() {
                            tracing::info!("the embedded redis-server is back");
                            backoff = Duration::from_millis(200);
                        }
                    }
                    Err(err) => tracing::error!("cannot start redis-server: {err}"),
                }
            }
            _ = stop.cancelled() => {
                terminate(&mut child).await;
                let _ = std::fs::remove_file(&spawner.socket);
                return;
            }
        }
    }
}

/// SIGTERM, then SIGKILL after 10 s.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: sending a signal to our own child by its pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        tracing::warn!("redis-server did not stop in 10 s; killing it");
        let _ = child.kill().await;
    }
}

/// `redis-server`, or a path: where it is, if it is there.
fn find_binary(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether something answers PONG on the socket.
fn answers(socket: &Path) -> bool {
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream
            .read(&mut reply)
            .is_ok_and(|n| reply[..n].starts_with(b"+PONG"))
}

async fn wait_until_ready(socket: &Path, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let probe = socket.to_path_buf();
        if tokio::task::spawn_blocking(move || answers(&probe))
            .await
            .unwrap_or(false)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no answer on {} after {:?} (see redis.log beside it)",
                socket.display(),
                limit
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
