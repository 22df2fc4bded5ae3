//! The control socket: a listener that accepts local clients up to a limit,
//! and per connection a handler that reads request lines ahead
//! (pipelining), applies them in order and writes the replies in request
//! order. Connections run concurrently; their Redis calls share the
//! store's multiplexed connection, which pipelines them.
//!
//! What one client does never stops the listener or slows the others: an
//! over-long line gets `too_large` and its connection closes, an idle
//! connection is closed after the idle timeout, a connection over the limit
//! gets `unavailable` and is closed at once. Admin rights come from the
//! peer's credentials (SO_PEERCRED), read once per connection; so does the
//! uid whose connections are counted: one uid may hold a share of the
//! slots only, and a few are kept for admins, so one local client cannot
//! lock the others out. Out of file descriptors, a client still gets
//! `unavailable` (a spare descriptor is given up for it). Requests are
//! parsed by `protocol` and applied by `cmd`; no Redis here.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use std::collections::VecDeque;

use futures_util::future::{BoxFuture, FutureExt, OptionFuture};
use std::task::{Poll, ready};

use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cmd::{self, Context, Limits, Outcome, Peer, Plan};
use crate::error::Code;
use crate::protocol::{self, Request};
use crate::stats::{Refusal, Stats};
use crate::store::Call;
use crate::watch::{Next, Watcher};

/// How the socket behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the socket lives.
    pub socket: PathBuf,
    /// Its permission bits (0660 by default: the owner and the group).
    pub socket_mode: u32,
    /// The longest request line, in bytes (without its newline).
    pub max_line: usize,
    /// Most clients at once.
    pub max_connections: usize,
    /// Most clients of one uid at once; admins are exempt.
    pub max_connections_per_uid: usize,
    /// Slots of `max_connections` only admins may take.
    pub admin_reserved_connections: usize,
    /// A connection with nothing in flight and nothing sent for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// Most requests of one connection in flight at once; past it the
    /// daemon stops reading that connection until replies went out.
    pub pipeline_depth: usize,
    /// Peers with these uids may use admin commands (besides root and the
    /// daemon's own uid).
    pub admin_uids: Vec<u32>,
    /// Peers whose primary gid is one of these may use admin commands.
    pub admin_gids: Vec<u32>,
    /// The kernel send buffer of a watching connection, in bytes (0: the
    /// system's default). With the watch ring it bounds what a watcher
    /// that stopped reading holds, and how soon it is dropped.
    pub watch_send_buffer: usize,
}

impl ServerConfig {
    /// The defaults of the spec, on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ServerConfig {
            socket: socket.into(),
            socket_mode: 0o660,
            max_line: 64 * 1024,
            max_connections: 1024,
            max_connections_per_uid: 256,
            admin_reserved_connections: 16,
            idle_timeout: Duration::from_secs(300),
            pipeline_depth: 256,
            admin_uids: Vec::new(),
            admin_gids: Vec::new(),
            watch_send_buffer: 64 * 1024,
        }
    }
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A live daemon answers on the path.
    #[error("another meetingd is already serving on {0}; stop it first or choose another --socket")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error(
        "{0} exists and is not a socket; refusing to replace it: choose another socket.path (--socket)"
    )]
    NotASocket(PathBuf),
    /// The socket's directory does not exist, and is not the daemon's own
    /// to create.
    #[error(
        "cannot listen on {path}: its directory {dir} does not exist; create it, or choose another socket.path (--socket)"
    )]
    NoDirectory {
        /// The socket path.
        path: PathBuf,
        /// Its missing directory.
        dir: PathBuf,
    },
    /// The daemon's own runtime directory could not be made.
    #[error(
        "cannot create {dir} for the socket: {source}; run meetingd as root or under systemd (RuntimeDirectory=meetingd makes it), or choose a socket.path elsewhere (--socket)"
    )]
    RuntimeDirectory {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The socket's directory is there, closed to the daemon's user.
    #[error(
        "cannot listen on {path}: {source}: this user (uid {uid}) may not create files in {dir}; run meetingd as the directory's owner (under systemd, RuntimeDirectory=meetingd gives the daemon's user its own), or choose a socket.path in a directory it may write (--socket)",
        uid = current_uid()
    )]
    NotWritable {
        /// The socket path.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Anything else.
    #[error("cannot listen on {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

/// The uid this process runs as.
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The directory of the default socket path, the daemon's own: created
/// when missing (systemd's RuntimeDirectory= makes it under the unit).
pub const RUNTIME_DIR: &str = "/run/meetingd";

/// Whether `dir` is the daemon's own runtime directory, which it may
/// create: /run/meetingd, or one systemd named in `$RUNTIME_DIRECTORY`.
fn own_runtime_dir(dir: &std::path::Path) -> bool {
    dir == std::path::Path::new(RUNTIME_DIR)
        || std::env::var_os("RUNTIME_DIRECTORY")
            .is_some_and(|dirs| std::env::split_paths(&dirs).any(|d| d.as_path() == dir))
}

/// Bind the socket: remove a stale socket file first, but only if nothing
/// answers on it; set its mode. A missing directory is made only when it
/// is the daemon's own runtime directory; anywhere else it is an error
/// that names it.
pub fn bind(config: &ServerConfig) -> Result<UnixListener, BindError> {
    let path = &config.socket;
    let io_err = |source| BindError::Io {
        path: path.clone(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(path.clone()));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.clone())),
            Err(_) => {
                tracing::info!(path = %path.display(), "removing a stale socket file");
                std::fs::remove_file(path).map_err(io_err)?;
            }
        }
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            if !own_runtime_dir(parent) {
                return Err(BindError::NoDirectory {
                    path: path.clone(),
                    dir: parent.to_path_buf(),
                });
            }
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(parent)
                .map_err(|source| BindError::RuntimeDirectory {
                    dir: parent.to_path_buf(),
                    source,
                })?;
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| {
        if source.kind() == io::ErrorKind::PermissionDenied {
            BindError::NotWritable {
                path: path.clone(),
                dir: path
                    .parent()
                    .unwrap_or(std::path::Path::new("/"))
                    .to_path_buf(),
                source,
            }
        } else {
            io_err(source)
        }
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode))
        .map_err(io_err)?;
    Ok(listener)
}

