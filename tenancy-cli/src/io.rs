//! The process's streams, environment and terminal, behind one struct so the
//! whole CLI can run in-process in tests ([`crate::run_with`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use tenancy_core::Secret;

use crate::exit::CliError;

/// How many times a prompt asks again after a wrong or unusable answer
/// (a wrong password, two passwords that differ, an invalid id).
pub(crate) const PROMPT_TRIES: usize = 3;

/// The user declined a confirmation (or gave no answer at a prompt that
/// would change something): the run ends with exit 0 and a plain
/// "Cancelled; nothing changed." line, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cancelled; nothing changed")
    }
}

impl std::error::Error for Cancelled {}

/// A secret as read from anywhere (a prompt, stdin, the environment):
/// without surrounding whitespace, CR and newline, which no secret or
/// password of tenancy contains but pasting and Windows files add.
pub(crate) fn clean_secret(raw: &str) -> Secret {
    Secret::new(raw.trim())
}

/// Asks the user for missing values on a terminal.
pub trait Prompter {
    /// True when a user can answer prompts (stdin and stderr are a terminal).
    fn is_interactive(&self) -> bool;
    /// Asks a question with visible input; returns the answer without the newline.
    fn ask(&mut self, question: &str) -> anyhow::Result<String>;
    /// Asks for a secret with hidden input.
    fn ask_hidden(&mut self, question: &str) -> anyhow::Result<Secret>;
}

/// Prompts on the controlling terminal; hidden input through rpassword.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TerminalPrompter {
    interactive: bool,
}

impl TerminalPrompter {
    /// A prompter that is interactive when stdin and stderr are terminals.
    pub(crate) fn detect() -> Self {
        TerminalPrompter {
            interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        }
    }
}

impl Prompter for TerminalPrompter {
    fn is_interactive(&self) -> bool {
        self.interactive
    }

    fn ask(&mut self, question: &str) -> anyhow::Result<String> {
        let mut err = std::io::stderr();
        write!(err, "{question}")?;
        err.flush()?;
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the answer from the terminal")?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    fn ask_hidden(&mut self, question: &str) -> anyhow::Result<Secret> {
        let value = rpassword::prompt_password(question)
            .context("reading hidden input from the terminal")?;
        Ok(Secret::new(value))
    }
}

/// Which standard streams are terminals, and how wide stdout's is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Terminal {
    /// stdout is a terminal.
    pub stdout: bool,
    /// stderr is a terminal.
    pub stderr: bool,
    /// The width of stdout's terminal in columns, when it is one and its
    /// size is known (`COLUMNS` overrides it).
    pub columns: Option<usize>,
}

/// Everything the CLI reads from or writes to outside the store.
pub struct Io {
    /// Standard input.
    pub stdin: Box<dyn BufRead>,
    /// Standard output: results.
    pub stdout: Box<dyn Write>,
    /// Standard error: messages, warnings, errors, progress.
    pub stderr: Box<dyn Write>,
    /// Prompts for missing values.
    pub prompter: Box<dyn Prompter>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Which streams are terminals.
    pub terminal: Terminal,
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("env_vars", &self.env.len())
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

impl Io {
    /// The real process: standard streams, the process environment, the terminal.
    pub fn process() -> Self {
        Io {
            stdin: Box::new(std::io::BufReader::new(std::io::stdin())),
            stdout: Box::new(std::io::stdout()),
            stderr: Box::new(std::io::stderr()),
            prompter: Box::new(TerminalPrompter::detect()),
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            terminal: Terminal {
                stdout: std::io::stdout().is_terminal(),
                stderr: std::io::stderr().is_terminal(),
                columns: terminal_size::terminal_size_of(std::io::stdout())
                    .map(|(w, _)| usize::from(w.0)),
            },
        }
    }

    /// An environment variable, `None` when unset or empty.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// True when colour may be used on stdout (see [`Io::color_on`]).
    pub fn stdout_color(&self) -> bool {
        self.color_on(self.terminal.stdout)
    }

    /// True when colour may be used on stderr (see [`Io::color_on`]).
    pub fn stderr_color(&self) -> bool {
        self.color_on(self.terminal.stderr)
    }

    /// Whether a stream gets colour: never with `NO_COLOR` (any non-empty
    /// value); always with `CLICOLOR_FORCE` (non-empty, not `0`), even into
    /// a pipe; else only on a terminal (`is_terminal`) whose `TERM` is not
    /// `dumb` and where `CLICOLOR` is not `0`.
    fn color_on(&self, is_terminal: bool) -> bool {
        if self.var("NO_COLOR").is_some() {
            return false;
        }
        if self.var("CLICOLOR_FORCE").is_some_and(|v| v != "0") {
            return true;
        }
        is_terminal && self.var("TERM") != Some("dumb") && self.var("CLICOLOR") != Some("0")
    }

    /// The width tables on stdout must fit: `None` (never truncate) unless
    /// stdout is a terminal; then `COLUMNS` when it is a positive number,
    /// else the terminal's own width.
    pub fn stdout_width(&self) -> Option<usize> {
        if !self.terminal.stdout {
            return None;
        }
        self.var("COLUMNS")
            .and_then(|c| c.trim().parse::<usize>().ok())
            .filter(|&c| c > 0)
            .or(self.terminal.columns)
    }

