//! `meetingctl`: the client of meetingd's control socket, for people (tables)
//! and scripts (`--json`).
//!
//! Each subcommand builds one protocol request with the daemon's own quoting
//! (`protocol::request_line`), sends it, and prints the reply. Exit status:
//! 0 on success, 1 on an error reply (printed to stderr with its code), 2 on
//! usage or connection errors, 3 when `watch --no-reconnect` lost its
//! daemon. `import FILE` loads users, meetings,
//! audiences and instances from a JSON file, entry by entry. `help` needs
//! no daemon: it prints the protocol's command list that meetingctl is
//! built with.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meetingd::protocol::request_line;
use serde::Deserialize;
use serde_json::{Value, json};

/// What `meetingctl --help` ends with.
const AFTER_HELP: &str = "\
Exit status: 0 the request succeeded; 1 the daemon refused it (its error code and message on \
stderr); 2 meetingctl could not run it (a usage error, or the daemon could not be reached); 3 `watch --no-reconnect` lost its daemon (it stopped or restarts).

The socket is --socket, else $MEETINGD_SOCKET__PATH, else /run/meetingd/meetingd.sock (the \
daemon's default). `bash scripts/demo.sh` prints the line that points meetingctl at its own.

`meetingctl help` lists the protocol's commands (no daemon needed); docs/protocol.md describes \
each, with its reply and errors.";

/// meetingctl, the command-line client of meetingd: one request per run,
/// sent to the daemon's control socket; the reply printed as a table, or
/// as it came (one JSON line) with --json.
#[derive(Parser)]
#[command(
    name = "meetingctl",
    version,
    about = "The command-line client of meetingd: one request per run over its control socket, the reply printed as a table (or as it came, one JSON line, with --json)",
    after_help = AFTER_HELP,
    disable_help_subcommand = true
)]
struct Cli {
    /// The daemon's control socket.
    #[arg(
        long,
        global = true,
        env = "MEETINGD_SOCKET__PATH",
        default_value = "/run/meetingd/meetingd.sock"
    )]
    socket: PathBuf,
    /// Print the daemon's reply as it came (one JSON line) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the daemon answers.
    Ping,
    /// The protocol's command list, or one command's syntax (no daemon
    /// needed).
    Help {
        /// A command, e.g. JOIN or "USER SET".
        command: Vec<String>,
    },
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
    /// Meetings.
    #[command(subcommand)]
    Meeting(MeetingCommand),
    /// Every user, by id, a page at a time (the `next` of a page is the
    /// `--after` of the following one).
    Users {
        /// Start after this user (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<String>,
    },
    /// Every meeting, by id, with how many instances it has and which one
    /// runs, a page at a time (`meeting get` lists its instances).
    Meetings {
        /// Start after this meeting (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<String>,
    },
    /// A meeting's audience (who may join a private meeting).
    #[command(subcommand)]
    Audience(AudienceCommand),
    /// Instances of a meeting.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// End an active instance now (admin).
    End {
        /// M (the meeting's active instance) or M/O.
        mref: String,
    },
    /// Apply every transition due now (admin).
    Tick,
    /// A user joins an active instance. Like `post`, it goes with a key of
    /// meetingctl's making, and is sent once more after `in_doubt`.
    Join {
        /// The user's id.
        user: String,
        /// M or M/O.
        mref: String,
        /// The key to join with (default: one made up for this join).
        #[arg(long)]
        id: Option<String>,
    },
    /// A user leaves an instance (with a key, as `join`).
    Leave {
        /// The user's id.
        user: String,
        /// M or M/O.
        mref: String,
        /// The key to leave with (default: one made up for this leave).
        #[arg(long)]
        id: Option<String>,
    },
    /// Who is in an instance, in join order.
    Participants {
        /// M or M/O.
        mref: String,
        /// Start after this join position, `<user>@<joined_at>` of the last
        /// row of the previous page (or a user who is still in).
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<String>,
    },
    /// Every active instance, a page at a time (the `next` of a page is
    /// the `--after` of the following one).
    Active {
        /// Start after this meeting (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<String>,
    },
    /// For each active instance, when each participant joined, a page at a
    /// time.
    Attendance {
        /// Start after this (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many participants.
        #[arg(long)]
        limit: Option<String>,
    },
    /// Post a chat message. It goes with a key of meetingctl's making, so
    /// that when the daemon answers `in_doubt` (no reply from Redis in
    /// time) it is sent once more without risk of posting it twice.
    Post {
        /// The user's id.
        user: String,
        /// M or M/O.
        mref: String,
        /// The message.
        text: String,
        /// The key to post it with (default: one made up for this post).
        #[arg(long)]
        id: Option<String>,
    },
    /// An instance's chat, oldest first.
    Messages {
        /// M or M/O.
        mref: String,
        /// Only this user's messages.
        #[arg(long)]
        user: Option<String>,
        /// Start after this message id (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<String>,
    },
    /// An instance's event log.
    Events {
        /// M or M/O.
        mref: String,
        /// Start after this event id.
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<String>,
    },
    /// An instance's attendance: per user first join, last leave, seconds
    /// present, joins and messages (every page, fetched in turn; with
    /// --json, one reply line holding every row).
    Report {
        /// M or M/O.
        mref: String,
        /// CSV (RFC 4180, with a header) instead of a table.
        #[arg(long, conflicts_with = "svg")]
        csv: bool,
        /// An SVG timeline instead: a row per user, a bar per stretch
        /// between a join and its leave or timeout, the window's start and
        /// end marked (the web view's picture). Redirect it to a file.
        #[arg(long)]
        svg: bool,
    },
    /// Print an instance's events and chat as they happen, until
    /// interrupted (or `--count` of them). A watch that falls behind, or
    /// whose daemon stops or restarts, is resumed where it was (after the
    /// last entry printed), so nothing is lost and nothing shows twice.
    /// `watch active` prints what runs, then every start and end of the
    /// store; it cannot resume: after a drop or a reconnect it starts
    /// again from what runs then.
    Watch {
        /// M, M/O, or `active`.
        mref: String,
        /// First what came after this id.
        #[arg(long)]
        after: Option<String>,
        /// Stop after this many entries.
        #[arg(long)]
        count: Option<u64>,
        /// Show each entry's id (what `--after` takes to resume after it).
        #[arg(long)]
        ids: bool,
        /// When the daemon closes the connection (it stopped or restarts),
        /// stop (exit status 3) and print the id to resume after, instead
        /// of reconnecting.
        #[arg(long)]
        no_reconnect: bool,
    },
    /// The daemon's counters.
    Stats,
    /// Load users, meetings, audiences and instances from a JSON file,
    /// entry by entry. What already happened is never rewritten: an
    /// instance that has started keeps its start (and a running one an end
    /// still to come), an ended one stays as it is; such entries are
    /// refused one by one and the others loaded. Exit status 1 when any
    /// entry was refused.
    Import {
        /// The file (the format of config/sample.json).
        file: PathBuf,
        /// Move every instance's window by (now - this time), so a file
        /// written around this instant lands around now (the sample data
        /// uses 2026-01-01T12:00:00Z).
        #[arg(long, value_name = "TIME")]
        shift_from: Option<String>,
    },
    /// Send one raw protocol line.
    Raw {
        /// The request, e.g. "JOIN 7 42/3".
        line: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create or update a user (admin).
    Set {
        /// The user's id.
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Age, 0..150.
        #[arg(long)]
        age: String,
        /// Gender.
        #[arg(long)]
        gender: String,
        /// E-mail.
        #[arg(long)]
        email: String,
    },
    /// Read a user.
    Get {
        /// The user's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum MeetingCommand {
    /// Create or update a meeting (admin).
    Set {
        /// The meeting's id.
        id: String,
        /// Title.
        #[arg(long)]
        title: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Public (true) or private to its audience (false).
        #[arg(long)]
        public: String,
    },
    /// A meeting, its audience and its instances.
    Get {
        /// The meeting's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum AudienceCommand {
    /// Allow e-mails into a private meeting (admin).
    Add {
        /// The meeting's id.
        meeting: String,
        /// E-mails.
        #[arg(required = true)]
        emails: Vec<String>,
    },
    /// Remove e-mails from the audience (admin).
    Del {
        /// The meeting's id.
        meeting: String,
        /// E-mails.
        #[arg(required = true)]
        emails: Vec<String>,
    },
}

#[derive(Subcommand)]
enum InstanceCommand {
    /// Schedule an instance or move its window (admin).
    Set {
        /// The meeting's id.
        meeting: String,
        /// The order id.
        order: String,
        /// Start, RFC 3339 (2026-11-22T10:00:00Z).
        #[arg(long)]
        from: String,
        /// End, RFC 3339.
        #[arg(long)]
        to: String,
        /// Change only what is still to come: refused for a started
        /// instance's start, a running one's end moved to now or before,
        /// or an ended one (as `import` does).
        #[arg(long)]
        future: bool,
    },
}

/// Pages and filters as `KEYWORD value` tokens.
fn options(pairs: &[(&'static str, &Option<String>)]) -> Vec<String> {
    pairs
        .iter()
        .filter_map(|(keyword, value)| value.as_ref().map(|v| [keyword.to_string(), v.clone()]))
        .flatten()
        .collect()
}

impl Command {
    /// The request's tokens.
    fn tokens(&self) -> Vec<String> {
        let words = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Command::Ping => words(&["PING"]),
            Command::Help { command } => {
                let mut t = words(&["HELP"]);
                t.extend(command.iter().cloned());
                t
            }
            Command::User(UserCommand::Set {
                id,
                name,
                age,
                gender,
                email,
            }) => words(&[
                "USER", "SET", id, "name", name, "age", age, "gender", gender, "email", email,
            ]),
            Command::User(UserCommand::Get { id }) => words(&["USER", "GET", id]),
            Command::Meeting(MeetingCommand::Set {
                id,
                title,
                description,
                public,
            }) => words(&[
                "MEETING",
                "SET",
                id,
                "title",
                title,
                "description",
                description,
                "public",
                public,
            ]),
            Command::Meeting(MeetingCommand::Get { id }) => words(&["MEETING", "GET", id]),
            Command::Users { after, limit } => {
                let mut t = words(&["USERS"]);
                t.extend(options(&[("AFTER", after), ("LIMIT", limit)]));
                t
            }
            Command::Meetings { after, limit } => {
                let mut t = words(&["MEETINGS"]);
                t.extend(options(&[("AFTER", after), ("LIMIT", limit)]));
                t
            }
            Command::Audience(AudienceCommand::Add { meeting, emails }) => {
                let mut t = words(&["AUDIENCE", "ADD", meeting]);
                t.extend(emails.iter().cloned());
                t
            }
            Command::Audience(AudienceCommand::Del { meeting, emails }) => {
                let mut t = words(&["AUDIENCE", "DEL", meeting]);
                t.extend(emails.iter().cloned());
                t
            }
            Command::Instance(InstanceCommand::Set {
                meeting,
                order,
                from,
                to,
                future,
            }) => {
                let mut t = words(&["INSTANCE", "SET", meeting, order, "from", from, "to", to]);
                if *future {
                    t.push("FUTURE".into());
                }
                t
            }
            Command::End { mref } => words(&["END", mref]),
            Command::Tick => words(&["TICK"]),
            Command::Join { user, mref, id } => {
                let key = id.clone().unwrap_or_else(post_key);
                words(&["JOIN", user, mref, "ID", &key])
            }
            Command::Leave { user, mref, id } => {
                let key = id.clone().unwrap_or_else(post_key);
                words(&["LEAVE", user, mref, "ID", &key])
            }
            Command::Participants { mref, after, limit } => {
                let mut t = words(&["PARTICIPANTS", mref]);
                t.extend(options(&[("AFTER", after), ("LIMIT", limit)]));
                t
            }
            Command::Active { after, limit } => {
                let mut t = words(&["ACTIVE"]);
                t.extend(options(&[("AFTER", after), ("LIMIT", limit)]));
                t
            }
            Command::Attendance { after, limit } => {
                let mut t = words(&["ATTENDANCE"]);
                t.extend(options(&[("AFTER", after), ("LIMIT", limit)]));
                t
            }
            Command::Post {
                user,
                mref,
                text,
                id,
            } => {
                let key = id.clone().unwrap_or_else(post_key);
                words(&["POST", user, mref, text, "ID", &key])
            }
            Command::Messages {
                mref,
                user,
                after,
                limit,
            } => {
                let mut t = words(&["MESSAGES", mref]);
                t.extend(options(&[
                    ("USER", user),
                    ("AFTER", after),
                    ("LIMIT", limit),
                ]));
                t
            }
            Command::Events { mref, after, limit } => {
                let mut t = words(&["EVENTS", mref]);
                t.extend(options(&[("AFTER", after), ("LIMIT", limit)]));
                t
            }
            Command::Report { mref, .. } => words(&["REPORT", mref]),
            Command::Stats => words(&["STATS"]),
            Command::Watch { mref, after, .. } => {
                let mut t = words(&["WATCH", mref]);
                t.extend(options(&[("AFTER", after)]));
                t
            }
            Command::Import { .. } | Command::Raw { .. } => Vec::new(),
        }
    }
}

/// A connection to the daemon: send lines, read reply lines.
struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn connect(socket: &PathBuf) -> Result<Client, String> {
        let stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, &e))?;
        let reader = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Client {
            writer: stream,
            reader: BufReader::new(reader),
        })
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("cannot send to the daemon: {e}"))
    }

    /// One reply line: (the raw line, the parsed reply).
    fn receive(&mut self) -> Result<(String, Value), String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("the daemon closed the connection".into()),
            Ok(_) => {
                let reply = serde_json::from_str(&line)
                    .map_err(|e| format!("the daemon's reply is not JSON ({e}): {line}"))?;
                Ok((line.trim_end().to_string(), reply))
            }
            Err(e) => Err(format!("cannot read the daemon's reply: {e}")),
        }
    }
}

