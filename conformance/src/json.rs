//! The `json = …` expectation: the actual answer must contain the expected value.
//!
//! Objects match when every expected key is present and matches (extra keys are fine, so a
//! scenario states only what its rule is about). Arrays match element by element and must have
//! the same length: an extra mailbox in a listing is a difference worth seeing. Scalars are
//! equal; numbers compare by value, so `1` matches `1.0`.

use serde_json::Value;

/// `Ok` when `actual` contains `expected`; otherwise the first difference, located by a
/// JSONPath-like path (`$.mailboxes[1].name: expected "a", got "b"`).
pub fn contains(actual: &Value, expected: &Value) -> Result<(), String> {
    walk(actual, expected, &mut String::from("$"))
}

fn walk(actual: &Value, expected: &Value, path: &mut String) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, want) in want {
                let len = path.len();
                push_key(path, key);
                match have.get(key) {
                    Some(have) => walk(have, want, path)?,
                    None => return Err(format!("{path}: missing, expected {want}")),
                }
                path.truncate(len);
            }
            Ok(())
        }
        (Value::Array(want), Value::Array(have)) => {
            if want.len() != have.len() {
                return Err(format!(
                    "{path}: expected an array of {} elements, got {}: {actual}",
                    want.len(),
                    have.len()
                ));
            }
            for (i, (have, want)) in have.iter().zip(want).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(have, want, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        (Value::Number(want), Value::Number(have)) => {
            let same = match (want.as_i64(), have.as_i64()) {
                (Some(a), Some(b)) => a == b,
                _ => match (want.as_u64(), have.as_u64()) {
                    (Some(a), Some(b)) => a == b,
                    _ => want.as_f64() == have.as_f64(),
                },
            };
            if same {
                Ok(())
            } else {
                Err(format!("{path}: expected {expected}, got {actual}"))
            }
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!("{path}: expected {expected}, got {actual}")),
    }
}

fn push_key(path: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str(&format!("[{}]", Value::from(key)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_are_subsets() {
        let actual = json!({"ok": true, "property": "authentication", "value": "local"});
        assert_eq!(contains(&actual, &json!({})), Ok(()));
        assert_eq!(contains(&actual, &json!({"ok": true})), Ok(()));
        assert_eq!(
            contains(&actual, &json!({"ok": true, "value": "local"})),
            Ok(())
        );
        assert_eq!(
            contains(&actual, &json!({"value": "ad"})),
            Err(r#"$.value: expected "ad", got "local""#.into())
        );
        assert_eq!(
            contains(&actual, &json!({"rule": null})),
            Err("$.rule: missing, expected null".into())
        );
    }

    #[test]
    fn nesting_reports_the_path() {
        let actual = json!({"domains": [{"name": "a.jp", "mailboxes": 2}, {"name": "b.jp", "mailboxes": 0}]});
        let expected = json!({"domains": [{"name": "a.jp"}, {"mailboxes": 1}]});
        assert_eq!(
            contains(&actual, &expected),
            Err("$.domains[1].mailboxes: expected 1, got 0".into())
        );
        let odd = json!({"a b": {"x": 1}});
        assert_eq!(
            contains(&odd, &json!({"a b": {"x": 2}})),
            Err(r#"$["a b"].x: expected 2, got 1"#.into())
        );
    }

    #[test]
    fn arrays_match_in_length_and_order() {
        let actual = json!([1, 2, 3]);
        assert_eq!(contains(&actual, &json!([1, 2, 3])), Ok(()));
        assert!(
            contains(&actual, &json!([1, 2]))
                .unwrap_err()
                .contains("expected an array of 2 elements, got 3")
        );
        assert_eq!(
            contains(&actual, &json!([1, 3, 2])),
            Err("$[1]: expected 3, got 2".into())
        );
        assert_eq!(
            contains(&json!([{"a": 1, "b": 2}]), &json!([{"b": 2}])),
            Ok(())
        );
    }

    #[test]
    fn scalars_and_kinds() {
        assert_eq!(contains(&json!(1.0), &json!(1)), Ok(()));
        assert_eq!(contains(&json!(-3), &json!(-3)), Ok(()));
        assert!(contains(&json!("1"), &json!(1)).is_err());
        assert!(contains(&json!(null), &json!(false)).is_err());
        assert!(contains(&json!([]), &json!({})).is_err());
        assert_eq!(
            contains(&json!({"a": [1]}), &json!({"a": {"b": 1}})),
            Err(r#"$.a: expected {"b":1}, got [1]"#.into())
        );
    }

    #[test]
    fn toml_values_compare_with_json() {
        let from_toml: Value = toml::from_str::<toml::Table>("v = { ok = true, exit = 3 }")
            .map(|t| serde_json::to_value(&t["v"]).unwrap())
            .unwrap();
        let actual: Value =
            serde_json::from_str(r#"{"ok": true, "exit": 3, "rule": "R2"}"#).unwrap();
        assert_eq!(contains(&actual, &from_toml), Ok(()));
    }
}