/// What may change while the daemon runs (a reload sends a new one):
/// read at every accept, so a change applies to new connections.
#[derive(Clone)]
pub struct Live {
    /// Per-connection settings.
    pub server: Arc<ServerConfig>,
    /// Page and text limits.
    pub limits: Limits,
}

/// Accept clients until `shutdown`; each connection is tracked by
/// `tracker`, so the caller can wait for them to finish their requests.
pub async fn run(
    listener: UnixListener,
    live: watch::Receiver<Live>,
    ctx: Context,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Slots::default());
    let mut spare = Spare::open();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own_uid = unsafe { libc::geteuid() };
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) if out_of_descriptors(&err) => {
                    if spare.refuse_one(&listener) {
                        ctx.stats.connection_refused(Refusal::FileDescriptors);
                        tracing::warn!(
                            "out of file descriptors ({err}): a client got unavailable and was closed; raise LimitNOFILE (ulimit -n) or lower socket.max_connections"
                        );
                    } else {
                        tracing::warn!(
                            "out of file descriptors ({err}), and no spare one to refuse the client with: accepting again in 100 ms"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
                Err(err) => {
                    tracing::warn!("accept failed ({err}): accepting again in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let current = live.borrow().clone();
        let peer = peer_of(&stream, own_uid, &current.server);
        let slot = match slots.take(&peer, &current.server) {
            Ok(slot) => slot,
            Err((why, message)) => {
                ctx.stats.connection_refused(why);
                tracing::debug!(
                    uid = peer.uid,
                    reason = why.as_str(),
                    "refused a connection"
                );
                tracker.spawn(refuse(stream, message));
                continue;
            }
        };
        let mut ctx = ctx.clone();
        ctx.limits = current.limits;
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            ctx.stats.connection_opened();
            if let Err(err) = handle(stream, peer, &ctx, &current.server, &shutdown).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            ctx.stats.connection_closed();
            drop(slot);
        });
    }
}

/// Whether an accept failed for want of file descriptors (the process'
/// or the system's).
fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A file descriptor held in reserve: when accept fails for want of
/// descriptors, the client waiting in the backlog would wait there, its
/// connect long done, until one is freed. Closing the spare lets the daemon
/// accept it, tell it `unavailable` and close it; then the spare is taken
/// back.
struct Spare(Option<std::fs::File>);

impl Spare {
    fn open() -> Spare {
        Spare(std::fs::File::open("/dev/null").ok())
    }

    /// Refuse the client waiting (if it still is) with the spare's
    /// descriptor; false when there was no spare (it is tried again).
    fn refuse_one(&mut self, listener: &UnixListener) -> bool {
        if self.0.take().is_none() {
            *self = Spare::open();
            return false;
        }
        if let Some(Ok((stream, _))) = listener.accept().now_or_never() {
            let line = protocol::error_line(
                Code::Unavailable,
                "the daemon is out of file descriptors; try again later",
            );
            // a new socket's buffer is empty: the line fits, no waiting
            if let Ok(mut stream) = stream.into_std() {
                use std::io::Write;
                let _ = stream.write(&line);
            }
        }
        *self = Spare::open();
        true
    }
}

/// The peer of `stream`: admins are root, the daemon's own uid, and the
/// configured uids and gids (who are also exempt from the per-uid limit
/// and the admins' reserve).
fn peer_of(stream: &UnixStream, own_uid: u32, config: &ServerConfig) -> Peer {
    match stream.peer_cred() {
        Ok(cred) => Peer {
            uid: cred.uid(),
            admin: cred.uid() == 0
                || cred.uid() == own_uid
                || config.admin_uids.contains(&cred.uid())
                || config.admin_gids.contains(&cred.gid()),
        },
        Err(err) => {
            tracing::warn!("cannot read the peer's credentials ({err}); not an admin");
            Peer {
                uid: u32::MAX,
                admin: false,
            }
        }
    }
}

/// The connections open now, in all and per uid. Limits are read from the
/// configuration at every accept, so a reload applies to the next client
/// (connections open over a lowered limit stay).
#[derive(Default)]
struct Slots {
    counts: std::sync::Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    open: usize,
    by_uid: std::collections::HashMap<u32, usize>,
}

/// A connection's place, given back when it drops.
struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for `peer`, or why not and the message it gets: admins may
    /// take any slot; anybody else not one of the admins' reserve, and not
    /// more than the per-uid limit.
    fn take(
        self: &Arc<Self>,
        peer: &Peer,
        config: &ServerConfig,
    ) -> Result<Slot, (Refusal, String)> {
        let max = config.max_connections;
        let mut counts = self.counts();
        if counts.open >= max {
            return Err((
                Refusal::MaxConnections,
                format!("too many connections (socket.max_connections is {max}); try again later"),
            ));
        }
        let of_uid = counts.by_uid.get(&peer.uid).copied().unwrap_or(0);
        if !peer.admin {
            let open_to_all = max.saturating_sub(config.admin_reserved_connections);
            if counts.open >= open_to_all {
                return Err((
                    Refusal::AdminReserve,
                    format!(
                        "too many connections: the {open_to_all} of socket.max_connections ({max}) \
                         open to users who are not admins are taken, the rest are kept for admins \
                         (socket.admin_reserved_connections); try again later"
                    ),
                ));
            }
            let cap = config.max_connections_per_uid;
            if of_uid >= cap {
                return Err((
                    Refusal::PerUid,
                    format!(
                        "too many connections from uid {} (socket.max_connections_per_uid is \
                         {cap}); close one, or try again later",
                        peer.uid
                    ),
                ));
            }
        }
        counts.open += 1;
        counts.by_uid.insert(peer.uid, of_uid + 1);
        Ok(Slot {
            slots: self.clone(),
            uid: peer.uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts();
        counts.open = counts.open.saturating_sub(1);
        if let std::collections::hash_map::Entry::Occupied(mut entry) =
            counts.by_uid.entry(self.uid)
        {
            if *entry.get() <= 1 {
                entry.remove();
            } else {
                *entry.get_mut() -= 1;
            }
        }
    }
}

async fn refuse(mut stream: UnixStream, message: String) {
    let line = protocol::error_line(Code::Unavailable, &message);
    let _ = stream.write_all(&line).await;
    let _ = stream.shutdown().await;
}

/// A reply on its way out.
struct Reply {
    line: Vec<u8>,
    /// Close the connection once this reply is written (QUIT, too_large).
    close: bool,
    /// WATCH: once this reply is out, the connection streams the watcher's
    /// entries.
    watch: Option<Watcher>,
}

impl Reply {
    fn line(line: Vec<u8>) -> Reply {
        Reply {
            line,
            close: false,
            watch: None,
        }
    }
}

/// Entries a watching connection writes per batch (then it flushes).
const WATCH_BATCH: usize = 256;

/// How many bytes of requests a connection reads ahead of its replies (a
/// line of the longest length always fits): with the pipeline depth, what
/// a client that sends without reading can make the daemon hold.
const READ_AHEAD_BYTES: usize = 256 * 1024;

/// A request read but not yet run.
enum Pending {
    Line(BytesMut),
    TooLong,
}

impl Pending {
    /// The bytes it holds.
    fn len(&self) -> usize {
        match self {
            Pending::Line(line) => line.len(),
            Pending::TooLong => 0,
        }
    }
}

/// What a connection does next: the replies of a batch of requests sent
/// together, or of one request run alone.
type Step = BoxFuture<'static, Vec<Reply>>;

/// A request of a batch.
enum Item {
    /// Answered without Redis.
    Done {
        command: &'static str,
        result: Result<Outcome, cmd::CmdError>,
        close: bool,
    },
    /// Its result comes from the batch's next call.
    Call { command: &'static str },
}

/// A request that must run alone, planned while a batch was being made:
/// it is the next step.
struct Held {
    command: &'static str,
    close: bool,
    work: BoxFuture<'static, Result<Outcome, cmd::CmdError>>,
}

/// Serve one connection. Requests are read ahead (pipelining) up to the
/// pipeline depth and a few hundred KiB. Those read together go to Redis
/// together (up to one request whose reply may be big): every request
/// that is one library call (JOIN, LEAVE, POST, MESSAGES, ...) is sent in
/// one pipeline with its neighbours, in order, and Redis applies them in
/// that order, so a request sees the effects of every request sent before
/// it on the connection (a POST pipelined after its JOIN finds the user
/// in). A request that needs more (a first JOIN of a user the daemon does
/// not know yet, ACTIVE, a tick...) runs alone, in its turn. Replies go out
/// in request order.
async fn handle(
    stream: UnixStream,
    peer: Peer,
    ctx: &Context,
    config: &ServerConfig,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let (read, write) = stream.into_split();
    let mut requests = Input::new(read, config.max_line, &ctx.stats);
    let mut writer = Output::new(write, &ctx.stats);
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut queued_bytes = 0usize;
    let read_ahead = READ_AHEAD_BYTES.max(config.max_line + 2);
    let mut held: Option<Held> = None;
    let mut running: Option<Step> = None;
    let mut watching: Option<Watcher> = None;
    let mut reading = true;
    loop {
        if running.is_none() {
            running = if watching.is_some() {
                // while watching, the connection answers the few requests
                // it reads itself, at once
                queue.pop_front().map(|pending| {
                    queued_bytes = queued_bytes.saturating_sub(pending.len());
                    let reply = match pending {
                        Pending::Line(line) => answer_watching(&line, &mut watching, ctx),
                        Pending::TooLong => finish(
                            "(unparsed)",
                            Err(too_long_error(config)),
                            std::time::Instant::now(),
                            ctx,
                            true,
                        ),
                    };
                    async move { vec![reply] }.boxed()
                })
            } else {
                let before = queue.len();
                let step = next_step(&mut queue, &mut held, &peer, ctx, config);
                if queue.len() < before {
                    queued_bytes = queue.iter().map(Pending::len).sum();
                }
                step
            };
        }
        if running.is_none() && queue.is_empty() {
            // nothing to do but wait (a watching connection mostly waits):
            // the buffers go back until bytes come
            requests.release();
            writer.release();
        }
        if !reading && running.is_none() {
            if let Some(watcher) = watching.as_ref().filter(|_| shutdown.is_cancelled()) {
                // the daemon stops: tell the watcher where to resume
                let resume = watcher.position().map(|id| id.to_string());
                let line = protocol::closing_line(resume.as_deref());
                writer.write_all(&line).await?;
            }
            writer.flush().await?;
            return Ok(());
        }
        tokio::select! {
            biased;
            Some(replies) = OptionFuture::from(running.as_mut()), if running.is_some() => {
                running = None;
                // a client that stops reading its replies holds them, its
                // connection and its slot: not for longer than the idle
                // timeout
                let written = tokio::time::timeout(
                    config.idle_timeout,
                    write_replies(&mut writer, replies, &mut watching, config),
                )
                .await;
                match written {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => return Ok(()),
                    Ok(Err(err)) => return Err(err),
                    Err(_) => {
                        tracing::debug!("closing a connection whose replies do not drain");
                        return Ok(());
                    }
                }
            }
            next = next_entries(&mut watching), if watching.is_some() => {
                let notice = match next {
                    Next::Items(items) => {
                        // while the client does not read, keep taking entries
                        // off the ring: falling a ring behind drops it
                        let write = write_items(&mut writer, &items);
                        tokio::pin!(write);
                        let stalled = tokio::time::sleep(config.idle_timeout);
                        tokio::pin!(stalled);
                        let mut notice = None;
                        loop {
                            tokio::select! {
                                biased;
                                written = &mut write => {
                                    written?;
                                    break;
                                }
                                dropped = absorb(&mut watching), if notice.is_none() => {
                                    notice = Some(dropped);
                                }
                                _ = &mut stalled => {
                                    tracing::debug!("closing a watching connection that does not read");
                                    return Ok(());
                                }
                                _ = shutdown.cancelled() => return Ok(()),
                            }
                        }
                        notice
                    }
                    dropped => Some(dropped),
                };
                if let Some(Next::Dropped { count, resume }) = notice {
                    let resume = resume.map(|id| id.to_string());
                    let line = protocol::dropped_line(count, resume.as_deref());
                    // back to request mode: the client resumes with
                    // WATCH ... AFTER <resume>
                    writer.write_all(&line).await?;
                    writer.flush().await?;
                    watching = None;
                }
            }
            frame = requests.next(), if reading && queue.len() < config.pipeline_depth && queued_bytes < read_ahead => {
                let mut frame = Some(frame?);
                while let Some(next) = frame {
                    match next {
                        Some(Frame::Line(line)) => {
                            queued_bytes += line.len();
                            queue.push_back(Pending::Line(line));
                        }
                        Some(Frame::TooLong) => {
                            queue.push_back(Pending::TooLong);
                            reading = false;
                        }
                        Some(Frame::Partial) => ctx.stats.partial_line(),
                        None => reading = false,
                    }
                    // the other lines the same read brought (decoded from
                    // the buffer, no waiting) join this step, so that
                    // requests sent together go to Redis together
                    frame = if reading
                        && queue.len() < config.pipeline_depth
                        && queued_bytes < read_ahead
                    {
                        match requests.buffered()? {
                            Read::Frame(frame) => Some(Some(frame)),
                            Read::End => Some(None),
                            Read::Later => None,
                        }
                    } else {
                        None
                    };
                }
            }
            _ = tokio::time::sleep(config.idle_timeout), if running.is_none() && queue.is_empty() && watching.is_none() => {
                tracing::debug!("closing an idle connection");
                return Ok(());
            }
            _ = shutdown.cancelled(), if reading => {
                // Draining: answer what the client sent already (whatever
                // is in the socket now), then close.
                while let Read::Frame(frame) = requests.buffered()? {
                    match frame {
                        Frame::Line(line) => {
                            queued_bytes += line.len();
                            queue.push_back(Pending::Line(line));
                        }
                        Frame::TooLong => {
                            queue.push_back(Pending::TooLong);
                            break;
                        }
                        Frame::Partial => ctx.stats.partial_line(),
                    }
                }
                reading = false;
            }
        }
    }
}

/// Write a step's replies and flush them; false when the connection is to
/// close (QUIT, too_large). A WATCH's reply turns the connection to
/// watching.
async fn write_replies(
    writer: &mut Output,
    replies: Vec<Reply>,
    watching: &mut Option<Watcher>,
    config: &ServerConfig,
) -> io::Result<bool> {
    writer.expect(replies.iter().map(|reply| reply.line.len()).sum());
    for reply in replies {
        writer.write_all(&reply.line).await?;
        if reply.close {
            writer.flush().await?;
            return Ok(false);
        }
        if let Some(watcher) = reply.watch {
            set_send_buffer(writer.get_ref().as_ref(), config.watch_send_buffer);
            *watching = Some(watcher);
        }
    }
    writer.flush().await?;
    Ok(true)
}

/// The error of a line over the limit (the connection closes after it).
fn too_long_error(config: &ServerConfig) -> cmd::CmdError {
    cmd::CmdError::new(
        Code::TooLarge,
        format!("request line over {} bytes", config.max_line),
    )
}

/// The next step off the queue: a request held from the last batch, or
/// the queued requests up to the first that must run alone, sent together
/// (that one is held for the step after), or that one alone.
fn next_step(
    queue: &mut VecDeque<Pending>,
    held: &mut Option<Held>,
    peer: &Peer,
    ctx: &Context,
    config: &ServerConfig,
) -> Option<Step> {
    if let Some(alone) = held.take() {
        return Some(run_alone(alone, ctx));
    }
    let mut items: Vec<Item> = Vec::new();
    let mut calls = Vec::new();
    while let Some(pending) = queue.pop_front() {
        let line = match pending {
            Pending::Line(line) => line,
            Pending::TooLong => {
                items.push(Item::Done {
                    command: "(unparsed)",
                    result: Err(too_long_error(config)),
                    close: true,
                });
                break;
            }
        };
        let request = match protocol::parse(&line) {
            Ok(request) => request,
            Err(err) => {
                items.push(Item::Done {
                    command: "(unparsed)",
                    result: Err(cmd::CmdError::new(err.code, err.message)),
                    close: false,
                });
                continue;
            }
        };
        let command = request.name();
        let quit = request == Request::Quit;
        let big = request.is_big();
        match cmd::plan(request, peer, ctx) {
            Plan::Done(result) => {
                let close = quit && result.is_ok();
                items.push(Item::Done {
                    command,
                    result,
                    close,
                });
                if close {
                    break;
                }
            }
            Plan::Call(call) => {
                items.push(Item::Call { command });
                calls.push(call);
                // one reply that may be big per step: what a connection
                // holds stays within the reply limit
                if big {
                    break;
                }
            }
            Plan::Alone(work) => {
                let alone = Held {
                    command,
                    close: quit,
                    work,
                };
                if items.is_empty() {
                    return Some(run_alone(alone, ctx));
                }
                *held = Some(alone);
                break;
            }
        }
    }
    if items.is_empty() {
        return None;
    }
    Some(finish_batch(items, calls, ctx))
}

/// Send a batch's calls in one pipeline; its replies in request order.
fn finish_batch(items: Vec<Item>, calls: Vec<Call<cmd::Finish>>, ctx: &Context) -> Step {
    let ctx = ctx.clone();
    async move {
        let started = std::time::Instant::now();
        let mut results = ctx.store.run_all(calls).await.into_iter();
        let mut replies = Vec::with_capacity(items.len());
        for item in items {
            let reply = match item {
                Item::Done {
                    command,
                    result,
                    close,
                } => finish(command, result, started, &ctx, close),
                Item::Call { command } => {
                    let result = match results.next() {
                        Some(Ok(finish)) => finish.result().await.map(Outcome::Reply),
                        Some(Err(err)) => Err(err.into()),
                        None => Err(cmd::CmdError::new(
                            Code::Internal,
                            "a batch lost a reply (logged)",
                        )),
                    };
                    finish(command, result, started, &ctx, false)
                }
            };
            replies.push(reply);
        }
        replies
    }
    .boxed()
}

/// Run a request that must run alone.
fn run_alone(alone: Held, ctx: &Context) -> Step {
    let ctx = ctx.clone();
    async move {
        let started = std::time::Instant::now();
        let result = alone.work.await;
        let close = alone.close && result.is_ok();
        vec![finish(alone.command, result, started, &ctx, close)]
    }
    .boxed()
}

/// The watcher's next lines (never ready without a watcher).
async fn next_entries(watching: &mut Option<Watcher>) -> Next {
    match watching {
        Some(watcher) => watcher.next(WATCH_BATCH).await,
        None => std::future::pending().await,
    }
}

/// See [`Watcher::absorb`] (never ready without a watcher).
async fn absorb(watching: &mut Option<Watcher>) -> Next {
    match watching {
        Some(watcher) => watcher.absorb().await,
        None => std::future::pending().await,
    }
}

/// Write a watcher's lines and flush them.
async fn write_items(
    writer: &mut Output,
    items: &[std::sync::Arc<crate::watch::Item>],
) -> io::Result<()> {
    writer.expect(items.iter().map(|item| item.line.len()).sum());
    for item in items {
        writer.write_all(&item.line).await?;
    }
    writer.flush().await
}

/// Give a watching connection a smaller kernel send buffer (`bytes`; 0
/// leaves it alone).
fn set_send_buffer(stream: &UnixStream, bytes: usize) {
    use std::os::fd::AsRawFd;
    if bytes == 0 {
        return;
    }
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is the stream's own and open; the option value
    // is a c_int whose size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot set a watcher's send buffer");
    }
}

/// A request read while watching: UNWATCH, PING and QUIT are answered;
/// anything else is a `bad_request` that changes nothing.
fn answer_watching(line: &[u8], watching: &mut Option<Watcher>, ctx: &Context) -> Reply {
    let started = std::time::Instant::now();
    let (command, result) = match protocol::parse(line) {
        Ok(Request::Unwatch) => {
            let instance = watching.take().map(|w| w.instance());
            ("UNWATCH", Ok(cmd::Json::of(&cmd::unwatch(instance))))
        }
        Ok(Request::Ping) => ("PING", Ok(cmd::Json::of("PONG"))),
        Ok(Request::Quit) => ("QUIT", Ok(cmd::Json::of("BYE"))),
        Ok(other) => {
            let instance = watching.as_ref().map(|w| w.instance().to_string());
            let message = format!(
                "{} while watching {}: only UNWATCH, PING and QUIT are read until UNWATCH",
                other.name(),
                instance.unwrap_or_default()
            );
            (
                other.name(),
                Err(cmd::CmdError::new(Code::BadRequest, message)),
            )
        }
        Err(err) => ("(unparsed)", Err(cmd::CmdError::new(err.code, err.message))),
    };
    let close = command == "QUIT" && result.is_ok();
    finish(command, result.map(Outcome::Reply), started, ctx, close)
}

/// Count, time and log a request's result; its reply.
fn finish(
    command: &'static str,
    result: Result<Outcome, cmd::CmdError>,
    started: std::time::Instant,
    ctx: &Context,
    close: bool,
) -> Reply {
    let (result, watch) = match result {
        Ok(Outcome::Reply(value)) => (Ok(value), None),
        Ok(Outcome::Watch(value, watcher)) => (Ok(value), Some(watcher)),
        Err(err) => (Err(err), None),
    };
    let took = started.elapsed();
    // "(unparsed)" is no command of COMMANDS: counted as unparsed
    let code = result.as_ref().err().map(|err| err.code);
    ctx.stats.answered(Some(command), took, code);
    let latency_ms = took.as_secs_f64() * 1000.0;
    match result {
        Ok(value) => {
            tracing::debug!(command, latency_ms, "request");
            Reply {
                line: protocol::ok_line(value.as_bytes()),
                close,
                watch,
            }
        }
        Err(err) => {
            // the code and the command, never the arguments (they may
            // hold people's data)
            if matches!(err.code, Code::Unavailable | Code::InDoubt | Code::Internal) {
                tracing::warn!(command, code = %err.code, latency_ms, "request failed: {command} {}", err.code);
            } else {
                tracing::info!(command, code = %err.code, latency_ms, "request failed: {command} {}", err.code);
            }
            Reply {
                close,
                ..Reply::line(protocol::error_line(err.code, &err.message))
            }
        }
    }
}

/// Bytes a connection reads at most at once (its read buffer grows past
/// this only for a line that is longer).
const READ_CHUNK: usize = 8 * 1024;

/// Replies a connection gathers before it writes them out; a reply this
/// long goes out directly.
const WRITE_CHUNK: usize = 8 * 1024;

/// A connection's reading side: request lines split off a buffer that is
/// allocated when bytes come and given back when the connection waits
/// with nothing unread, so a connection that waits (an idle one, a
/// watcher) holds no buffer. While bytes keep coming it is the buffer of
/// a framed reader: lines share its allocation, reads fill what is left.
struct Input {
    read: OwnedReadHalf,
    buf: BytesMut,
    codec: LineCodec,
    /// The peer closed its side: what is left is decoded, then the end.
    closed: bool,
    held: Counted,
}

/// What a connection's input holds now.
enum Read {
    /// A line (or a line over the limit, or the partial last line).
    Frame(Frame),
    /// Nothing more will come.
    End,
    /// Nothing yet: bytes must come first.
    Later,
}

impl Input {
    fn new(read: OwnedReadHalf, max_line: usize, stats: &Arc<Stats>) -> Input {
        Input {
            read,
            buf: BytesMut::new(),
            codec: LineCodec::new(max_line),
            closed: false,
            held: Counted::new(stats),
        }
    }

    /// The next frame of what was read already, or of what one read
    /// brings without waiting.
    fn buffered(&mut self) -> io::Result<Read> {
        loop {
            match self.decoded()? {
                Read::Later if self.read_now()? => {}
                read => return Ok(read),
            }
        }
    }

    /// The next frame of what was read already.
    fn decoded(&mut self) -> io::Result<Read> {
        if self.closed {
            let frame = self.codec.decode_eof(&mut self.buf)?;
            self.release();
            self.held.set(self.buf.capacity());
            return Ok(frame.map_or(Read::End, Read::Frame));
        }
        match self.codec.decode(&mut self.buf)? {
            Some(frame) => {
                // the lines split off keep the allocation until they are
                // answered; the buffer itself goes once it is empty
                self.release();
                self.held.set(self.buf.capacity());
                Ok(Read::Frame(frame))
            }
            None => Ok(Read::Later),
        }
    }

    /// One read, if the socket has bytes now (known without a system
    /// call when it has none): false when it had none.
    fn read_now(&mut self) -> io::Result<bool> {
        match std::future::poll_fn(|cx| self.poll_read(cx)).now_or_never() {
            Some(read) => read.map(|_| true),
            None => Ok(false),
        }
    }

    /// Read: the bytes read, 0 at the end of the stream. With nothing
    /// held, it reads on the stack (so it waits for the socket without a
    /// buffer) and the buffer is made of what came, at its size; with
    /// part of a line held, it reads on after it.
    fn poll_read(&mut self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<usize>> {
        let read = if self.buf.is_empty() {
            let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut into = tokio::io::ReadBuf::uninit(&mut stack);
            ready!(std::pin::Pin::new(&mut self.read).poll_read(cx, &mut into))?;
            self.buf = BytesMut::from(into.filled());
            into.filled().len()
        } else {
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(READ_CHUNK);
            }
            ready!(tokio_util::io::poll_read_buf(
                std::pin::Pin::new(&mut self.read),
                cx,
                &mut self.buf
            ))?
        };
        if read == 0 {
            self.closed = true;
        }
        self.held.set(self.buf.capacity());
        Poll::Ready(Ok(read))
    }

    /// The next frame; `None` at the end. Waits for the socket with no
    /// buffer when nothing is left unread.
    async fn next(&mut self) -> io::Result<Option<Frame>> {
        loop {
            match self.decoded()? {
                Read::Frame(frame) => return Ok(Some(frame)),
                Read::End => return Ok(None),
                Read::Later => {}
            }
            std::future::poll_fn(|cx| self.poll_read(cx)).await?;
        }
    }

    /// Give the buffer back if nothing is left in it (the lines split off
    /// it keep their bytes until they are answered).
    fn release(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
            self.codec.searched = 0;
            self.held.set(0);
        }
    }
}

/// A connection's writing side: replies gathered in a buffer made for
/// what is to be written (a lone reply goes out as it is, without one),
/// written out at each flush, and given back while the connection waits.
struct Output {
    write: OwnedWriteHalf,
    buf: Vec<u8>,
    /// Bytes announced by [`Output::expect`] and not written yet.
    expected: usize,
    held: Counted,
}

impl Output {
    fn new(write: OwnedWriteHalf, stats: &Arc<Stats>) -> Output {
        Output {
            write,
            buf: Vec::new(),
            expected: 0,
            held: Counted::new(stats),
        }
    }

    /// `bytes` are about to be written (the buffer is made to their size).
    fn expect(&mut self, bytes: usize) {
        self.expected = bytes;
    }

    /// Add `bytes` to what goes out: a long reply, or the last of what
    /// was expected with nothing gathered, goes out at once.
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.expected = self.expected.saturating_sub(bytes.len());
        if self.buf.len() + bytes.len() > WRITE_CHUNK {
            self.write_out().await?;
        }
        if self.buf.is_empty() && (bytes.len() >= WRITE_CHUNK || self.expected == 0) {
            return self.write.write_all(bytes).await;
        }
        if self.buf.capacity() == 0 {
            self.buf
                .reserve_exact((bytes.len() + self.expected).min(WRITE_CHUNK));
        }
        self.buf.extend_from_slice(bytes);
        self.held.set(self.buf.capacity());
        Ok(())
    }

    /// Write out what was gathered.
    async fn write_out(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.write.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Write out what was gathered, and flush.
    async fn flush(&mut self) -> io::Result<()> {
        self.write_out().await?;
        self.write.flush().await
    }

    /// Give the buffer back (when nothing waits in it).
    fn release(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
            self.held.set(0);
        }
    }

    fn get_ref(&self) -> &OwnedWriteHalf {
        &self.write
    }
}