    /// Reads the first line of stdin as a secret (for the `--*-stdin` flags).
    pub fn secret_from_stdin(&mut self, what: &str) -> anyhow::Result<Secret> {
        let mut line = String::new();
        self.stdin
            .read_line(&mut line)
            .with_context(|| format!("reading the {what} from stdin"))?;
        let secret = clean_secret(&line);
        line.clear();
        line.shrink_to(0);
        if secret.expose().is_empty() {
            return Err(CliError::usage(format!(
                "no {what} on stdin; pipe it in, e.g. `printf '%s\\n' \"$VALUE\" | tenancy ...`"
            ))
            .into());
        }
        Ok(secret)
    }

    /// Resolves a secret: `--*-stdin`, else the env var, else a hidden prompt.
    pub fn secret(
        &mut self,
        what: &str,
        from_stdin: bool,
        stdin_flag: &str,
        env_var: &str,
        question: &str,
    ) -> anyhow::Result<Secret> {
        if from_stdin {
            return self.secret_from_stdin(what);
        }
        if let Some(v) = self.var(env_var) {
            let s = clean_secret(v);
            if s.expose().is_empty() {
                return Err(CliError::usage(format!("{env_var} holds only whitespace")).into());
            }
            return Ok(s);
        }
        if self.prompter.is_interactive() {
            let s = clean_secret(self.prompter.ask_hidden(question)?.expose());
            if s.expose().is_empty() {
                return Err(CliError::usage(format!("no {what} given")).into());
            }
            return Ok(s);
        }
        Err(CliError::usage(format!(
            "no {what}: pass {stdin_flag} and pipe it in, or set {env_var}, or run in a terminal to be prompted"
        ))
        .into())
    }

    /// True when [`Io::secret`] would ask on the terminal (neither
    /// `--*-stdin` nor `env_var`), so a wrong answer may be asked again.
    pub(crate) fn will_prompt(&self, from_stdin: bool, env_var: &str) -> bool {
        !from_stdin && self.var(env_var).is_none() && self.prompter.is_interactive()
    }

    /// Asks `question` with its default in brackets (`Plan [free]: `);
    /// Enter (an empty or blank answer) accepts the default, `None` when
    /// there is none.
    pub(crate) fn ask_default(
        &mut self,
        question: &str,
        default: Option<&str>,
    ) -> anyhow::Result<Option<String>> {
        let shown = default.unwrap_or("none");
        let answer = self.prompter.ask(&format!("{question} [{shown}]: "))?;
        let answer = answer.trim();
        Ok(if answer.is_empty() {
            default.map(str::to_string)
        } else {
            Some(answer.to_string())
        })
    }

    /// Resolves a plain value: the flag, else the env var, else a prompt.
    pub fn value(
        &mut self,
        what: &str,
        flag_value: Option<String>,
        flag: &str,
        env_var: &str,
        question: &str,
    ) -> anyhow::Result<String> {
        if let Some(v) = flag_value.filter(|v| !v.is_empty()) {
            return Ok(v);
        }
        if let Some(v) = self.var(env_var) {
            return Ok(v.to_string());
        }
        if self.prompter.is_interactive() {
            let v = self.prompter.ask(question)?;
            let v = v.trim().to_string();
            if !v.is_empty() {
                return Ok(v);
            }
        }
        Err(CliError::usage(format!("no {what}: pass {flag} or set {env_var}")).into())
    }

    /// Asks a yes/no question on a terminal; `None` when nobody can answer.
    pub fn confirm(&mut self, question: &str) -> anyhow::Result<Option<bool>> {
        if !self.prompter.is_interactive() {
            return Ok(None);
        }
        let a = self.prompter.ask(question)?;
        Ok(Some(matches!(
            a.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        )))
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! An in-memory `Io` for tests: scripted prompts and captured output.

    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// A writer whose bytes the test can read back.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Captured {
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
        }
    }

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Answers prompts from a script; records the questions.
    #[derive(Debug, Default)]
    pub(crate) struct Scripted {
        pub(crate) interactive: bool,
        pub(crate) answers: VecDeque<String>,
        pub(crate) asked: Arc<Mutex<Vec<String>>>,
    }

    impl Prompter for Scripted {
        fn is_interactive(&self) -> bool {
            self.interactive
        }
        fn ask(&mut self, q: &str) -> anyhow::Result<String> {
            self.asked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(q.into());
            self.answers
                .pop_front()
                .ok_or_else(|| anyhow::anyhow!("no scripted answer for {q:?}"))
        }
        fn ask_hidden(&mut self, q: &str) -> anyhow::Result<Secret> {
            self.ask(q).map(Secret::new)
        }
    }

    /// A test `Io` plus handles on its output.
    #[derive(Debug)]
    pub(crate) struct TestIo {
        pub(crate) io: Io,
        pub(crate) out: Captured,
        pub(crate) err: Captured,
    }