/// Why the socket could not be opened, and what to do about it.
fn connect_error(socket: &Path, err: &std::io::Error) -> String {
    let shown = socket.display();
    let point = "point meetingctl at the socket of the meetingd that runs with --socket PATH \
                 or MEETINGD_SOCKET__PATH (the demo prints that line)";
    // a path that is there but no socket: say what it is
    let not_a_socket = std::fs::metadata(socket).ok().and_then(|meta| {
        use std::os::unix::fs::FileTypeExt;
        let kind = meta.file_type();
        if kind.is_dir() {
            Some("a directory")
        } else if kind.is_file() {
            Some("a regular file")
        } else if kind.is_socket() {
            None
        } else {
            Some("not a socket")
        }
    });
    if let Some(kind) = not_a_socket {
        return format!(
            "cannot connect to {shown}: it is {kind}, not meetingd's socket: {point} (by default \
             /run/meetingd/meetingd.sock)"
        );
    }
    let what_to_do = match err.kind() {
        std::io::ErrorKind::NotFound => format!(
            "nothing there: is meetingd running? Start it (systemctl start meetingd, or meetingd \
             serve), or {point}"
        ),
        std::io::ErrorKind::ConnectionRefused => format!(
            "the socket is there but no meetingd listens on it (it stopped): start it again, or \
             {point}"
        ),
        std::io::ErrorKind::PermissionDenied => match std::fs::metadata(socket) {
            Ok(meta) => {
                let owner = user_name(meta.uid());
                let group = group_name(meta.gid());
                let mode = meta.permissions().mode() & 0o7777;
                let who = if owner == "root" {
                    "root".to_string()
                } else {
                    format!("root and {owner}")
                };
                if mode & 0o060 == 0o060 && meta.gid() == 0 {
                    format!(
                        "you may not open it: it is {mode:04o} {owner}:{group}, so only {who} may \
                         connect. Ask for the daemon's socket.group to be set to a group for its \
                         clients (for example meetings: socket.group = \"meetings\" in \
                         /etc/meetingd/meetingd.toml), then to be added to it; or run meetingctl \
                         as root"
                    )
                } else if mode & 0o060 == 0o060 {
                    format!(
                        "you may not open it: it is {mode:04o} {owner}:{group}, so only {who} and \
                         the members of group {group} may connect. Ask for the group (sudo \
                         usermod -aG {group} $USER, then log in again), or run meetingctl as root"
                    )
                } else {
                    format!(
                        "you may not open it: it is {mode:04o} {owner}:{group}, so only {who} may \
                         connect. Run meetingctl as {owner}, or have socket.mode set to 0660 and \
                         ask for group {group}"
                    )
                }
            }
            Err(_) => format!(
                "you may not reach it: a directory on its path is closed to you ({}); ask who \
                 runs meetingd, or run meetingctl as root",
                socket
                    .parent()
                    .map_or_else(|| "/".to_string(), |d| d.display().to_string())
            ),
        },
        _ => point.to_string(),
    };
    format!("cannot connect to {shown}: {err}: {what_to_do}")
}

