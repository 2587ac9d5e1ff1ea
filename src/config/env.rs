//! `${VAR}` expansion in config strings, so secrets live in the environment and not in the file.
//!
//! `${VAR}` is replaced by the variable's value; `${VAR:-default}` falls back to `default` when the
//! variable is unset or empty. An unset variable with no default is an error naming the variable and
//! the key path, collected with every other error rather than stopping at the first.

use toml::Value;

use super::ConfigError;

/// Expands every string in the tree in place. `lookup` is `std::env::var` in production; tests
/// pass a closure so they never touch the process environment.
pub fn expand_tree(
    value: &mut Value,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand_str(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(msg) => errors.push(ConfigError::new(join_path(path), msg)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let last = path.pop().unwrap_or_default();
                path.push(format!("{last}[{i}]"));
                expand_tree(item, path, lookup, errors);
                path.pop();
                path.push(last);
            }
        }
        Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                path.push(key_segment(key));
                expand_tree(item, path, lookup, errors);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Expands `${VAR}` and `${VAR:-default}` references in one string.
pub fn expand_str(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in `{input}`"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("`${{{inner}}}` is not a valid variable reference"));
        }
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders a TOML key as a path segment, quoting keys that are not bare (`"eip155:8453"`).
pub fn key_segment(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        key.to_string()
    } else {
        format!("\"{key}\"")
    }
}

pub fn join_path(segments: &[String]) -> String {
    segments.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_references() {
        assert_eq!(expand_str("${KEY}", &env).unwrap(), "s3cret");
        assert_eq!(expand_str("a-${KEY}-b", &env).unwrap(), "a-s3cret-b");
        assert_eq!(expand_str("${NOPE:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand_str("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand_str("plain", &env).unwrap(), "plain");
    }

    #[test]
    fn reports_unset_and_malformed() {
        assert!(expand_str("${NOPE}", &env)
            .unwrap_err()
            .contains("`NOPE` is not set"));
        assert!(expand_str("${KEY", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(expand_str("${A B}", &env)
            .unwrap_err()
            .contains("not a valid"));
    }

    #[test]
    fn collects_every_unset_variable_with_its_path() {
        let mut v: Value = toml::from_str(
            r#"
            [networks."eip155:1"]
            settler_key = "${A}"
            [[routes]]
            upstream = "${B}"
            [[routes]]
            upstream = "${KEY}"
            "#,
        )
        .unwrap();
        let mut errors = Vec::new();
        expand_tree(&mut v, &mut Vec::new(), &env, &mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["networks.\"eip155:1\".settler_key", "routes[0].upstream"]
        );
        assert_eq!(v["routes"][1]["upstream"].as_str(), Some("s3cret"));
    }
}
