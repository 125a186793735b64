//! Reading `Topic` and `ConsumerGroup` objects from multi-document YAML files, with errors that
//! name the file, the object and the field.

use std::io::Read;

use serde::Deserialize;

use crate::api::{API_VERSION, ConsumerGroup, Topic};

/// Objects found in the input files.
#[derive(Default, Debug)]
pub struct Loaded {
    /// Topics, with the file they came from.
    pub topics: Vec<(String, Topic)>,
    /// Consumer groups, with the file they came from.
    pub groups: Vec<(String, ConsumerGroup)>,
}

/// A load error: one line, naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct LoadError {
    /// File name (`-` for stdin).
    pub file: String,
    /// What went wrong.
    pub message: String,
}

fn read_source(path: &str) -> Result<String, LoadError> {
    let err = |message: String| LoadError {
        file: path.to_string(),
        message,
    };
    if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| err(format!("cannot read stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))
    }
}

/// Loads every file; other kinds (Deployments in a quickstart, say) are skipped.
pub fn load_files(paths: &[String]) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    for path in paths {
        let text = read_source(path)?;
        load_text(path, &text, &mut loaded)?;
    }
    Ok(loaded)
}

/// Loads one file's text.
pub fn load_text(file: &str, text: &str, loaded: &mut Loaded) -> Result<(), LoadError> {
    let err = |message: String| LoadError {
        file: file.to_string(),
        message,
    };
    for (n, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| err(format!("document {}: malformed YAML: {e}", n + 1)))?;
        if value.is_null() {
            continue;
        }
        load_value(file, n + 1, value, loaded)?;
    }
    Ok(())
}

fn load_value(
    file: &str,
    doc: usize,
    value: serde_yaml::Value,
    loaded: &mut Loaded,
) -> Result<(), LoadError> {
    let err = |message: String| LoadError {
        file: file.to_string(),
        message,
    };
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let kind = text("kind").ok_or_else(|| {
        err(format!(
            "document {doc}: kind: missing (is this a Kubernetes object?)"
        ))
    })?;
    if kind == "List" {
        if let Some(items) = value.get("items").and_then(|i| i.as_sequence()) {
            for item in items.clone() {
                load_value(file, doc, item, loaded)?;
            }
        }
        return Ok(());
    }
    if kind != "Topic" && kind != "ConsumerGroup" {
        return Ok(());
    }
    let api_version = text("apiVersion").unwrap_or_default();
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let what = format!(
        "document {doc} ({kind} {})",
        name.as_deref().unwrap_or("<unnamed>")
    );
    if api_version != API_VERSION {
        return Err(err(format!(
            "{what}: apiVersion: {api_version:?}, expected {API_VERSION}"
        )));
    }
    if name.is_none() {
        return Err(err(format!("{what}: metadata.name: missing")));
    }
    let field_error = |e: serde_path_to_error::Error<serde_yaml::Error>| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_yaml appends a location that means nothing once we have the path.
        let inner = inner
            .split(" at line ")
            .next()
            .unwrap_or(&inner)
            .to_string();
        err(format!("{what}: {path}: {inner}"))
    };
    match kind.as_str() {
        "Topic" => {
            let topic: Topic = serde_path_to_error::deserialize(value).map_err(field_error)?;
            loaded.topics.push((file.to_string(), topic));
        }
        _ => {
            let group: ConsumerGroup =
                serde_path_to_error::deserialize(value).map_err(field_error)?;
            loaded.groups.push((file.to_string(), group));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, LoadError> {
        let mut l = Loaded::default();
        load_text("f.yaml", text, &mut l).map(|_| l)
    }

    #[test]
    fn negative_count_names_file_object_and_field() {
        let e = load(
            "apiVersion: rebalancer.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec:\n  brokers:\n  - {name: a, readQueues: -1, writeQueues: 4}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("f.yaml: document 1 (Topic orders): spec.brokers[0].readQueues: "),
            "{e}"
        );
        assert!(e.contains("-1"), "{e}");
    }

    #[test]
    fn skips_other_kinds_and_reads_lists() {
        let l = load(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\nkind: List\nitems:\n- apiVersion: rebalancer.dev/v1alpha1\n  kind: Topic\n  metadata: {name: t}\n  spec: {brokers: [{name: a, readQueues: 1, writeQueues: 1}]}\n",
        )
        .unwrap();
        assert_eq!(l.topics.len(), 1);
        assert!(l.groups.is_empty());
    }

    #[test]
    fn malformed_yaml_is_one_line() {
        let e = load("kind: [").unwrap_err().to_string();
        assert!(e.starts_with("f.yaml: document 1: malformed YAML"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn wrong_api_version_is_rejected() {
        let e = load("apiVersion: v1\nkind: Topic\nmetadata: {name: t}\nspec: {brokers: []}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiVersion"), "{e}");
    }
}
