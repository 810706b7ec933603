//! `${NAME}` in a config file's strings, replaced by the environment
//! variable `NAME` before the file is parsed, so that secrets and
//! per-deployment addresses stay out of the file.
//!
//! - `${NAME}`: the variable's value; a variable that is not set is an
//!   error naming it and the line, never a silent empty string.
//! - `${NAME:-default}`: `default` when `NAME` is unset or empty, as in a
//!   POSIX shell.
//! - `$${`: a literal `${`.
//!
//! Only inside TOML strings: a `${` in a comment or a key is left alone.
//! A value is escaped for the string it lands in, so a quote or a newline
//! in it cannot end the string early or add a key; a literal (`'…'`)
//! string cannot escape, so a value that would break one is refused.
//! Values never appear in an error.

use std::fmt;

/// A config file's text with its variables replaced, and what replaced
/// them (for redaction: the values are secrets until shown otherwise).
#[derive(Clone, Default)]
pub struct Expanded {
    pub(crate) text: String,
    pub(crate) values: Vec<Substitution>,
}

/// One variable's value as it was put in the file.
#[derive(Clone)]
pub(crate) struct Substitution {
    pub(crate) name: String,
    pub(crate) value: String,
}

impl fmt::Debug for Expanded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The names, never the values.
        let names: Vec<&str> = self.values.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Expanded")
            .field("variables", &names)
            .finish_non_exhaustive()
    }
}

impl Expanded {
    /// Whether any variable was replaced.
    pub fn is_expanded(&self) -> bool {
        !self.values.is_empty()
    }

    /// `text` with every non-empty value of at least 3 characters written
    /// back as its `${NAME}`, longest first (shorter values, such as a
    /// retry count, would mask unrelated text and could hide no secret).
    pub fn mask(&self, text: &str) -> String {
        let mut values: Vec<&Substitution> =
            self.values.iter().filter(|s| s.value.len() >= 3).collect();
        values.sort_by_key(|s| std::cmp::Reverse(s.value.len()));
        let mut out = text.to_owned();
        for s in values {
            out = out.replace(&s.value, &format!("${{{}}}", s.name));
        }
        out
    }

    /// The names of `headers` whose values came from the environment: they
    /// are secrets.
    pub fn secret_headers<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Vec<String> {
        headers
            .into_iter()
            .filter(|(_, v)| self.holds_value(v))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether `value` holds any replaced value (of any length but 0).
    pub fn holds_value(&self, value: &str) -> bool {
        self.values
            .iter()
            .any(|s| !s.value.is_empty() && value.contains(&s.value))
    }
}

/// Where in a TOML document the scanner is.
#[derive(Clone, Copy, PartialEq)]
enum In {
    Code,
    Comment,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
}

/// Replaces the variables in `text`'s strings, looking each up with
/// `lookup`. The error names the variable and the line.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Expanded, String> {
    if !text.contains("${") {
        return Ok(Expanded {
            text: text.to_owned(),
            values: Vec::new(),
        });
    }
    let mut out = String::with_capacity(text.len());
    let mut values = Vec::new();
    let mut state = In::Code;
    let bytes = text.as_bytes();
    let mut line = 1;
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let c = rest.chars().next().unwrap_or('\0');
        if c == '\n' {
            line += 1;
        }
        match state {
            In::Code => {
                let (next, skip) = if rest.starts_with("\"\"\"") {
                    (In::MultiBasic, 3)
                } else if rest.starts_with("'''") {
                    (In::MultiLiteral, 3)
                } else if c == '"' {
                    (In::Basic, 1)
                } else if c == '\'' {
                    (In::Literal, 1)
                } else if c == '#' {
                    (In::Comment, 1)
                } else {
                    (In::Code, c.len_utf8())
                };
                out.push_str(&rest[..skip]);
                state = next;
                i += skip;
                continue;
            }
            In::Comment => {
                if c == '\n' {
                    state = In::Code;
                }
            }
            In::Basic | In::MultiBasic => {
                if c == '\\' {
                    // An escape: the next character is the escape's.
                    let n = rest[1..].chars().next().map_or(0, char::len_utf8);
                    if rest[1..].starts_with('\n') {
                        line += 1;
                    }
                    out.push_str(&rest[..1 + n]);
                    i += 1 + n;
                    continue;
                }
                let end = if state == In::Basic { "\"" } else { "\"\"\"" };
                if rest.starts_with(end) {
                    out.push_str(end);
                    state = In::Code;
                    i += end.len();
                    continue;
                }
            }
            In::Literal | In::MultiLiteral => {
                let end = if state == In::Literal { "'" } else { "'''" };
                if rest.starts_with(end) {
                    out.push_str(end);
                    state = In::Code;
                    i += end.len();
                    continue;
                }
            }
        }
        let in_string = !matches!(state, In::Code | In::Comment);
        if in_string && rest.starts_with("$${") {
            out.push_str("${");
            i += 3;
            continue;
        }
        if in_string && rest.starts_with("${") {
            let (sub, used) = variable(&rest[2..], line, &lookup)?;
            put(&mut out, &sub.value, state, &sub.name, line)?;
            values.push(sub);
            i += 2 + used;
            continue;
        }
        out.push(c);
        i += c.len_utf8();
    }
    Ok(Expanded { text: out, values })
}