    pub(crate) fn test_io(stdin: &str, env: &[(&str, &str)], prompter: Scripted) -> TestIo {
        let out = Captured::default();
        let err = Captured::default();
        let io = Io {
            stdin: Box::new(std::io::Cursor::new(stdin.as_bytes().to_vec())),
            stdout: Box::new(out.clone()),
            stderr: Box::new(err.clone()),
            prompter: Box::new(prompter),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            terminal: Terminal::default(),
        };
        TestIo { io, out, err }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use crate::exit::{exit_code, USAGE};

    #[test]
    fn secret_sources_in_order() {
        let mut t = test_io(
            "from-stdin\r\nrest",
            &[("S", "from-env")],
            Scripted::default(),
        );
        let s = t.io.secret("secret", true, "--s-stdin", "S", "?").unwrap();
        assert_eq!(s.expose(), "from-stdin");
        let s = t.io.secret("secret", false, "--s-stdin", "S", "?").unwrap();
        assert_eq!(s.expose(), "from-env");

        let prompter = Scripted {
            interactive: true,
            answers: ["typed".to_string()].into(),
            ..Default::default()
        };
        let mut t = test_io("", &[], prompter);
        let s =
            t.io.secret("secret", false, "--s-stdin", "S", "Secret: ")
                .unwrap();
        assert_eq!(s.expose(), "typed");

        let mut t = test_io("", &[], Scripted::default());
        let e =
            t.io.secret("secret", false, "--s-stdin", "S", "?")
                .unwrap_err();
        assert_eq!(exit_code(&e), USAGE);
        assert!(e.to_string().contains("--s-stdin"), "{e}");
        let e =
            t.io.secret("secret", true, "--s-stdin", "S", "?")
                .unwrap_err();
        assert_eq!(exit_code(&e), USAGE);
    }

    #[test]
    fn values_and_confirmations() {
        let mut t = test_io("", &[("T", "env-tenant")], Scripted::default());
        assert_eq!(
            t.io.value("tenant", Some("flag".into()), "--t", "T", "?")
                .unwrap(),
            "flag"
        );
        assert_eq!(
            t.io.value("tenant", None, "--t", "T", "?").unwrap(),
            "env-tenant"
        );
        assert_eq!(t.io.confirm("sure?").unwrap(), None);
        let mut t = test_io("", &[], Scripted::default());
        assert!(t.io.value("tenant", None, "--t", "T", "?").is_err());
        let p = Scripted {
            interactive: true,
            answers: ["Yes".to_string(), "n".to_string()].into(),
            ..Default::default()
        };
        let mut t = test_io("", &[], p);
        assert_eq!(t.io.confirm("sure?").unwrap(), Some(true));
        assert_eq!(t.io.confirm("sure?").unwrap(), Some(false));
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let mut t = test_io("", &[], Scripted::default());
        assert!(!t.io.stdout_color());
        t.io.terminal.stdout = true;
        t.io.terminal.stderr = true;
        assert!(t.io.stdout_color() && t.io.stderr_color());
        t.io.env.insert("NO_COLOR".into(), "1".into());
        assert!(!t.io.stdout_color() && !t.io.stderr_color());
    }
}

#[cfg(test)]
mod terminal_tests {
    use super::testing::*;

    fn io(env: &[(&str, &str)], terminal: bool) -> TestIo {
        let mut t = test_io("", env, Scripted::default());
        t.io.terminal.stdout = terminal;
        t.io.terminal.stderr = terminal;
        t.io.terminal.columns = Some(100);
        t
    }

    #[test]
    fn colour_follows_term_clicolor_and_no_color() {
        assert!(io(&[("TERM", "xterm-256color")], true).io.stdout_color());
        assert!(!io(&[("TERM", "dumb")], true).io.stdout_color());
        assert!(!io(&[("TERM", "dumb")], true).io.stderr_color());
        assert!(!io(&[("CLICOLOR", "0")], true).io.stdout_color());
        // CLICOLOR_FORCE: colour even into a pipe or on a dumb terminal...
        assert!(io(&[("CLICOLOR_FORCE", "1")], false).io.stdout_color());
        assert!(io(&[("CLICOLOR_FORCE", "1"), ("TERM", "dumb")], true)
            .io
            .stderr_color());
        assert!(!io(&[("CLICOLOR_FORCE", "0")], false).io.stdout_color());
        // ...but NO_COLOR wins.
        assert!(!io(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], true)
            .io
            .stdout_color());
    }

    #[test]
    fn the_width_is_the_terminals_or_columns_and_none_into_a_pipe() {
        assert_eq!(io(&[], true).io.stdout_width(), Some(100));
        assert_eq!(io(&[("COLUMNS", "42")], true).io.stdout_width(), Some(42));
        assert_eq!(
            io(&[("COLUMNS", "wide")], true).io.stdout_width(),
            Some(100)
        );
        assert_eq!(io(&[("COLUMNS", "0")], true).io.stdout_width(), Some(100));
        assert_eq!(io(&[("COLUMNS", "42")], false).io.stdout_width(), None);
        assert_eq!(io(&[], false).io.stdout_width(), None);
    }
}
