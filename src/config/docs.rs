//! The settings' documentation, made from their declarations: the table in
//! the README (`cronsumer config --markdown` prints it) and `.env.example`
//! (`cronsumer config --example`). Tests fail when either file differs from
//! what the declarations make.

use super::DECLARED;

/// One declared setting.
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    pub var: &'static str,
    /// `None`: unset unless given.
    pub default: Option<&'static str>,
    /// A value to show, commented out, in `.env.example` when there is no default.
    pub example: Option<&'static str>,
    /// Left commented out in `.env.example`, so that a container's own value
    /// (set in its image or by its orchestrator) holds under `--env-file`.
    pub host_specific: bool,
    pub section: &'static str,
    /// One line, from the declaration's doc comment.
    pub help: &'static str,
}

impl Declared {
    pub(super) const fn default(mut self, value: &'static str) -> Self {
        self.default = Some(value);
        self
    }

    pub(super) const fn example(mut self, value: &'static str) -> Self {
        self.example = Some(value);
        self
    }

    pub(super) const fn host_specific(mut self) -> Self {
        self.host_specific = true;
        self
    }

    fn help(&self) -> &'static str {
        self.help.trim()
    }
}

/// Settings that come in families, one variable per member.
struct Family {
    section: &'static str,
    pattern: &'static str,
    default: &'static str,
    help: &'static str,
    /// Commented-out lines for `.env.example`.
    example: &'static [&'static str],
}

const FAMILIES: &[Family] = &[
    Family {
        section: "Kafka",
        pattern: "KAFKA_TOPIC_<MODULE>",
        default: "(the module's topic)",
        help: "a module's topic name (`KAFKA_PRICE_EVENTS_TOPIC` is accepted for `KAFKA_TOPIC_PRICE_EVENTS`); the prefix still applies",
        example: &["KAFKA_TOPIC_PRICE_EVENTS=market.prices.v1"],
    },
    Family {
        section: "Kafka",
        pattern: "KAFKA_PROP_<NAME>",
        default: "(none)",
        help: "any librdkafka property, `<name>` lower-cased with `_` as `.`: `KAFKA_PROP_SESSION_TIMEOUT_MS` sets `session.timeout.ms`",
        example: &["KAFKA_PROP_SESSION_TIMEOUT_MS=6000"],
    },
    Family {
        section: "Consumer",
        pattern: "CONSUMER_BATCH_SIZE_<MODULE>",
        default: "(`CONSUMER_BATCH_SIZE`)",
        help: "a module's own batch size (1 to 100000), e.g. `CONSUMER_BATCH_SIZE_PREDICTIONS=10000`: one model call per batch",
        example: &["CONSUMER_BATCH_SIZE_PREDICTIONS=500"],
    },
    Family {
        section: "Consumer",
        pattern: "CONSUMER_BATCH_TIMEOUT_MS_<MODULE>",
        default: "(`CONSUMER_BATCH_TIMEOUT_MS`)",
        help: "a module's own batch timeout",
        example: &["CONSUMER_BATCH_TIMEOUT_MS_PREDICTIONS=2000"],
    },
];

const ENV_EXAMPLE_HEAD: &str = "\
# cronsumer settings. Copy to .env and edit; every line below shows the default.
# Variables already set in the process environment win over this file.
# Bad values are errors (exit code 2), never silently replaced by defaults.
# Values are written as they are, never quoted: cronsumer, `docker run --env-file`
# and systemd's EnvironmentFile all read this file the same way.
# Made by `cronsumer config --example` from the settings' declarations.
";

fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for d in DECLARED {
        if !out.contains(&d.section) {
            out.push(d.section);
        }
    }
    out
}

/// `.env.example`: every setting with its help, set to its default, or
/// commented out with an example when it has none.
pub fn env_example() -> String {
    let mut out = String::from(ENV_EXAMPLE_HEAD);
    for section in sections() {
        out.push_str(&format!("\n# --- {section} {}\n", "-".repeat(72usize.saturating_sub(section.len()))));
        for d in DECLARED.iter().filter(|d| d.section == section) {
            out.push_str(&format!("# {}.\n", sentence(d.help())));
            match (d.default, d.host_specific) {
                (Some(v), false) => out.push_str(&format!("{}={v}\n", d.var)),
                (Some(v), true) => {
                    out.push_str("# (left commented out so that a container's own setting holds)\n");
                    out.push_str(&format!("# {}={v}\n", d.var));
                }
                (None, _) => out.push_str(&format!("# {}={}\n", d.var, d.example.unwrap_or_default())),
            }
        }
        for f in FAMILIES.iter().filter(|f| f.section == section) {
            out.push_str(&format!("# {}: {}.\n", f.pattern, f.help));
            for line in f.example {
                out.push_str(&format!("# {line}\n"));
            }
        }
    }
    out
}

/// `help` as a comment sentence: its first letter capitalised.
fn sentence(help: &str) -> String {
    let mut chars = help.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// The README's settings table, in Markdown.
pub fn settings_table() -> String {
    let mut out = String::from("| Setting | Default | Meaning |\n|---|---|---|\n");
    for section in sections() {
        for d in DECLARED.iter().filter(|d| d.section == section) {
            let default = match d.default {
                None => "(none)".to_string(),
                Some("") => "(empty)".to_string(),
                Some(v) => format!("`{v}`"),
            };
            out.push_str(&format!("| `{}` | {default} | {} |\n", d.var, d.help()));
        }
        for f in FAMILIES.iter().filter(|f| f.section == section) {
            out.push_str(&format!("| `{}` | {} | {} |\n", f.pattern, f.default, f.help));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(file: &str) -> String {
        std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn env_example_is_made_from_the_declarations() {
        let made = env_example();
        assert!(
            read(".env.example") == made,
            ".env.example differs from the declarations; run `cargo run -- config --example > .env.example`. \
             It should be:\n{made}"
        );
    }

    #[test]
    fn readme_table_is_made_from_the_declarations() {
        let made = settings_table();
        assert!(
            read("README.md").contains(&made),
            "the README's settings table differs from the declarations; replace it with the output of \
             `cargo run -- config --markdown`, which is:\n{made}"
        );
    }

    #[test]
    fn declarations_are_complete() {
        for d in DECLARED {
            assert!(!d.help().is_empty() && !d.help().contains('\n'), "{} needs one line of help", d.var);
            assert!(!d.section.is_empty(), "{} has no section", d.var);
            assert_eq!(DECLARED.iter().filter(|o| o.var == d.var).count(), 1, "{} is declared twice", d.var);
        }
    }
}