/// `NAME}` or `NAME:-default}` at the start of `rest`: the variable's
/// value and how many bytes it took.
fn variable(
    rest: &str,
    line: usize,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(Substitution, usize), String> {
    let Some(close) = rest.find('}') else {
        return Err(format!("line {line}: `${{` without its closing `}}`"));
    };
    let inner = &rest[..close];
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
    if !valid {
        // The text between the braces is not shown: it may be a secret
        // typed where a name goes.
        return Err(format!(
            "line {line}: what follows `${{` is not a variable name (letters, digits and `_`; `$${{` for a literal `${{`)"
        ));
    }
    let value = match (lookup(name), default) {
        (Some(v), Some(d)) if v.is_empty() => d.to_owned(),
        (Some(v), _) => v,
        (None, Some(d)) => d.to_owned(),
        (None, None) => {
            return Err(format!(
                "line {line}: the environment variable {name} is not set (`${{{name}:-default}}` gives a default)"
            ))
        }
    };
    Ok((
        Substitution {
            name: name.to_owned(),
            value,
        },
        close + 1,
    ))
}

/// Writes `value` into a string of kind `state`, escaped for it.
fn put(out: &mut String, value: &str, state: In, name: &str, line: usize) -> Result<(), String> {
    match state {
        In::Basic | In::MultiBasic => {
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
            Ok(())
        }
        _ => {
            let end = if state == In::Literal { "'" } else { "'''" };
            if value.contains(end) || value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(format!(
                    "line {line}: the value of {name} cannot go in a '…' string (it holds a quote or a control character); write \"${{{name}}}\" instead"
                ));
            }
            out.push_str(value);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.5".into()),
            "TOKEN" => Some("Bearer sk-\"1\"\\\nx".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("it's".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, String> {
        expand(text, env).map(|e| e.text)
    }

    #[test]
    fn a_variable_in_a_string_is_replaced_and_escaped_for_it() {
        assert_eq!(
            run("url = \"http://${HOST}:80/\"").unwrap(),
            "url = \"http://10.0.0.5:80/\""
        );
        let t = run("h = \"${TOKEN}\"").unwrap();
        assert_eq!(t, "h = \"Bearer sk-\\\"1\\\"\\\\\\u000Ax\"");
        let v: toml::Table = toml::from_str(&t).unwrap();
        assert_eq!(v["h"].as_str().unwrap(), "Bearer sk-\"1\"\\\nx");
        assert_eq!(
            run("u = 'http://${HOST}/'").unwrap(),
            "u = 'http://10.0.0.5/'"
        );
        assert_eq!(
            run("u = \"\"\"a\n${HOST}\"\"\"").unwrap(),
            "u = \"\"\"a\n10.0.0.5\"\"\""
        );
    }

    #[test]
    fn defaults_escapes_comments_and_keys() {
        assert_eq!(run("a = \"${NOPE:-x:1}\"").unwrap(), "a = \"x:1\"");
        assert_eq!(run("a = \"${EMPTY:-d}\"").unwrap(), "a = \"d\"");
        assert_eq!(run("a = \"${EMPTY}\"").unwrap(), "a = \"\"");
        assert_eq!(run("a = \"$${HOST}\"").unwrap(), "a = \"${HOST}\"");
        assert_eq!(run("# ${NOPE}\na = 1").unwrap(), "# ${NOPE}\na = 1");
        assert_eq!(run("a = \"\\\"${HOST}\"").unwrap(), "a = \"\\\"10.0.0.5\"");
    }

    #[test]
    fn an_unset_variable_is_named_with_its_line_and_nothing_leaks() {
        let e = run("a = 1\nb = \"${NOPE}\"").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("NOPE") && e.contains("not set"),
            "{e}"
        );
        let e = run("a = \"${HOST\"").unwrap_err();
        assert!(e.contains("closing"), "{e}");
        let e = run("a = \"${1X}\"").unwrap_err();
        assert!(e.contains("not a variable name"), "{e}");
        let e = run("a = '${QUOTE}'").unwrap_err();
        assert!(e.contains("QUOTE") && !e.contains("it's"), "{e}");
        let e = run("a = '${TOKEN}'").unwrap_err();
        assert!(!e.contains("sk-"), "{e}");
    }

    proptest::proptest! {
        /// Whatever a variable holds, a "…" string gets exactly it, and the
        /// document keeps its other keys: a value cannot end the string or
        /// add a key.
        #[test]
        fn any_value_lands_whole_in_a_basic_string(value in "\\PC*|[\"\\\\\n\r\t\x00\x7f'#=\\[\\]{}$]*") {
            for doc in ["a = \"<${V}>\"\nb = 1\n", "a = \"\"\"<${V}>\"\"\"\nb = 1\n"] {
                let e = expand(doc, |_| Some(value.clone())).unwrap();
                let t: toml::Table = toml::from_str(&e.text).unwrap();
                proptest::prop_assert_eq!(t["a"].as_str().unwrap(), format!("<{value}>"));
                proptest::prop_assert_eq!(t["b"].as_integer(), Some(1));
                proptest::prop_assert_eq!(t.len(), 2);
            }
        }

        /// Any text at all: an error or a text, never a panic.
        #[test]
        fn any_text_expands_or_is_refused(text in "\\PC*") {
            let _ = expand(&text, |n| (n.len() % 2 == 0).then(|| n.to_owned()));
        }
    }

    #[test]
    fn values_are_masked_and_never_in_debug() {
        let e = expand("a = \"${TOKEN}\"\nb = \"${HOST}\"", env).unwrap();
        assert!(e.is_expanded());
        let shown = format!("{e:?}");
        assert!(shown.contains("TOKEN") && !shown.contains("sk-"), "{shown}");
        assert_eq!(e.mask("to 10.0.0.5:80"), "to ${HOST}:80");
        assert!(e.holds_value("Authorization: Bearer sk-\"1\"\\\nx"));
        assert!(!e.holds_value("other"));
    }
}
