//! docs/protocol.md, the protocol reference, agrees with the daemon: every
//! command of HELP has its section with HELP's syntax, and every error code
//! is explained.

use std::path::Path;

use meetingd::error::Code;
use meetingd::protocol::COMMANDS;

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn every_command_of_help_is_in_the_protocol_reference() {
    let doc = read("docs/protocol.md");
    let lines: Vec<&str> = doc.lines().map(str::trim_end).collect();
    for command in COMMANDS {
        let heading = if command.admin {
            format!("### {} *", command.name)
        } else {
            format!("### {}", command.name)
        };
        let at = lines
            .iter()
            .position(|line| *line == heading)
            .unwrap_or_else(|| panic!("docs/protocol.md has no `{heading}` section"));
        // the syntax block right under the heading is HELP's syntax
        let block: Vec<&str> = lines[at + 1..]
            .iter()
            .skip_while(|line| line.is_empty())
            .take(3)
            .copied()
            .collect();
        assert_eq!(
            block.first().copied(),
            Some("```text"),
            "{heading}: a syntax block first"
        );
        assert_eq!(
            block.get(1).copied(),
            Some(command.syntax),
            "{heading}: the syntax is HELP's"
        );
    }
    let sections = lines
        .iter()
        .skip_while(|line| **line != "## Commands")
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .filter(|line| line.starts_with("### "))
        .count();
    assert_eq!(
        sections,
        COMMANDS.len(),
        "docs/protocol.md's Commands has a section per command, and no other"
    );
}

#[test]
fn every_error_code_is_explained() {
    let doc = read("docs/protocol.md");
    for code in Code::ALL {
        let row = format!("| `{}` |", code.as_str());
        let line = doc
            .lines()
            .find(|line| line.starts_with(&row))
            .unwrap_or_else(|| panic!("docs/protocol.md explains no {code} (a `{row}` row)"));
        assert!(
            line.matches(" | ").count() >= 2,
            "{code}: its meaning and what a client should do: {line}"
        );
    }
    for must in ["retrying is safe", "at most once", "same `ID`"] {
        assert!(doc.contains(must), "docs/protocol.md says {must:?}");
    }
}

#[test]
fn the_readme_and_help_point_to_it() {
    assert!(read("README.md").contains("(docs/protocol.md)"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meetingctl"))
        .arg("--help")
        .output()
        .expect("meetingctl --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("docs/protocol.md"), "{help}");
}
