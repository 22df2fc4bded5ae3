//! Standard output of the command-line tools (`meetingd library`,
//! `meetingctl`). A reader that stops reading (`meetingd library | head -2`,
//! `meetingctl watch 1 | head`) ends the tool quietly with status 0, as
//! Unix tools do, where `print!` would panic; any other failure to write
//! ends it with status 1, saying why.

use std::fmt::Arguments;
use std::io::{ErrorKind, Write};

/// Write `args` to standard output and flush it (see the module).
pub fn print(args: Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_fmt(args).and_then(|()| out.flush()) {
        if err.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cannot write to standard output: {err}");
        std::process::exit(1);
    }
}

/// `print!` through [`print`]: a closed pipe ends the tool quietly.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::print(format_args!($($arg)*))
    };
}

/// `println!` through [`print`]: a closed pipe ends the tool quietly.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