/// A user's name, or its uid when it has none.
fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid returns null or a pointer to static storage, read
    // at once; meetingctl has no other thread that calls it.
    unsafe {
        let entry = libc::getpwuid(uid);
        if entry.is_null() {
            return uid.to_string();
        }
        std::ffi::CStr::from_ptr((*entry).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// A group's name, or its gid when it has none.
fn group_name(gid: u32) -> String {
    // SAFETY: as in user_name, with getgrgid.
    unsafe {
        let entry = libc::getgrgid(gid);
        if entry.is_null() {
            return gid.to_string();
        }
        std::ffi::CStr::from_ptr((*entry).gr_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// `meetingctl help [command]`: the command list meetingctl is built with
/// (the daemon's HELP answers the same), printed without a daemon.
fn help(cli: &Cli, command: &[String]) -> ExitCode {
    let name = (!command.is_empty()).then(|| command.join(" "));
    match meetingd::protocol::help(name.as_deref()) {
        Ok(result) => {
            if cli.json {
                meetingd::outln!("{}", json!({"ok": true, "result": result}));
            } else {
                meetingd::out!("{}", render(&result));
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            let reply =
                json!({"ok": false, "error": {"code": "unknown_command", "message": message}});
            refused(cli, &reply.to_string(), &reply)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Help { command } = &cli.command {
        return help(&cli, command);
    }
    let outcome = match &cli.command {
        Command::Import { file, shift_from } => import(&cli, file, shift_from.as_deref()),
        Command::Raw { line } => request(&cli, format!("{}\n", line.trim_end())),
        Command::Watch {
            mref,
            after,
            count,
            ids,
            no_reconnect,
        } => watch(
            &cli,
            mref,
            after.clone(),
            Follow {
                count: *count,
                ids: *ids,
                reconnect: !*no_reconnect,
            },
        ),
        Command::Report {
            mref, svg: true, ..
        } => report_svg(&cli, mref),
        Command::Report { mref, csv, .. } => report(&cli, mref, *csv && !cli.json),
        command @ (Command::Post { .. } | Command::Join { .. } | Command::Leave { .. }) => {
            // the key makes a second try safe: the daemon applies it once
            let tokens = command.tokens();
            let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
            request_again_in_doubt(&cli, request_line(&refs))
        }
        command => {
            let tokens = command.tokens();
            let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
            request(&cli, request_line(&refs))
        }
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("meetingctl: {message}");
            ExitCode::from(2)
        }
    }
}

/// REPORT, every page of it (paged on `AFTER` the `next` of each, in the
/// instance the first page named), printed as one result: a table, the
/// reply line with every row (`--json`), or CSV (RFC 4180: a header, CRLF
/// line ends, fields quoted when they must be), one line per user. An
/// error as any other.
fn report(cli: &Cli, mref: &str, csv: bool) -> Result<ExitCode, String> {
    let mut client = Client::connect(&cli.socket)?;
    client.send(&request_line(&["REPORT", mref]))?;
    let (raw, reply) = client.receive()?;
    if reply["ok"] != json!(true) {
        return Ok(refused(cli, &raw, &reply));
    }
    let mut result = reply["result"].clone();
    let instance = format!("{}/{}", result["meeting"], result["order"]);
    let mut next = result["next"].clone();
    let mut previous = 0;
    while let Some(after) = next.as_u64() {
        if after <= previous {
            return Err(format!("the daemon paged REPORT back to user {after}"));
        }
        previous = after;
        let after = after.to_string();
        client.send(&request_line(&["REPORT", &instance, "AFTER", &after]))?;
        let (raw, reply) = client.receive()?;
        if reply["ok"] != json!(true) {
            return Ok(refused(cli, &raw, &reply));
        }
        let page = &reply["result"];
        let rows = page["rows"].as_array().cloned().unwrap_or_default();
        if let Some(all) = result["rows"].as_array_mut() {
            all.extend(rows);
        }
        next = page["next"].clone();
    }
    result["next"] = Value::Null;
    if csv {
        meetingd::out!("{}", report_csv_text(&result));
    } else if cli.json {
        meetingd::outln!("{}", json!({"ok": true, "result": result}));
    } else {
        if let Some(fields) = result.as_object_mut() {
            fields.remove("next");
        }
        meetingd::out!("{}", render(&by_row(&result)));
    }
    Ok(ExitCode::SUCCESS)
}

/// REPORT's window and EVENTS (every page) drawn as the web view's
/// timeline, each row named by USER GET (`user N` for one that is gone).
fn report_svg(cli: &Cli, mref: &str) -> Result<ExitCode, String> {
    use meetingd::web::timeline::{Chart, Spans, svg_file};
    let mut client = Client::connect(&cli.socket)?;
    let mut ask = |words: &[&str]| -> Result<Result<Value, ExitCode>, String> {
        client.send(&request_line(words))?;
        let (raw, reply) = client.receive()?;
        if reply["ok"] != json!(true) {
            return Ok(Err(refused(cli, &raw, &reply)));
        }
        Ok(Ok(reply["result"].clone()))
    };
    let report = match ask(&["REPORT", mref])? {
        Ok(report) => report,
        Err(code) => return Ok(code),
    };
    let time = |value: &Value| -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(value.as_str()?)
            .ok()
            .map(|t| t.timestamp_millis())
    };
    let (Some(from), Some(to)) = (time(&report["from"]), time(&report["to"])) else {
        return Err(format!("REPORT gave no window: {report}"));
    };
    let (meeting, order) = (report["meeting"].to_string(), report["order"].to_string());
    let instance = format!("{meeting}/{order}");
    let mut spans = Spans::new();
    let mut after: Option<String> = None;
    loop {
        let mut words = vec!["EVENTS", instance.as_str()];
        if let Some(after) = &after {
            words.extend(["AFTER", after.as_str()]);
        }
        let page = match ask(&words)? {
            Ok(page) => page,
            Err(code) => return Ok(code),
        };
        for event in page["events"].as_array().into_iter().flatten() {
            let (Some(user), Some(at)) = (event["user"].as_u64(), time(&event["at"])) else {
                continue;
            };
            match event["type"].as_str() {
                Some("join") => spans.join(user, at),
                _ => spans.leave(user, at),
            }
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    let mut names = std::collections::HashMap::new();
    for &user in spans.users() {
        if let Ok(found) = ask(&["USER", "GET", &user.to_string()])? {
            if let Some(name) = found["name"].as_str() {
                names.insert(user, name.to_string());
            }
        }
    }
    let now = chrono::Utc::now().timestamp_millis();
    let ended_at = time(&report["ended_at"]);
    let chart = Chart {
        name: instance,
        from,
        to,
        now: (report["state"] == "active").then_some(now),
        rows: spans.rows(ended_at.unwrap_or(now).min(to), |user| {
            let name = names
                .get(&user)
                .cloned()
                .unwrap_or_else(|| format!("user {user}"));
            format!("{name} #{user}")
        }),
    };
    meetingd::out!("{}", svg_file(&chart));
    Ok(ExitCode::SUCCESS)
}

/// A REPORT result as CSV text.
fn report_csv_text(result: &Value) -> String {
    const COLUMNS: [&str; 6] = [
        "user",
        "first_join",
        "last_leave",
        "seconds_present",
        "joins",
        "messages",
    ];
    let field = |value: &Value| -> String {
        let text = match value {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if text.contains([',', '"', '\r', '\n']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text
        }
    };
    let mut out = format!("meeting,order,{}\r\n", COLUMNS.join(","));
    let empty = Vec::new();
    for row in result["rows"].as_array().unwrap_or(&empty) {
        let mut fields = vec![field(&result["meeting"]), field(&result["order"])];
        fields.extend(COLUMNS.iter().map(|c| field(&row[*c])));
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A key for a POST, JOIN or LEAVE: unique enough for one user in one instance
/// (meetingctl's pid and the time in nanoseconds).
fn post_key() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("ctl-{}-{nanos}", std::process::id())
}

/// Send one request, print its reply; the exit status.
fn request(cli: &Cli, line: String) -> Result<ExitCode, String> {
    let mut client = Client::connect(&cli.socket)?;
    client.send(&line)?;
    let (raw, reply) = client.receive()?;
    answer(cli, &raw, &reply)
}

/// Send a request that is safe to repeat, and once more when its first
/// answer is `in_doubt`; print the last reply.
fn request_again_in_doubt(cli: &Cli, line: String) -> Result<ExitCode, String> {
    let mut client = Client::connect(&cli.socket)?;
    client.send(&line)?;
    let (mut raw, mut reply) = client.receive()?;
    if reply["error"]["code"] == "in_doubt" {
        eprintln!("meetingctl: no reply from Redis in time; sending it again (same ID)");
        client.send(&line)?;
        (raw, reply) = client.receive()?;
    }
    answer(cli, &raw, &reply)
}

/// Print a reply: its result for people (or raw with `--json`), or its
/// error; the exit status.
fn answer(cli: &Cli, raw: &str, reply: &Value) -> Result<ExitCode, String> {
    if reply["ok"] == json!(true) {
        if cli.json {
            meetingd::outln!("{raw}");
        } else {
            meetingd::out!("{}", render(&by_row(&reply["result"])));
        }
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(refused(cli, raw, reply))
    }
}

/// A result with its maps of records (STATS' latency by command) turned
/// into lists, so that they print as tables: `{"JOIN":{"count":3,..}}`
/// becomes `[{"command":"JOIN","count":3,..}]`.
fn by_row(result: &Value) -> Value {
    let Value::Object(fields) = result else {
        return result.clone();
    };
    let mut shown = fields.clone();
    if let Some(Value::Object(latency)) = fields.get("latency") {
        let rows: Vec<Value> = latency
            .iter()
            .map(|(command, record)| {
                let mut row = serde_json::Map::new();
                row.insert("command".into(), json!(command));
                if let Value::Object(values) = record {
                    row.extend(values.clone());
                }
                Value::Object(row)
            })
            .collect();
        shown.insert("latency".into(), Value::Array(rows));
    }
    Value::Object(shown)
}

/// Show an error reply (the raw line too with `--json`); exit status 1.
fn refused(cli: &Cli, raw: &str, reply: &Value) -> ExitCode {
    if cli.json {
        meetingd::outln!("{raw}");
    }
    eprintln!(
        "{}: {}",
        escaped(reply["error"]["code"].as_str().unwrap_or("error")),
        escaped(reply["error"]["message"].as_str().unwrap_or(""))
    );
    ExitCode::from(1)
}

/// How `meetingctl watch` follows an instance.
struct Follow {
    /// Stop after this many entries.
    count: Option<u64>,
    /// Show each entry's id.
    ids: bool,
    /// Connect again when the daemon closes the connection.
    reconnect: bool,
}

/// Where a watch is: the instance (as the first reply named it, `M/O`),
/// the last id printed, and how many entries were.
struct Watched {
    target: String,
    after: Option<String>,
    printed: u64,
}

/// How one connection's watch ended.
enum WatchEnd {
    /// Done: the count reached, or the WATCH refused (its exit status).
    Done(ExitCode),
    /// The daemon closed the connection (it stopped or restarts): why.
    Lost(String),
}

/// Follow an instance: print each entry as it comes; after a `dropped`
/// notice, watch again from where it was; when the daemon goes away,
/// reconnect (unless told not to) and resume after the last entry printed.
fn watch(cli: &Cli, mref: &str, after: Option<String>, follow: Follow) -> Result<ExitCode, String> {
    let mut client = Client::connect(&cli.socket)?;
    let mut at = Watched {
        target: mref.to_string(),
        after,
        printed: 0,
    };
    loop {
        let lost = match watch_on(cli, &mut client, &mut at, &follow)? {
            WatchEnd::Done(code) => return Ok(code),
            WatchEnd::Lost(why) => why,
        };
        let resume = match &at.after {
            _ if at.target.eq_ignore_ascii_case("active") => "from what runs then".to_string(),
            Some(id) => format!("--after {id}"),
            None => "from its start".to_string(),
        };
        if !follow.reconnect {
            eprintln!(
                "meetingctl: {lost}; to resume: meetingctl watch {} {resume}",
                at.target
            );
            return Ok(ExitCode::from(3));
        }
        eprintln!("{lost}; reconnecting, to resume {} {resume}", at.target);
        client = reconnect(&cli.socket);
    }
}

/// Connect to the daemon again, waiting for it to come back (0.2 s, then
/// twice as long each time, up to 5 s between tries).
fn reconnect(socket: &PathBuf) -> Client {
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        std::thread::sleep(pause);
        if let Ok(client) = Client::connect(socket) {
            return client;
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Watch on one connection until it ends.
fn watch_on(
    cli: &Cli,
    client: &mut Client,
    at: &mut Watched,
    follow: &Follow,
) -> Result<WatchEnd, String> {
    let active = at.target.eq_ignore_ascii_case("active");
    loop {
        let mut tokens = vec!["WATCH", at.target.as_str()];
        if let Some(id) = at.after.as_ref().filter(|_| !active) {
            tokens.extend(["AFTER", id.as_str()]);
        }
        if let Err(lost) = client.send(&request_line(&tokens)) {
            return Ok(WatchEnd::Lost(lost));
        }
        let (raw, reply) = match client.receive() {
            Ok(received) => received,
            Err(lost) => return Ok(WatchEnd::Lost(lost)),
        };
        if reply["ok"] != json!(true) {
            return Ok(WatchEnd::Done(refused(cli, &raw, &reply)));
        }
        if let Some(watching) = reply["result"]["watching"].as_str() {
            // `M` named the running instance: stay with it across reconnects
            at.target = watching.to_string();
        }
        if !cli.json {
            eprintln!("watching {} (Ctrl-C stops)", at.target);
        }
        loop {
            if follow.count.is_some_and(|n| at.printed >= n) {
                return Ok(WatchEnd::Done(ExitCode::SUCCESS));
            }
            let (raw, line) = match client.receive() {
                Ok(received) => received,
                Err(lost) => return Ok(WatchEnd::Lost(lost)),
            };
            if line.get("dropped").is_some() {
                match line["resume"].as_str() {
                    Some(resume) => {
                        eprintln!(
                            "fell behind: {} entries dropped; watching again after {resume}",
                            line["dropped"]
                        );
                        at.after = Some(resume.to_string());
                    }
                    None => eprintln!(
                        "fell behind: {} entries dropped; watching again from what runs now",
                        line["dropped"]
                    ),
                }
                break;
            }
            if let Some(why) = line["closing"].as_str() {
                if let Some(resume) = line["resume"].as_str() {
                    at.after = Some(resume.to_string());
                }
                return Ok(WatchEnd::Lost(format!(
                    "the daemon closed the watch ({why})"
                )));
            }
            let event = &line["event"];
            if cli.json {
                meetingd::outln!("{raw}");
            } else if follow.ids {
                meetingd::outln!(
                    "{}  {}",
                    event["id"].as_str().unwrap_or("-"),
                    describe(event)
                );
            } else {
                meetingd::outln!("{}", describe(event));
            }
            at.printed += 1;
            at.after = event["id"].as_str().map(str::to_string).or(at.after.take());
        }
    }
}

/// One watched entry for people: `time  M/O  type  user [text]`.
fn describe(event: &Value) -> String {
    let at = event["at"].as_str().unwrap_or("-");
    let place = format!("{}/{}", event["meeting"], event["order"]);
    let kind = event["type"].as_str().unwrap_or("?");
    let user = &event["user"];
    let window = || {
        format!(
            "{} to {}",
            event["from"].as_str().unwrap_or("-"),
            event["to"].as_str().unwrap_or("-")
        )
    };
    match kind {
        "running" => format!("{}  {place}  running  ({})", window(), "as the watch began"),
        "start" if event.get("from").is_some() => format!("{at}  {place}  start    {}", window()),
        "start" => format!("{at}  {place}  start"),
        "end" => format!(
            "{at}  {place}  end      ({}, scheduled end {})",
            event["reason"].as_str().unwrap_or("-"),
            event["scheduled_end"]
                .as_str()
                .or(event["to"].as_str())
                .unwrap_or("-")
        ),
        "message" => format!(
            "{at}  {place}  message  user {user}: {}",
            cell(&event["text"])
        ),
        "timeout" => format!(
            "{at}  {place}  timeout  user {user} (scheduled end {})",
            event["scheduled_end"].as_str().unwrap_or("-")
        ),
        _ => format!("{at}  {place}  {kind:<7}  user {user}"),
    }
}

// ---- tables ----

/// A result as text for people: a scalar as is, a list of records as a
/// table, a record as `key: value` lines with its lists as tables.
fn render(result: &Value) -> String {
    match result {
        Value::Array(rows) if rows.iter().all(Value::is_object) && !rows.is_empty() => table(rows),
        Value::Array(rows) if rows.is_empty() => "(none)\n".into(),
        Value::Object(fields) => {
            let mut out = String::new();
            let mut lists = String::new();
            for (key, value) in fields {
                match value {
                    Value::Array(rows) if rows.iter().any(Value::is_object) => {
                        lists.push_str(&format!("\n{key}:\n{}", table(rows)));
                    }
                    _ => out.push_str(&format!("{key}: {}\n", cell(value))),
                }
            }
            out + &lists
        }
        other => format!("{}\n", cell(other)),
    }
}

/// Text as it may reach a terminal: control characters escaped (`\n`,
/// `\t`, `\u001b`...), so that what users wrote (chat, names) can neither
/// move the cursor, ring the bell, nor rewrite the screen.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// A value in one table cell.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => escaped(s),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(fields) => fields.values().map(cell).collect::<Vec<_>>().join(" "),
                other => cell(other),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// Records as a table with a header, columns as wide as their widest cell.
fn table(rows: &[Value]) -> String {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        if let Value::Object(fields) = row {
            for key in fields.keys() {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| cell(row.get(c).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: &[String]| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let mut out = line(&header);
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

// ---- import ----

/// The import file: `{"users":[...],"meetings":[...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportFile {
    #[serde(default)]
    users: Vec<Value>,
    #[serde(default)]
    meetings: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportUser {
    id: u64,
    name: String,
    age: u64,
    gender: String,
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportMeeting {
    id: u64,
    title: String,
    description: String,
    public: bool,
    #[serde(default)]
    audience: Vec<String>,
    #[serde(default)]
    instances: Vec<ImportInstance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportInstance {
    order: u64,
    from: String,
    to: String,
}

/// How a malformed entry is named: by its id when it has one, else by its
/// place in the file.
fn label(kind: &str, list: &str, index: usize, raw: &Value) -> String {
    match raw.get("id").and_then(Value::as_u64) {
        Some(id) => format!("{kind} {id}"),
        None => format!("{list}[{index}]"),
    }
}

/// One request of the import, and the entry it stands for.
struct Step {
    entry: String,
    tokens: Vec<String>,
}

/// Load the file through the socket: every request pipelined on one
/// connection (the daemon applies them in order), then one report line per
/// entry. Entries that are not even well-formed are refused here.
fn import(cli: &Cli, file: &PathBuf, shift_from: Option<&str>) -> Result<ExitCode, String> {
    let shift = match shift_from {
        None => chrono::TimeDelta::zero(),
        Some(anchor) => {
            let anchor = chrono::DateTime::parse_from_rfc3339(anchor)
                .map_err(|e| format!("--shift-from {anchor:?} is not an RFC 3339 time: {e}"))?;
            chrono::Utc::now().signed_duration_since(anchor)
        }
    };
    // an instance time moved by the shift (left alone if it does not parse:
    // the daemon then refuses it with its own message)
    let shifted = |time: &str| match chrono::DateTime::parse_from_rfc3339(time) {
        Ok(t) if !shift.is_zero() => (t.with_timezone(&chrono::Utc) + shift)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        _ => time.to_string(),
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let data: ImportFile = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not an import file: {e}", file.display()))?;
    let mut steps = Vec::new();
    let mut refused: Vec<(String, String, String)> = Vec::new();
    for (i, raw) in data.users.into_iter().enumerate() {
        let e_value = raw.clone();
        match serde_json::from_value::<ImportUser>(raw) {
            Ok(u) => steps.push(Step {
                entry: format!("user {}", u.id),
                tokens: [
                    "USER",
                    "SET",
                    &u.id.to_string(),
                    "name",
                    &u.name,
                    "age",
                    &u.age.to_string(),
                    "gender",
                    &u.gender,
                    "email",
                    &u.email,
                ]
                .map(String::from)
                .to_vec(),
            }),
            Err(e) => refused.push((
                label("user", "users", i, &e_value),
                "bad_request".into(),
                e.to_string(),
            )),
        }
    }
    for (i, raw) in data.meetings.into_iter().enumerate() {
        let m = match serde_json::from_value::<ImportMeeting>(raw) {
            Ok(m) => m,
            Err(e) => {
                refused.push((
                    format!("meetings[{i}]"),
                    "bad_request".into(),
                    e.to_string(),
                ));
                continue;
            }
        };
        let id = m.id.to_string();
        steps.push(Step {
            entry: format!("meeting {id}"),
            tokens: [
                "MEETING",
                "SET",
                &id,
                "title",
                &m.title,
                "description",
                &m.description,
                "public",
                &m.public.to_string(),
            ]
            .map(String::from)
            .to_vec(),
        });
        if !m.audience.is_empty() {
            let mut tokens = vec!["AUDIENCE".to_string(), "ADD".into(), id.clone()];
            tokens.extend(m.audience.iter().cloned());
            steps.push(Step {
                entry: format!("meeting {id} audience"),
                tokens,
            });
        }
        for instance in &m.instances {
            steps.push(Step {
                entry: format!("instance {id}/{}", instance.order),
                tokens: [
                    "INSTANCE",
                    "SET",
                    &id,
                    &instance.order.to_string(),
                    "from",
                    &shifted(&instance.from),
                    "to",
                    &shifted(&instance.to),
                    // never rewrite what already happened
                    "FUTURE",
                ]
                .map(String::from)
                .to_vec(),
            });
        }
    }
    let mut client = Client::connect(&cli.socket)?;
    let mut batch = String::new();
    for step in &steps {
        let refs: Vec<&str> = step.tokens.iter().map(String::as_str).collect();
        batch.push_str(&request_line(&refs));
    }
    // Write from a thread of its own while this one reads the replies: the
    // daemon reads only so far ahead, and waits for us to take its replies.
    let mut writer = client
        .writer
        .try_clone()
        .map_err(|e| format!("cannot send to the daemon: {e}"))?;
    let sender = std::thread::spawn(move || writer.write_all(batch.as_bytes()));
    let mut loaded = Vec::new();
    for step in &steps {
        let (_, reply) = client.receive()?;
        if reply["ok"] == json!(true) {
            loaded.push(step.entry.clone());
        } else {
            let code = reply["error"]["code"]
                .as_str()
                .unwrap_or("error")
                .to_string();
            let message = reply["error"]["message"].as_str().unwrap_or("").to_string();
            refused.push((step.entry.clone(), code, message));
        }
    }
    match sender.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot send to the daemon: {e}")),
        Err(_) => return Err("the sending thread failed".into()),
    }
    if cli.json {
        let refused_json: Vec<Value> = refused
            .iter()
            .map(|(entry, code, message)| json!({"entry": entry, "code": code, "message": message}))
            .collect();
        meetingd::outln!("{}", json!({"loaded": loaded, "refused": refused_json}));
    } else {
        for entry in &loaded {
            meetingd::outln!("loaded   {entry}");
        }
        for (entry, code, message) in &refused {
            meetingd::outln!("refused  {entry}: {code}: {message}");
        }
        meetingd::outln!("{} loaded, {} refused", loaded.len(), refused.len());
    }
    Ok(if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