/// The bytes of a connection buffer, counted in STATS
/// (`connections.buffered_bytes`) while it is held.
struct Counted {
    stats: Arc<Stats>,
    bytes: usize,
}

impl Counted {
    fn new(stats: &Arc<Stats>) -> Counted {
        Counted {
            stats: stats.clone(),
            bytes: 0,
        }
    }

    /// The buffer now holds `bytes`.
    fn set(&mut self, bytes: usize) {
        if bytes != self.bytes {
            self.stats.buffers_resized(self.bytes, bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// What the line codec yields.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// A request line, without its `\n`.
    Line(BytesMut),
    /// A line over the limit (the connection is closed after the reply).
    TooLong,
    /// The bytes after the last newline when the stream ended: a request
    /// cut off mid-write (the client died or closed early). A line is a
    /// request only once its newline arrived, so it is dropped, not run.
    Partial,
}

/// Splits the byte stream at `\n`, with a maximum line length. Unlike
/// tokio-util's `LinesCodec` it hands out bytes, not text, so invalid UTF-8
/// becomes a `bad_request` reply instead of ending the stream.
struct LineCodec {
    max: usize,
    /// How far the buffer was searched for a newline already.
    searched: usize,
}

impl LineCodec {
    fn new(max: usize) -> Self {
        LineCodec { max, searched: 0 }
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        let end = buf.len().min(self.max + 2);
        match buf[self.searched..end].iter().position(|b| *b == b'\n') {
            Some(offset) => {
                let at = self.searched + offset;
                self.searched = 0;
                // a line that ends the buffer takes it whole (no split,
                // which would share the allocation between the two)
                let mut line = if at + 1 == buf.len() {
                    std::mem::take(buf)
                } else {
                    buf.split_to(at + 1)
                };
                line.truncate(at);
                if line.ends_with(b"\r") {
                    line.truncate(at - 1);
                }
                if line.len() > self.max {
                    return Ok(Some(Frame::TooLong));
                }
                Ok(Some(Frame::Line(line)))
            }
            None if buf.len() > self.max + 1 => Ok(Some(Frame::TooLong)),
            None => {
                self.searched = end;
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if !buf.is_empty() => {
                self.searched = 0;
                buf.clear();
                Ok(Some(Frame::Partial))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(codec: &mut LineCodec, input: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            let too_long = frame == Frame::TooLong;
            out.push(frame);
            if too_long {
                break;
            }
        }
        out
    }

    #[test]
    fn lines_split_at_newlines_with_crlf_accepted() {
        let mut codec = LineCodec::new(10);
        let got = frames(&mut codec, b"PING\r\nJOIN 1 2\npartial");
        assert_eq!(
            got,
            [
                Frame::Line(BytesMut::from(&b"PING"[..])),
                Frame::Line(BytesMut::from(&b"JOIN 1 2"[..]))
            ]
        );
    }

    #[test]
    fn a_line_over_the_limit_is_too_long() {
        let mut codec = LineCodec::new(4);
        assert_eq!(
            frames(&mut codec, b"ABCD\n"),
            [Frame::Line(BytesMut::from(&b"ABCD"[..]))]
        );
        assert_eq!(frames(&mut codec, b"ABCDE\n"), [Frame::TooLong]);
        let mut codec = LineCodec::new(4);
        assert_eq!(frames(&mut codec, b"ABCDEFGH"), [Frame::TooLong]);
    }

    #[test]
    fn a_last_line_without_its_newline_is_partial_not_a_request() {
        let mut codec = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"PING\nLEAVE 8 1"[..]);
        assert_eq!(
            codec.decode_eof(&mut buf).ok().flatten(),
            Some(Frame::Line(BytesMut::from(&b"PING"[..])))
        );
        assert_eq!(
            codec.decode_eof(&mut buf).ok().flatten(),
            Some(Frame::Partial)
        );
        assert_eq!(codec.decode_eof(&mut buf).ok().flatten(), None);
    }

    #[test]
    fn a_line_arriving_in_pieces_is_found_once() {
        let mut codec = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"PI"[..]);
        assert_eq!(codec.decode(&mut buf).ok().flatten(), None);
        buf.extend_from_slice(b"NG\n");
        assert_eq!(
            codec.decode(&mut buf).ok().flatten(),
            Some(Frame::Line(BytesMut::from(&b"PING"[..])))
        );
    }

    fn line(bytes: &[u8]) -> Frame {
        Frame::Line(BytesMut::from(bytes))
    }

    /// The reading side over a real socket: a line cut by the reads is
    /// held (and counted) until its end comes, the buffer goes once its
    /// lines are taken, and the cut last line at the end is partial.
    #[tokio::test]
    async fn input_holds_a_buffer_only_while_a_line_is_unfinished() {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        let (read, _write) = ours.into_split();
        let stats = Arc::new(Stats::default());
        let mut input = Input::new(read, 100, &stats);
        let buffered = || stats.snapshot()["connections"]["buffered_bytes"].as_u64();
        let (_, mut client) = theirs.into_split();

        // one write, one read: the line and the start of the next
        client.write_all(b"PING\nQU").await.expect("write");
        assert_eq!(input.next().await.ok().flatten(), Some(line(b"PING")));
        assert!(matches!(input.buffered(), Ok(Read::Later)));
        assert!(input.buf.capacity() >= 2, "the cut line is held");
        assert!(buffered() >= Some(2));

        client.write_all(b"IT\nLE").await.expect("write");
        assert_eq!(input.next().await.ok().flatten(), Some(line(b"QUIT")));
        assert!(matches!(input.buffered(), Ok(Read::Later)));
        assert!(input.buf.capacity() > 0, "LE waits for its end");

        client.write_all(b"AVE 1 1\n").await.expect("write");
        assert_eq!(input.next().await.ok().flatten(), Some(line(b"LEAVE 1 1")));
        assert_eq!(input.buf.capacity(), 0, "every line taken: no buffer");
        assert_eq!(buffered(), Some(0));

        client.write_all(b"PING\nHALF").await.expect("write");
        drop(client);
        assert_eq!(input.next().await.ok().flatten(), Some(line(b"PING")));
        assert_eq!(input.next().await.ok().flatten(), Some(Frame::Partial));
        assert_eq!(input.next().await.ok().flatten(), None);
        assert_eq!(buffered(), Some(0));
    }

    /// The writing side: replies announced together go out together,
    /// through a buffer that goes once written; a lone reply needs none.
    #[tokio::test]
    async fn output_gathers_what_was_announced_and_gives_the_buffer_back() {
        use tokio::io::AsyncReadExt;
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        let (_read, write) = ours.into_split();
        let stats = Arc::new(Stats::default());
        let mut output = Output::new(write, &stats);
        let (mut client, _) = theirs.into_split();

        output.expect(6);
        output.write_all(b"a\n").await.expect("write");
        output.write_all(b"bc\n").await.expect("write");
        assert!(output.buf.capacity() >= 6, "gathered in one buffer");
        output.write_all(b"d").await.expect("write");
        output.flush().await.expect("flush");
        output.release();
        assert_eq!(output.buf.capacity(), 0);

        output.expect(3);
        output.write_all(b"ef\n").await.expect("write");
        assert_eq!(output.buf.capacity(), 0, "a lone reply is written as it is");
        output.flush().await.expect("flush");

        let mut got = vec![0u8; 9];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(got, b"a\nbc\ndef\n");
        assert_eq!(stats.snapshot()["connections"]["buffered_bytes"], 0);
    }
}
