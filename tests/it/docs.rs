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

/// docs/replies.schema.json writes down every reply: each command of HELP
/// has its definition, and every reply line docs/protocol.md shows (the
/// JSON blocks under a command's heading, and those of the WATCH feed) fits
/// it. The harness holds every reply the suite reads to the same file.
#[test]
fn every_reply_the_reference_shows_fits_the_schema() {
    let doc = read("docs/protocol.md");
    let mut command: Option<&str> = None;
    let mut in_json = false;
    let mut checked = std::collections::BTreeSet::new();
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            let name = heading.trim_end_matches(" *");
            command = COMMANDS.iter().find(|c| c.name == name).map(|c| c.name);
        } else if line.starts_with("## ") {
            command = None;
        }
        match line {
            "```json" => in_json = true,
            "```" => in_json = false,
            _ if in_json && line.starts_with('{') => {
                let reply: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("docs/protocol.md: {line} is not JSON: {e}"));
                crate::harness::assert_reply_schema(command, &reply);
                if let Some(command) = command {
                    checked.insert(command);
                }
            }
            _ => {}
        }
    }
    for c in COMMANDS {
        crate::harness::assert_schema(
            "HELP",
            &serde_json::json!({
                "command": c.name, "syntax": c.syntax, "admin": c.admin, "summary": c.summary
            }),
        );
        assert!(
            checked.contains(c.name),
            "docs/protocol.md shows no reply of {} to check against the schema",
            c.name
        );
    }
}

/// Every command has its definition in the schema.
#[test]
fn every_command_has_a_reply_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&read("docs/replies.schema.json")).expect("the schema is JSON");
    for c in COMMANDS {
        assert!(
            schema["$defs"].get(c.name).is_some(),
            "docs/replies.schema.json has no definition of {}",
            c.name
        );
    }
}
